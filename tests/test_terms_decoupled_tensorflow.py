"""DecoupledKD with TensorFlow in the test: a `tf.GradientTape`, `tf.data`.

Moved verbatim from tests/test_terms_decoupled.py, which runs on every Keras
backend (`conftest.BACKEND_INDEPENDENT_FILES`).
"""

import numpy as np
import tensorflow as tf

import tfkd
from tfkd.terms import decoupled
from tfkd.terms.decoupled import DecoupledKD
from test_terms_decoupled import _data, _mlp


def test_confident_teacher_gives_finite_loss_and_gradients():
    t = np.array([[60.0, -60.0, 0.0]], "float32")
    s = tf.Variable([[0.0, 5.0, -5.0]])
    with tf.GradientTape() as tape:
        loss = decoupled.decoupled_kd_loss(np.array([0]), s, t, 1.0)
    assert np.isfinite(loss.numpy()).all()
    assert np.isfinite(tape.gradient(loss, s).numpy()).all()


def test_dkd_works_from_cached_teacher_logits_without_a_teacher():
    x, y = _data()
    teacher = _mlp("teacher", 16, 0)
    logits = teacher.predict(x, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, tfkd.attach_teacher_logits(y, logits))
    ).batch(32)
    distiller = tfkd.Distiller(
        teacher=None, student=_mlp("student", 8, 1), alpha=1.0, extra_losses=[DecoupledKD()]
    )
    distiller.compile(optimizer="adam")
    history = distiller.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["dkd_loss"][0])
