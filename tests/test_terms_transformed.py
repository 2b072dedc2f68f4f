"""WTTM against a NumPy float64 reference written like the authors' code."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.terms import transformed
from tfkd.terms.transformed import WTTM


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_wttm(t, s, temperature, weights=None):
    """github.com/zkxufo/TTM, distillers/WTTM.py, with l = 1 / T:

    p_s = log_softmax(y_s); p_t = softmax(y_t) ** l; norm = p_t.sum(1);
    p_t = p_t / norm; KL = kl_div(p_s, p_t, reduction='none').sum(1);
    loss = mean(norm * KL).
    """
    log_p_s = _np_log_softmax(s.astype(np.float64))
    p_t = np.exp(_np_log_softmax(t.astype(np.float64))) ** (1.0 / temperature)
    norm = p_t.sum(axis=1)
    p_t = p_t / norm[:, None]
    kl = (p_t * (np.log(p_t) - log_p_s)).sum(axis=1)  # torch's kl_div(input, target)
    per_example = norm * kl
    if weights is not None:
        per_example = per_example * weights
    return per_example.mean()


def _logits(seed, shape=(8, 5), scale=2.0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * scale


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_wttm_matches_numpy(temperature):
    t, s = _logits(0), _logits(1)
    got = WTTM(temperature=temperature)(t, s)
    np.testing.assert_allclose(float(got), _np_wttm(t, s, temperature), rtol=1e-5)


def test_each_example_is_weighted_by_its_power_sum():
    t, s = _logits(2), _logits(3)
    per_example = np.asarray(transformed.wttm_per_example(t, s, 4.0))
    power_sum = (np.exp(_np_log_softmax(t.astype(np.float64))) ** 0.25).sum(axis=1)
    for i in range(len(t)):
        kl_alone = _np_wttm(t[i:i + 1], s[i:i + 1], 4.0) / power_sum[i]
        np.testing.assert_allclose(per_example[i], power_sum[i] * kl_alone, rtol=1e-5)
    # A confident teacher row has a small power sum, a flat one the largest.
    flat = np.zeros((1, 5), "float32")
    sharp = np.array([[20.0, 0, 0, 0, 0]], "float32")
    assert float(transformed.wttm_per_example(flat, flat + 1, 4.0)[0]) < 1e-6
    np.testing.assert_allclose(
        (np.exp(_np_log_softmax(flat.astype(np.float64))) ** 0.25).sum(), 5 ** 0.75)
    assert float(transformed.wttm_per_example(sharp, flat, 4.0)[0]) > 0


def test_extreme_teacher_logits_stay_finite():
    # softmax underflows to 0 for the other classes; the power and the KL
    # are computed in log space, so no 0 ** γ or log 0 appears.
    t = np.array([[200.0, -200.0, 0.0]], "float32")
    s = np.array([[0.0, 1.0, 2.0]], "float32")
    value = float(WTTM(temperature=4.0)(t, s))
    assert np.isfinite(value)
    np.testing.assert_allclose(value, _np_wttm(t, s, 4.0), rtol=1e-4)


def test_sample_weight_zero_drops_an_example():
    t, s = _logits(4), _logits(5)
    weights = np.ones(8, "float32")
    weights[-1] = 0.0
    got = WTTM(temperature=2.0)(t, s, sample_weight=weights)
    np.testing.assert_allclose(float(got), _np_wttm(t, s, 2.0, weights), rtol=1e-5)


def _dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])


def test_reported_value_and_cached_logits_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 5
    teacher, student = _dense(0), _dense(1)
    distiller = tfkd.Distiller(teacher=teacher, student=student, alpha=1.0,
                               extra_losses=[WTTM(temperature=4.0, weight=2.0)])
    distiller.compile(optimizer="sgd")
    results = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = _np_wttm(keras.ops.convert_to_numpy(teacher(x)), keras.ops.convert_to_numpy(student(x)), 4.0)
    np.testing.assert_allclose(results["wttm_loss"], expected, rtol=1e-4)
    # CE + β · WTTM: alpha=1 leaves the built-in KL with no weight.
    np.testing.assert_allclose(results["loss"], results["student_loss"] + 2.0 * expected,
                               rtol=1e-4)
    # From cached logits, with no teacher model: the same value.
    cached = tfkd.Distiller(teacher=None, student=_dense(1), alpha=1.0,
                            extra_losses=[WTTM(temperature=4.0, weight=2.0)])
    cached.compile(optimizer="sgd")
    from_cache = cached.evaluate(x, {"labels": y, "teacher_logits": keras.ops.convert_to_numpy(teacher(x))},
                                 batch_size=16, verbose=0, return_dict=True)
    np.testing.assert_allclose(from_cache["wttm_loss"], expected, rtol=1e-4)
    assert "wttm_loss" in cached.fit(
        x, {"labels": y, "teacher_logits": keras.ops.convert_to_numpy(teacher(x))},
        batch_size=8, epochs=1, verbose=0).history


def test_config_round_trip_and_keras_file(tmp_path):
    term = WTTM(temperature=3.0, weight=0.5, name="wttm")
    assert WTTM.from_config(term.get_config()).get_config() == term.get_config()
    distiller = tfkd.Distiller(teacher=_dense(0), student=_dense(1), alpha=1.0,
                               extra_losses=[term])
    distiller.compile(optimizer="sgd")
    path = tmp_path / "wttm.keras"
    distiller.save(path)
    assert keras.saving.load_model(path).extra_losses[0].get_config() == term.get_config()


@pytest.mark.parametrize("kwargs, error", [({"temperature": 0}, ValueError), ({"temperature": 1e300}, ValueError),
                                           ({"weight": -1}, ValueError),
                                           ({"temperature": "2"}, TypeError)])
def test_bad_arguments_are_named(kwargs, error):
    with pytest.raises(error, match=list(kwargs)[0]):
        WTTM(**kwargs)


def test_logits_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="wttm_loss"):
        WTTM().build((None, 5), (None, 4))
