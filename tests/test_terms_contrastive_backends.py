"""CRD's memory on the current Keras backend, against NumPy (no TensorFlow).

CRD's NumPy reference tests that need no Distiller (the loss on a fixed
memory, both ways of scoring, the draw counts, the momentum update), kept
here alone: this file imports neither TensorFlow nor `tf.data`, so the
normal suite runs them on TensorFlow's sparse row ops and `make test-jax`
and `make test-torch` on the `keras.ops` path. The Distiller's CRD tests are in
tests/test_terms_contrastive.py.
"""

import keras
import numpy as np
import pytest

from tfkd.terms import contrastive
from tfkd.terms.contrastive import CRD

NUM_DATA, FEAT_DIM = 16, 4


def _np_normalize(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _np_info_nce(anchors, memory, rows, tau):
    scores = np.einsum("bkd,bd->bk", memory[rows], anchors) / tau
    scores = scores - scores.max(axis=1, keepdims=True)
    return -(scores[:, 0] - np.log(np.exp(scores).sum(axis=1)))


def _term(**kwargs):
    term = CRD("embedding", "embedding", num_data=NUM_DATA, feat_dim=FEAT_DIM,
               num_negatives=5, contrast_temperature=0.5, seed=0, **kwargs)
    term.build((None, 6), (None, 3))
    return term


def _memory(variable):
    # A copy: on PyTorch's CPU the NumPy view shares the variable's storage,
    # which the update then writes in place.
    return np.array(keras.ops.convert_to_numpy(variable.value), np.float32)


def test_loss_on_a_fixed_memory_matches_numpy():
    rng = np.random.default_rng(0)
    term = _term()
    memory_s = _np_normalize(rng.normal(size=(NUM_DATA, FEAT_DIM)))
    memory_t = _np_normalize(rng.normal(size=(NUM_DATA, FEAT_DIM)))
    term.student_memory.assign(memory_s.astype("float32"))
    term.teacher_memory.assign(memory_t.astype("float32"))
    v_t = _np_normalize(rng.normal(size=(3, FEAT_DIM)))
    v_s = _np_normalize(rng.normal(size=(3, FEAT_DIM)))
    rows = np.array([[0, 5, 7, 9], [1, 2, 3, 4], [2, 15, 0, 1]])
    got = term.loss_on_memory(v_t.astype("float32"), v_s.astype("float32"), rows)
    expected = _np_info_nce(v_t, memory_s, rows, 0.5) + _np_info_nce(v_s, memory_t, rows, 0.5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4)


@pytest.mark.parametrize("dense", [True, False], ids=["whole-memory scores", "gathered rows"])
def test_both_ways_of_scoring_give_the_numpy_loss(monkeypatch, dense):
    # A bank of at most DENSE_SCORES_MAX_ROWS_PER_SAMPLE × (1 + K) rows is
    # scored whole, a larger one gathers each example's rows: force each.
    monkeypatch.setattr(contrastive, "DENSE_SCORES_MAX_ROWS_PER_SAMPLE",
                        NUM_DATA if dense else 0)
    rng = np.random.default_rng(2)
    term = _term()
    memory_s = _np_normalize(rng.normal(size=(NUM_DATA, FEAT_DIM)))
    memory_t = _np_normalize(rng.normal(size=(NUM_DATA, FEAT_DIM)))
    term.student_memory.assign(memory_s.astype("float32"))
    term.teacher_memory.assign(memory_t.astype("float32"))
    v_t = _np_normalize(rng.normal(size=(4, FEAT_DIM)))
    v_s = _np_normalize(rng.normal(size=(4, FEAT_DIM)))
    # Repeated negatives, and a negative that is the example itself.
    rows = np.array([[3, 3, 3, 8, 1, 3], [0, 15, 15, 0, 2, 7],
                     [9, 9, 9, 9, 9, 9], [15, 14, 13, 12, 11, 10]])
    got = term.loss_on_memory(v_t.astype("float32"), v_s.astype("float32"), rows)
    expected = _np_info_nce(v_t, memory_s, rows, 0.5) + _np_info_nce(v_s, memory_t, rows, 0.5)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4)


def test_draw_counts_count_each_examples_rows():
    counts = np.asarray(contrastive.draw_counts(np.array([[1, 1, 0], [3, 2, 3]]), 5))
    np.testing.assert_array_equal(counts, [[1, 2, 0, 0, 0], [0, 0, 1, 2, 0]])


def test_a_training_call_updates_only_the_batch_rows_with_momentum():
    rng = np.random.default_rng(1)
    term = _term(momentum=0.5)
    before_s, before_t = _memory(term.student_memory), _memory(term.teacher_memory)
    t = rng.normal(size=(3, 6)).astype("float32")
    s = rng.normal(size=(3, 3)).astype("float32")
    indices = np.array([4, 0, 9])
    value = term(t, s, indices=indices, training=True)
    assert np.isfinite(float(value)) and float(value) > 0
    v_s = _np_normalize(keras.ops.convert_to_numpy(term.student_embedding(s)).astype(np.float64))
    v_t = _np_normalize(keras.ops.convert_to_numpy(term.teacher_embedding(t)).astype(np.float64))
    expected_s, expected_t = before_s.copy(), before_t.copy()
    expected_s[indices] = _np_normalize(0.5 * before_s[indices] + 0.5 * v_s)
    expected_t[indices] = _np_normalize(0.5 * before_t[indices] + 0.5 * v_t)
    np.testing.assert_allclose(_memory(term.student_memory), expected_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_memory(term.teacher_memory), expected_t, rtol=1e-5, atol=1e-6)
    frozen = _memory(term.student_memory)
    assert float(term(t, s, indices=indices, training=False)) == 0.0
    np.testing.assert_array_equal(_memory(term.student_memory), frozen)
