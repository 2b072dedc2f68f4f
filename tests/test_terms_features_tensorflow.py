"""Feature terms under `tf.distribute` (two replicas equal one device).

Moved verbatim from tests/test_terms_features.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`); `MirroredStrategy` and
`tf.data` are TensorFlow's own.
"""

import keras
import numpy as np
import tensorflow as tf

import conftest
import tfkd
from tfkd.terms.features import FitNetHint


def _mlp(name, hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(4, name="logits"),
        ],
        name=name,
    )


def _train_with_hint(strategy):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = x[:, :4].argmax(axis=-1).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with strategy.scope():
        hint = FitNetHint(teacher_layer="hidden", student_layer="hidden", weight=2.0)
        distiller = tfkd.Distiller(
            teacher=_mlp("teacher", 16, 0),
            student=_mlp("student", 8, 1),
            temperature=3.0,
            alpha=0.3,
            extra_losses=[hint],
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.2))
    history = distiller.fit(dataset, epochs=2, verbose=0)
    return history.history, distiller.student.get_weights() + hint.get_weights()


def test_two_replicas_match_one_device_with_a_connector():
    strategy = conftest.two_replica_strategy()
    single_history, single_weights = _train_with_hint(tf.distribute.get_strategy())
    mirrored_history, mirrored_weights = _train_with_hint(strategy)
    for name in ("loss", "fitnet_loss", "distillation_loss"):
        np.testing.assert_allclose(
            mirrored_history[name], single_history[name], rtol=1e-5, err_msg=name
        )
    # A hint term not divided by the replica count would double its gradient.
    for a, b in zip(mirrored_weights, single_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
