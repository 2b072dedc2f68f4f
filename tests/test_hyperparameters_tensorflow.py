"""Hyper-parameter extremes with TensorFlow in the test (`tf.GradientTape`).

Moved verbatim from tests/test_hyperparameters.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`).
"""

import numpy as np
import tensorflow as tf

import tfkd
from tfkd import hyperparameters
from tfkd import losses
from tfkd.terms import correlation
from tfkd.terms import decoupled
from tfkd.terms import transformed


def test_the_accepted_extremes_give_finite_losses_and_gradients():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(64, 10)).astype("float32") * 30.0
    student = tf.Variable(rng.normal(size=(64, 10)).astype("float32") * 30.0)
    labels = np.arange(64) % 10
    for temperature in (hyperparameters.MIN_TEMPERATURE, hyperparameters.MAX_TEMPERATURE):
        with tf.GradientTape() as tape:
            values = [
                tf.reduce_mean(losses.soft_target_loss(teacher, student, temperature)),
                tf.reduce_mean(decoupled.decoupled_kd_loss(
                    labels, student, teacher, temperature, 1e6, 1e6)),
                correlation.dist_loss(teacher, student, temperature, 1e6, 1e6),
                1e6 * tf.reduce_mean(transformed.wttm_per_example(teacher, student, temperature)),
            ]
            total = tf.add_n(values)
        gradient = tape.gradient(total, student)
        assert np.isfinite(total.numpy()), temperature
        assert np.all(np.isfinite(gradient.numpy())), temperature


def test_attention_exponent_range_keeps_gradients_finite():
    features = tf.Variable(np.maximum(
        np.random.default_rng(0).normal(size=(2, 4, 4, 3)) * 1e3, 0.0
    ).astype("float32"))  # ReLU-like: exact zeros, large values
    for p in hyperparameters.ATTENTION_EXPONENT_RANGE:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                tfkd.terms.features.attention_transfer_loss(
                    features * 0.5, features, p
                )
            )
        assert np.all(np.isfinite(tape.gradient(loss, features).numpy())), p
