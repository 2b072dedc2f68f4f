"""Pre-flight checks of `tf.data` pipelines.

Moved verbatim from tests/test_preflight.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`) and checks a
`keras.utils.PyDataset`'s first batch the same way.
"""


import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import preflight
from test_preflight import (
    CLASSES,
    FEATURES,
    make_data,
    make_distiller,
    make_student,
    oracle_teacher,
)


def cached_dataset(x, labels, logits, batch_sizes=(16, 16, 16)):
    """`(x, {"labels", "teacher_logits"})` batches, each part batched alone."""
    part = tf.data.Dataset.from_tensor_slices
    return tf.data.Dataset.zip(
        (
            part(x).batch(batch_sizes[0]),
            {
                "labels": part(labels).batch(batch_sizes[1]),
                "teacher_logits": part(logits).batch(batch_sizes[2]),
            },
        )
    )


def test_inf_inputs_in_a_dataset():
    x, y = make_data()
    x[0, 0] = np.inf
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(ValueError, match=r"1 NaN/inf value\(s\)"):
        make_distiller().fit(dataset, epochs=1, verbose=0)


def test_non_finite_cached_logits():
    x, y = make_data(n=32)
    logits = np.zeros((32, CLASSES), "float32")
    logits[2, 0] = np.nan
    dataset = cached_dataset(x, y, logits)
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="Invalid teacher outputs"):
        distiller.fit(dataset, epochs=1, verbose=0)


def test_cached_logits_with_another_class_count():
    x, y = make_data(n=32)
    logits = np.zeros((32, CLASSES + 1), "float32")
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="teacher predicts 4 classes"):
        distiller.fit(cached_dataset(x, y, logits), epochs=1, verbose=0)


def test_cached_logits_of_another_batch_size():
    x, y = make_data(n=48)
    logits = np.zeros((48, CLASSES), "float32")
    dataset = cached_dataset(x, y, logits, batch_sizes=(16, 16, 12))
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError) as error:
        distiller.fit(dataset, epochs=1, verbose=0)
    assert "inputs=16, labels=16, teacher_logits=12" in str(error.value)


def test_cached_probabilities_are_refused():
    x, y = make_data(n=32)
    probabilities = keras.ops.convert_to_numpy(
        keras.ops.softmax(oracle_teacher()(x))
    )
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="probabilities_to_logits"):
        distiller.fit(cached_dataset(x, y, probabilities), epochs=1, verbose=0)


def test_cached_log_probabilities_train():
    x, y = make_data(n=32)
    log_probabilities = keras.ops.convert_to_numpy(
        keras.ops.log_softmax(oracle_teacher()(x))
    )
    distiller = tfkd.Distiller(student=make_student())
    distiller.compile(optimizer="sgd")
    history = distiller.fit(
        cached_dataset(x, y, log_probabilities), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["distillation_loss"][0])


def test_augmentation_with_cached_logits():
    x, y = make_data(n=32)
    distiller = tfkd.Distiller(
        student=make_student(), augmentation=keras.layers.GaussianNoise(0.1)
    )
    distiller.compile(optimizer="sgd")
    logits = np.zeros((32, CLASSES), "float32")
    with pytest.raises(ValueError, match="argument `augmentation`"):
        distiller.fit(cached_dataset(x, y, logits), epochs=1, verbose=0)


def test_empty_dataset():
    x, y = make_data()
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(8)
    with pytest.raises(ValueError, match="at least one batch"):
        make_distiller().fit(empty, epochs=1, verbose=0)


def test_teacher_near_chance_on_validation_dataset_warns():
    # Batches of 8: the check reads batches until it has 64 examples.
    x, y = make_data()
    validation = tf.data.Dataset.from_tensor_slices(
        (x, (y + 1) % CLASSES)
    ).batch(8)
    with pytest.warns(preflight.DistillationWarning, match="near chance"):
        preflight.check_first_batch(
            make_distiller(), x, y, validation_data=validation
        )


def test_teacher_near_chance_with_cached_validation_logits_warns():
    x, y = make_data(n=64)
    logits = keras.ops.convert_to_numpy(oracle_teacher()(x))
    train = cached_dataset(x, y, logits)
    validation = cached_dataset(x, (y + 1) % CLASSES, logits)
    distiller = tfkd.Distiller(student=make_student())
    with pytest.warns(preflight.DistillationWarning, match="near chance"):
        preflight.check_first_batch(
            distiller, train, validation_data=validation
        )


def test_first_batch_returns_a_head_of_the_batch():
    x, y = make_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(80)
    inputs, labels, weights = preflight.first_batch(dataset)
    assert inputs.shape == (preflight.PREFLIGHT_EXAMPLES, FEATURES)
    assert labels.shape == (preflight.PREFLIGHT_EXAMPLES,)
    assert weights is None
    assert preflight.first_batch(iter([(x, y)])) is None  # not peekable


def test_mixing_is_refused_on_cached_logits():
    x, y = make_data()
    distiller = tfkd.Distiller(
        teacher=None, student=make_student(), mixing=keras.layers.MixUp()
    )
    targets = tfkd.attach_teacher_logits(y, np.zeros((len(x), CLASSES), "float32"))
    dataset = tf.data.Dataset.from_tensor_slices((x, targets)).batch(32)
    with pytest.raises(ValueError, match="`mixing`.*teacher's outputs on the original images.*Beyer"):
        preflight.check_first_batch(distiller, dataset)
