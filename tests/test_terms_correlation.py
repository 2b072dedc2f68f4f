"""DIST against a NumPy float64 reference written like the authors' code."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.terms import correlation
from tfkd.terms.correlation import DIST


def _np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _np_pearson_rows(a, b, eps=1e-8):
    """github.com/hunto/DIST_KD: cosine similarity of the centred rows."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def _np_dist(t, s, tau, beta, gamma):
    p_s = _np_softmax(s.astype(np.float64) / tau)
    p_t = _np_softmax(t.astype(np.float64) / tau)
    inter = 1 - _np_pearson_rows(p_s, p_t).mean()
    intra = 1 - _np_pearson_rows(p_s.T, p_t.T).mean()
    return tau**2 * (beta * inter + gamma * intra)


def _logits(seed, shape=(8, 5), scale=2.0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * scale


@pytest.mark.parametrize("tau, beta, gamma", [(1.0, 1.0, 1.0), (4.0, 1.0, 2.0), (2.0, 0.0, 1.0)])
def test_dist_matches_numpy(tau, beta, gamma):
    t, s = _logits(0), _logits(1)
    got = correlation.dist_loss(t, s, tau, beta, gamma)
    np.testing.assert_allclose(float(got), _np_dist(t, s, tau, beta, gamma), rtol=1e-4)


def test_dist_is_invariant_to_affine_maps_of_the_probabilities():
    """Pearson correlation ignores shift and positive scale: zero loss when
    the student's probabilities are an affine map of the teacher's."""
    t = _logits(2)
    assert float(correlation.dist_loss(t, t, 4.0)) < 1e-4  # τ² · float32 rounding
    assert float(correlation.dist_loss(t, -t, 1.0)) > 0.5


def test_sample_weight_zero_drops_an_example():
    t, s = _logits(3), _logits(4)
    weights = np.ones(8, "float32")
    weights[-1] = 0.0
    weighted = correlation.dist_loss(t, s, 2.0, 0.0, 1.0, sample_weight=weights)
    dropped = correlation.dist_loss(t[:-1], s[:-1], 2.0, 0.0, 1.0)
    np.testing.assert_allclose(float(weighted), float(dropped), rtol=1e-5)
    # The row term is "sum_over_batch_size": weighted sum / whole batch.
    rows = correlation.dist_loss(t, s, 2.0, 1.0, 0.0, sample_weight=weights)
    rows_dropped = correlation.dist_loss(t[:-1], s[:-1], 2.0, 1.0, 0.0)
    np.testing.assert_allclose(float(rows), float(rows_dropped) * 7 / 8, rtol=1e-5)


def _dense(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])


def test_reported_value_in_history_matches_numpy():
    """The value `fit`/`evaluate` report under the term's name is the formula."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 5
    teacher, student = _dense(0), _dense(1)
    distiller = tfkd.Distiller(
        teacher=teacher, student=student, alpha=1.0,
        extra_losses=[DIST(temperature=4, beta=1, gamma=2)],
    )
    distiller.compile(optimizer="sgd")
    results = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    expected = _np_dist(keras.ops.convert_to_numpy(teacher(x)), keras.ops.convert_to_numpy(student(x)), 4.0, 1.0, 2.0)
    np.testing.assert_allclose(results["dist_loss"], expected, rtol=1e-3)
    # CE + DIST: alpha=1 leaves the KL with no weight.
    np.testing.assert_allclose(
        results["loss"], results["student_loss"] + expected, rtol=1e-3
    )
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert "dist_loss" in history.history


def test_config_round_trip_and_keras_file(tmp_path):
    term = DIST(temperature=4.0, beta=0.5, gamma=2.0, weight=3.0, name="dist")
    copy = DIST.from_config(term.get_config())
    assert copy.get_config() == term.get_config()
    distiller = tfkd.Distiller(
        teacher=_dense(0), student=_dense(1), alpha=1.0, extra_losses=[term]
    )
    distiller.compile(optimizer="sgd")
    path = tmp_path / "dist.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.extra_losses[0].get_config() == term.get_config()


@pytest.mark.parametrize(
    "kwargs, error",
    [({"temperature": 0}, ValueError), ({"beta": -1}, ValueError),
     ({"gamma": "1"}, TypeError)],
)
def test_bad_arguments_are_named(kwargs, error):
    with pytest.raises(error, match=list(kwargs)[0]):
        DIST(**kwargs)


def test_logits_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="dist_loss"):
        DIST().build((None, 5), (None, 4))
