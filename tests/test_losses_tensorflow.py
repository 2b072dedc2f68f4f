"""tfkd.losses with TensorFlow in the test itself (`tf.GradientTape`, dtypes).

Moved verbatim from tests/test_losses.py, which runs on every Keras backend
(`conftest.BACKEND_INDEPENDENT_FILES`); these need TensorFlow's tape and
tensors, so they run on TensorFlow only.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfkd import losses
from test_losses import _logits, _np_log_softmax, _np_soft


@pytest.mark.parametrize("temperature", [1.0, 4.0, 8.0])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_soft_gradient_is_the_published_form(temperature, alpha):
    """d/ds of the mean soft part = (1 − α) · T · (q_s − p_t) / batch."""
    t, s = _logits(4), _logits(5)
    batch = s.shape[0]
    s_var = tf.Variable(s)
    with tf.GradientTape() as tape:
        soft = losses.soft_target_loss(t, s_var, temperature)
        loss = (1 - alpha) * tf.reduce_sum(soft) / batch
    gradient = tape.gradient(loss, s_var).numpy()
    p_t = np.exp(_np_log_softmax(t.astype(np.float64) / temperature))
    q_s = np.exp(_np_log_softmax(s.astype(np.float64) / temperature))
    expected = (1 - alpha) * temperature * (q_s - p_t) / batch
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-7)


def test_float16_logits_are_computed_in_float32():
    t, s = _logits(8), _logits(9)
    got = losses.soft_target_loss(t.astype("float16"), s.astype("float16"), 4.0)
    assert got.dtype == tf.float32
    expected = _np_soft(t.astype("float16"), s.astype("float16"), 4.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)


def test_unlabelled_examples_have_zero_hard_loss_and_gradient():
    logits = tf.constant([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
    for labels in (np.array([2, -1]), np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = losses.hard_target_loss(labels, logits)
            total = tf.reduce_sum(loss)
        gradient = tape.gradient(total, logits).numpy()
        z = logits.numpy().astype(np.float64)
        expected = -(z[0, 2] - np.log(np.exp(z[0]).sum()))
        np.testing.assert_allclose(loss.numpy(), [expected, 0.0], rtol=1e-6)
        np.testing.assert_array_equal(gradient[1], 0.0)
    np.testing.assert_array_equal(
        losses.labelled_mask(np.array([[1], [-1], [0]]), 3).numpy(), [1, 0, 1]
    )
    np.testing.assert_array_equal(
        losses.class_ids(np.eye(3)[[1, 2]], 3).numpy(), [1, 2]
    )
