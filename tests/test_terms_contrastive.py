"""CRD in a Distiller: the memory cap, fit with indices, refused batches, XLA.

Its NumPy float64 reference tests (the loss on a fixed memory, both ways of
scoring, the draw counts, the momentum update) are in
tests/test_terms_contrastive_backends.py, which runs on every backend.
"""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import memory_limit
from tfkd.terms import contrastive
from tfkd.terms.contrastive import CRD

NUM_DATA, FEAT_DIM = 16, 4


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


@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="XLA is TensorFlow's and JAX's; on PyTorch the Distiller refuses "
                           "jit_compile=True (torch.compile), see tests/test_torch_step.py")
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
