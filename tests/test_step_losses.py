"""tfkd.step_losses: α · hard + Σ weight · term, in keras.ops only."""

import ast
import pathlib

import numpy as np
import pytest

from tfkd import step_losses
from tfkd.step_losses import ModelOutputs
from tfkd.terms.correlation import DIST
from tfkd.terms.soft_targets import SoftTargetKL


def _np_ce(labels, logits):
    z = logits - logits.max(axis=-1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -log_q[np.arange(len(labels)), labels]


def _logits(seed, shape=(6, 4)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_the_module_imports_no_tensorflow():
    # Shared by every backend's step (JAX and PyTorch too): keras.ops only.
    source = pathlib.Path(step_losses.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert not any(name.split(".")[0] == "tensorflow" for name in imported)


def test_total_is_alpha_hard_plus_each_weighted_term():
    t, s = _logits(0), _logits(1)
    labels = np.array([0, 1, 2, 3, -1, 1])
    kl = SoftTargetKL(temperature=2.0, weight=0.6)
    dist = DIST(weight=2.0)
    values = step_losses.compute_losses(
        [kl, dist], 0.4, {None: (ModelOutputs(t, {}), ModelOutputs(s, {}))}, labels
    )
    labelled = labels >= 0
    hard = _np_ce(labels[labelled], s[labelled].astype(np.float64)).sum() / 5
    np.testing.assert_allclose(float(values.hard), hard, rtol=1e-5)
    assert float(values.labelled) == 5.0
    assert list(values.terms) == ["distillation_loss", "dist_loss"]
    assert values.soft is values.terms["distillation_loss"]
    np.testing.assert_allclose(float(values.terms["distillation_loss"]),
                               float(kl(t, s)), rtol=1e-6)
    np.testing.assert_allclose(
        float(values.total),
        0.4 * hard + 0.6 * float(kl(t, s)) + 2.0 * float(dist(t, s)),
        rtol=1e-5,
    )


def test_without_labels_only_the_terms_count():
    t, s = _logits(2), _logits(3)
    kl = SoftTargetKL(weight=0.9)
    values = step_losses.compute_losses(
        [kl], 0.1, {None: (ModelOutputs(t, {}), ModelOutputs(s, {}))}, None
    )
    assert values.hard is None and float(values.labelled) == 0.0
    np.testing.assert_allclose(float(values.total), 0.9 * float(kl(t, s)), rtol=1e-6)


def test_without_a_teacher_signal_only_the_hard_loss_counts():
    s = _logits(4)
    labels = np.array([0, 1, 2, 3, 0, 1])
    values = step_losses.compute_losses(
        [SoftTargetKL()], 0.1, {None: (ModelOutputs(None, {}), ModelOutputs(s, {}))},
        labels,
    )
    assert values.terms == {} and values.soft is None
    np.testing.assert_allclose(float(values.total), float(values.hard))
    np.testing.assert_allclose(
        float(values.hard), _np_ce(labels, s.astype(np.float64)).mean(), rtol=1e-5
    )


def test_neither_labels_nor_teacher_is_an_error():
    s = _logits(5)
    with pytest.raises(ValueError, match="Expected labels or a teacher signal"):
        step_losses.compute_losses(
            [], 0.1, {None: (ModelOutputs(None, {}), ModelOutputs(s, {}))}, None
        )


def test_each_term_reads_the_outputs_of_its_view():
    t, s = _logits(6), _logits(7)
    strong_t, strong_s = _logits(8), _logits(9)
    on_batch = SoftTargetKL(weight=1.0)
    on_strong = SoftTargetKL(weight=1.0, view="strong", name="strong_kl")
    outputs = {
        None: (ModelOutputs(t, {}), ModelOutputs(s, {})),
        "strong": (ModelOutputs(strong_t, {}), ModelOutputs(strong_s, {})),
    }
    values = step_losses.compute_losses([on_batch, on_strong], 0.0, outputs, None)
    np.testing.assert_allclose(float(values.terms["distillation_loss"]),
                               float(on_batch(t, s)), rtol=1e-6)
    np.testing.assert_allclose(float(values.terms["strong_kl"]),
                               float(on_batch(strong_t, strong_s)), rtol=1e-6)


def test_terms_get_the_step_values_they_ask_for():
    t, s = _logits(10), _logits(11)
    kl = SoftTargetKL(logit_standardization=True)
    pair = {None: (ModelOutputs(t, {}), ModelOutputs(s, {}))}
    as_mixture = step_losses.compute_losses(
        [kl], 0.0, pair, None, step_values={"teacher_is_mixture": True}
    )
    np.testing.assert_allclose(float(as_mixture.total),
                               float(kl(t, s, teacher_is_mixture=True)), rtol=1e-6)
    plain = step_losses.compute_losses([kl], 0.0, pair, None)
    np.testing.assert_allclose(float(plain.total), float(kl(t, s)), rtol=1e-6)
