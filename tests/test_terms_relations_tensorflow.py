"""RKD with TensorFlow in the test (`tf.GradientTape`).

Moved verbatim from tests/test_terms_relations.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`).
"""

import numpy as np
import tensorflow as tf

from tfkd.terms import relations as relation_losses
from test_terms_relations import _embeddings


def test_gradients_stay_finite_with_duplicate_examples():
    t = _embeddings(3, (5, 4))
    s = tf.Variable(np.concatenate([_embeddings(4, (4, 3)), _embeddings(4, (1, 3))]))
    with tf.GradientTape() as tape:
        loss = relation_losses.rkd_distance_loss(t, s) + relation_losses.rkd_angle_loss(t, s)
    gradient = tape.gradient(loss, s)
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(gradient.numpy()))
