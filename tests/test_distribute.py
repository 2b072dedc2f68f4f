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


def _train_on(strategy, labels, mixing=None, x=None, build=_model):
    x = _data()[0] if x is None else x
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(32)
    with strategy.scope():
        teacher = build("teacher", 16, seed=0)
        student = build("student", 8, seed=1)
        distiller = tfkd.Distiller(
            teacher=teacher, student=student, temperature=3.0, alpha=0.3,
            mixing=mixing() if mixing else None,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.5), metrics=["accuracy"])
    history = distiller.fit(dataset, epochs=2, verbose=0)
    return history.history, distiller.student.get_weights()


def test_unlabelled_examples_under_two_replicas_match_one_device():
    _, y = _data()
    labels = y.copy()
    labels[::4] = -1  # each replica's 16-example shard holds 4 of them
    strategy = _two_replica_strategy()
    single_history, single_weights = _train_on(tf.distribute.get_strategy(), labels)
    mirrored_history, mirrored_weights = _train_on(strategy, labels)
    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        np.testing.assert_allclose(
            mirrored_history[name], single_history[name], rtol=1e-5, err_msg=name
        )
    for a, b in zip(mirrored_weights, single_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_replica_without_labelled_examples_stays_finite():
    _, y = _data()
    labels = np.where(np.arange(len(y)) % 32 < 16, -1, y).astype("int32")
    history, weights = _train_on(_two_replica_strategy(), labels)
    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert np.all(np.isfinite(history[name])), name
    assert all(np.all(np.isfinite(w)) for w in weights)


def _image_model(name, hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(),
         keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(4)],
        name=name,
    )


def test_mixing_trains_under_two_replicas():
    rng = np.random.default_rng(0)
    x = rng.random((128, 4, 4, 1)).astype("float32")
    labels = rng.integers(-1, 4, size=128).astype("int32")
    history, weights = _train_on(
        _two_replica_strategy(), labels, x=x, build=_image_model,
        mixing=lambda: keras.layers.MixUp(alpha=1.0, seed=0),
    )
    for name in ("loss", "student_loss", "distillation_loss", "accuracy"):
        assert np.all(np.isfinite(history[name])), name
