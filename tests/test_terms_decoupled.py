"""Decoupled KD against a NumPy reference written like the authors' code."""

import keras
import numpy as np
import pytest

import tfkd
from conftest import value_and_gradient
from tfkd import losses
from tfkd.terms import decoupled
from tfkd.terms.decoupled import DecoupledKD


def _np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _np_dkd(labels, s, t, temperature, alpha, beta):
    """Probabilities and masks in float64, as in github.com/megvii-research/mdistiller."""
    s, t = s.astype(np.float64) / temperature, t.astype(np.float64) / temperature
    gt = np.eye(s.shape[1])[labels]
    p_s, p_t = _np_softmax(s), _np_softmax(t)
    b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], axis=1)
    b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], axis=1)
    tckd = (b_t * (np.log(b_t) - np.log(b_s))).sum(1)
    q_t = _np_softmax(t - 1000.0 * gt)
    q_s = _np_softmax(s - 1000.0 * gt)
    rest = gt == 0
    nckd = np.where(rest, q_t * (np.log(np.where(rest, q_t, 1)) - np.log(np.where(rest, q_s, 1))), 0).sum(1)
    return temperature**2 * (alpha * tckd + beta * nckd), tckd, nckd


def _logits(seed, shape=(6, 5), scale=2.0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * scale


LABELS = np.array([0, 1, 2, 3, 4, 2])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("alpha, beta", [(1.0, 8.0), (0.5, 0.0), (0.0, 2.0)])
def test_dkd_matches_numpy(temperature, alpha, beta):
    s, t = _logits(0), _logits(1)
    expected, _, _ = _np_dkd(LABELS, s, t, temperature, alpha, beta)
    got = decoupled.decoupled_kd_loss(LABELS, s, t, temperature, alpha, beta)
    # atol: a KL near 0 is a float32 difference of two O(1) log-probabilities.
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=5e-6)


def test_classical_kd_is_tckd_plus_weighted_nckd():
    """Zhao et al. (2022), eq. 1: KD = TCKD + (1 − p_t^T) · NCKD."""
    s, t, temperature = _logits(2), _logits(3), 3.0
    tckd = decoupled.decoupled_kd_loss(LABELS, s, t, temperature, 1.0, 0.0)
    nckd = decoupled.decoupled_kd_loss(LABELS, s, t, temperature, 0.0, 1.0)
    p_target = _np_softmax(t.astype(np.float64) / temperature)[np.arange(6), LABELS]
    kd = losses.soft_target_loss(t, s, temperature)
    np.testing.assert_allclose(
        np.asarray(kd), np.asarray(tckd) + (1 - p_target) * np.asarray(nckd), rtol=1e-5
    )


def test_unlabelled_examples_take_the_teacher_top_class_as_target():
    s, t = _logits(6), _logits(7)
    labels = LABELS.copy()
    labels[[1, 4]] = -1  # unlabelled
    stand_in = np.where(labels < 0, t.argmax(axis=-1), labels)
    expected, _, _ = _np_dkd(stand_in, s, t, 4.0, 1.0, 8.0)
    sparse = decoupled.decoupled_kd_loss(labels, s, t, 4.0, 1.0, 8.0)
    np.testing.assert_allclose(np.asarray(sparse), expected, rtol=1e-5, atol=5e-6)
    one_hot = np.eye(5, dtype="float32")[np.maximum(labels, 0)] * (labels >= 0)[:, None]
    np.testing.assert_allclose(
        np.asarray(decoupled.decoupled_kd_loss(one_hot, s, t, 4.0, 1.0, 8.0)), expected,
        rtol=1e-5, atol=5e-6)
    assert (expected >= 0).all()


def test_one_hot_and_column_labels_give_the_same_loss():
    s, t = _logits(4), _logits(5)
    sparse = decoupled.decoupled_kd_loss(LABELS, s, t)
    one_hot = decoupled.decoupled_kd_loss(np.eye(5, dtype="float32")[LABELS], s, t)
    column = decoupled.decoupled_kd_loss(LABELS[:, None], s, t)
    np.testing.assert_allclose(np.asarray(one_hot), np.asarray(sparse), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(column), np.asarray(sparse), rtol=1e-6)


def test_confident_teacher_gives_finite_loss_and_gradients_on_every_backend():
    t = np.array([[60.0, -60.0, 0.0]], "float32")
    loss, gradient = value_and_gradient(
        lambda s: decoupled.decoupled_kd_loss(np.array([0]), s, t, 1.0),
        np.array([[0.0, 5.0, -5.0]], "float32"),
    )
    assert np.isfinite(loss).all()
    assert np.isfinite(gradient).all()


def _mlp(name, hidden, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(4)],
        name=name,
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, x[:, :4].argmax(axis=-1).astype("int32")


def test_distiller_with_alpha_one_trains_on_ce_plus_dkd():
    x, y = _data()
    dkd = DecoupledKD(temperature=2.0, target_weight=1.0, non_target_weight=8.0)
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 16, 0), student=_mlp("student", 8, 1),
        alpha=1.0, extra_losses=[dkd],
    )
    distiller.compile(optimizer="adam")
    results = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    s, t = distiller.student(x), distiller.teacher(x)
    expected_dkd = _np_dkd(y, keras.ops.convert_to_numpy(s), keras.ops.convert_to_numpy(t), 2.0, 1.0, 8.0)[0].mean()
    np.testing.assert_allclose(results["dkd_loss"], expected_dkd, rtol=1e-5)
    # The KL term has weight 1 − α = 0: the loss is CE + DKD.
    np.testing.assert_allclose(
        results["loss"], results["student_loss"] + results["dkd_loss"], rtol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"temperature": 0}, ValueError, r"`temperature`. Expected a float in \[0.01, 100\]"),
        ({"target_weight": -1.0}, ValueError, r"`target_weight`. Expected a float in \[0, 1e\+06\].* Received: target_weight=-1.0"),
        ({"non_target_weight": "8"}, TypeError, r"`non_target_weight`"),
        ({"weight": float("inf")}, ValueError, r"`weight`"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        DecoupledKD(**kwargs)


def test_dkd_needs_logits_of_one_shape():
    with pytest.raises(ValueError, match="logits of one shape"):
        DecoupledKD().build((None, 5), (None, 4))


def test_logit_standardization_option_matches_numpy():
    """Sun et al. (2024) on DKD: z-score both logits (ddof=1, eps=1e-7)."""
    def standardize(z):
        z = z.astype(np.float64)
        return (z - z.mean(-1, keepdims=True)) / (z.std(-1, ddof=1, keepdims=True) + 1e-7)

    s, t = _logits(6), _logits(7)
    term = DecoupledKD(temperature=2.0, logit_standardization=True)
    expected, _, _ = _np_dkd(LABELS, standardize(s), standardize(t), 2.0, 1.0, 8.0)
    got = term(t, s, labels=LABELS)
    np.testing.assert_allclose(float(got), expected.mean(), rtol=1e-4)
    assert DecoupledKD.from_config(term.get_config()).logit_standardization is True
    with pytest.raises(TypeError, match="logit_standardization"):
        DecoupledKD(logit_standardization="yes")
