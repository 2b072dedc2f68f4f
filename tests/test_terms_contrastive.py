"""CRD: its loss on a fixed memory against NumPy float64, memory and indices."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import memory_limit
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


def test_a_training_call_updates_only_the_batch_rows_with_momentum():
    rng = np.random.default_rng(1)
    term = _term(momentum=0.5)
    before_s = term.student_memory.numpy().copy()
    before_t = term.teacher_memory.numpy().copy()
    t, s = rng.normal(size=(3, 6)).astype("float32"), rng.normal(size=(3, 3)).astype("float32")
    indices = np.array([4, 0, 9])
    value = term(t, s, indices=indices, training=True)
    assert np.isfinite(float(value)) and float(value) > 0
    v_s = _np_normalize(np.asarray(term.student_embedding(s), np.float64))
    v_t = _np_normalize(np.asarray(term.teacher_embedding(t), np.float64))
    expected_s, expected_t = before_s.copy(), before_t.copy()
    expected_s[indices] = _np_normalize(0.5 * before_s[indices] + 0.5 * v_s)
    expected_t[indices] = _np_normalize(0.5 * before_t[indices] + 0.5 * v_t)
    np.testing.assert_allclose(term.student_memory.numpy(), expected_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(term.teacher_memory.numpy(), expected_t, rtol=1e-5, atol=1e-6)
    # Evaluation neither reports a loss nor touches the memory.
    frozen = term.student_memory.numpy().copy()
    assert float(term(t, s, indices=indices, training=False)) == 0.0
    np.testing.assert_array_equal(term.student_memory.numpy(), frozen)


def test_memory_size_is_capped_before_anything_is_allocated():
    assert contrastive.memory_megabytes(50_000, 128) == pytest.approx(51.2)
    with pytest.raises(ValueError, match="`num_data`.*memory limit of 1024 MB"):
        CRD(num_data=10_000_000, feat_dim=128)  # 10.24 GB > 1024 MB
    # max_memory_mb only lowers the process-wide cap (tfkd.memory_limit),
    # which code (or TFKD_MAX_MEMORY_MB) can raise: allowed, not built.
    with pytest.raises(ValueError, match="memory limit of 1024 MB"):
        CRD(num_data=10_000_000, feat_dim=128, max_memory_mb=20_000.0)
    memory_limit.set_max_memory_mb(20_000.0)
    try:
        CRD(num_data=10_000_000, feat_dim=128, max_memory_mb=20_000.0)
    finally:
        memory_limit.set_max_memory_mb(None)
    with pytest.raises(TypeError, match="num_data"):
        CRD()
    with pytest.raises(ValueError, match="momentum"):
        CRD(num_data=8, momentum=1.0)


def _mlp(name, seed, width):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, name="embedding"),
         keras.layers.Dense(3, name="logits")], name=name)


def _distiller(term):
    distiller = tfkd.Distiller(teacher=_mlp("teacher", 0, 8), student=_mlp("student", 1, 5),
                               extra_losses=[term])
    distiller.compile(optimizer="sgd")
    return distiller


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(NUM_DATA, 6)).astype("float32"), np.arange(NUM_DATA) % 3


def test_fit_with_indices_trains_and_round_trips(tmp_path):
    x, y = _data()
    term = CRD("embedding", "embedding", num_data=NUM_DATA, feat_dim=FEAT_DIM,
               num_negatives=8, seed=0)
    distiller = _distiller(term)
    before = term.student_memory.numpy().copy()
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, {"labels": y, "index": np.arange(NUM_DATA)})).batch(8)
    history = distiller.fit(dataset, epochs=1, verbose=0)
    assert history.history["crd_loss"][0] > 0
    assert not np.allclose(term.student_memory.numpy(), before)
    # The embeddings train with the student but are not part of it.
    assert len(term.trainable_weights) == 4
    assert len(distiller.student.trainable_weights) == 4
    path = tmp_path / "crd.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    [copy] = loaded.extra_losses
    assert copy.get_config() == term.get_config()
    np.testing.assert_array_equal(copy.student_memory.numpy(), term.student_memory.numpy())
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["crd_loss"] == 0.0


@pytest.mark.parametrize(
    "targets, match",
    [(lambda y: y, "'index'"),
     (lambda y: {"labels": y, "index": np.arange(NUM_DATA) + 1}, r"\[0, 16\)")],
)
def test_training_batches_without_valid_indices_are_refused(targets, match):
    x, y = _data()
    distiller = _distiller(CRD("embedding", "embedding", num_data=NUM_DATA, feat_dim=FEAT_DIM))
    with pytest.raises(ValueError, match=match):
        distiller.fit(x, targets(y), epochs=1, verbose=0)


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


@pytest.mark.parametrize("dense", [True, False], ids=["whole-memory scores", "gathered rows"])
def test_crd_trains_in_an_xla_compiled_step(monkeypatch, dense):
    # The draw counts' size must be known when XLA compiles the step.
    monkeypatch.setattr(contrastive, "DENSE_SCORES_MAX_ROWS_PER_SAMPLE",
                        NUM_DATA if dense else 0)
    x, y = _data()
    term = CRD("embedding", "embedding", num_data=NUM_DATA, feat_dim=FEAT_DIM,
               num_negatives=8, seed=0)
    distiller = tfkd.Distiller(teacher=_mlp("teacher", 0, 8), student=_mlp("student", 1, 5),
                               extra_losses=[term])
    distiller.compile(optimizer="sgd", jit_compile=True)
    history = distiller.fit(x, {"labels": y, "index": np.arange(NUM_DATA)}, batch_size=8,
                            epochs=1, verbose=0)
    assert np.isfinite(history.history["crd_loss"][0]) and history.history["crd_loss"][0] > 0
