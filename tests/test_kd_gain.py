"""Distillation must beat training from scratch where it should.

Low-data regime (Hinton et al., 2015, section 3 show the effect with 3 % of
the data): the student sees 300 labelled Fashion-MNIST images; the teacher
was trained on 10,000 others. Measured while writing this test (3 seeds,
2,000 test images): scratch 76.6-77.2 %, distilled 77.9-78.6 %, gain +1.3
to +1.9 points on every seed. The test asks for a positive gain on every
seed and a mean gain of at least 0.5 points.
"""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import data

SEEDS = (0, 1, 2)
STUDENT_EXAMPLES = 300
EPOCHS = 30


def _mlp(hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


@pytest.fixture(scope="module")
def task(fashion_mnist):
    (x_train, y_train), (x_test, y_test) = fashion_mnist
    x_train = x_train.reshape(-1, 784).astype("float32") / 255.0
    x_test = x_test.reshape(-1, 784).astype("float32") / 255.0
    teacher = _mlp(256, seed=0)
    teacher.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x_train[:10_000], y_train[:10_000], epochs=5, batch_size=128, verbose=0)
    return teacher, (x_train, y_train), (x_test[:2000], y_test[:2000])


def test_distilled_student_beats_scratch_in_the_low_data_regime(task):
    teacher, (x_train, y_train), (x_test, y_test) = task
    gains = []
    for seed in SEEDS:
        # Student images come from a part of the training set the teacher
        # never saw.
        chosen = 20_000 + data.balanced_subset(y_train[20_000:], STUDENT_EXAMPLES, seed)
        x, y = x_train[chosen], y_train[chosen]

        scratch = _mlp(32, seed)
        scratch.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        scratch.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
        scratch_accuracy = scratch.evaluate(x_test, y_test, verbose=0)[1]

        distiller = tfkd.Distiller(
            teacher=teacher, student=_mlp(32, seed), temperature=4.0, alpha=0.1
        )
        distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        distiller.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0)
        distilled_accuracy = distiller.evaluate(
            x_test, y_test, verbose=0, return_dict=True
        )["accuracy"]
        gains.append(distilled_accuracy - scratch_accuracy)
    assert min(gains) > 0.0, gains
    assert np.mean(gains) >= 0.005, gains
