"""The Distiller under tf.distribute.MirroredStrategy on two logical CPUs."""

import keras
import numpy as np
import tensorflow as tf

import tfkd
import conftest


def _two_replica_strategy():
    return conftest.two_replica_strategy()


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    return x, x[:, :4].argmax(axis=-1).astype("int32")


def _model(name, hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(4),
        ],
        name=name,
    )


def _train(strategy):
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with strategy.scope():
        teacher = _model("teacher", 16, seed=0)
        student = _model("student", 8, seed=1)
        distiller = tfkd.Distiller(
            teacher=teacher, student=student, temperature=3.0, alpha=0.3
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    history = distiller.fit(dataset, epochs=2, verbose=0)
    return history.history, distiller.student.get_weights()


def test_two_replicas_match_one_device():
    strategy = _two_replica_strategy()
    assert strategy.num_replicas_in_sync == 2
    single_history, single_weights = _train(tf.distribute.get_strategy())
    mirrored_history, mirrored_weights = _train(strategy)
    for name in ("loss", "student_loss", "distillation_loss"):
        np.testing.assert_allclose(
            mirrored_history[name], single_history[name], rtol=1e-5, err_msg=name
        )
    # A loss not divided by the replica count would double every step.
    for a, b in zip(mirrored_weights, single_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
