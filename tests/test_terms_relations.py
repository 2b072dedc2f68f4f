"""RKD distance and angle against direct NumPy references."""

import itertools

import keras
import numpy as np
import pytest

import tfkd
from conftest import value_and_gradient
from tfkd.terms import relations as relation_losses
from tfkd.terms.relations import RKDAngle, RKDDistance


def _np_huber(x):
    return np.where(np.abs(x) < 1.0, 0.5 * x**2, np.abs(x) - 0.5)


def _np_rkd_distance(t, s, w=None):
    """Direct pairwise differences in float64 (no Gram matrix)."""
    n = len(t)
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    pairs = w[:, None] * w[None, :]
    np.fill_diagonal(pairs, 0.0)

    def normalized(e):
        e = e.reshape(n, -1).astype(np.float64)
        d = np.linalg.norm(e[:, None] - e[None, :], axis=-1)
        return d / ((pairs * d).sum() / pairs.sum())

    difference = normalized(s) - normalized(t)
    return (pairs * _np_huber(difference)).sum() / pairs.sum(), difference


def _np_angles(e):
    e = e.reshape(len(e), -1).astype(np.float64)
    n = len(e)
    angles = np.zeros((n, n, n))
    for i, j, k in itertools.permutations(range(n), 3):
        u, v = e[j] - e[i], e[k] - e[i]
        angles[i, j, k] = u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    return angles


def _np_rkd_angle(t, s, w=None):
    n = len(t)
    w = np.ones(n) if w is None else np.asarray(w, np.float64)
    weights = np.zeros((n, n, n))
    for i, j, k in itertools.permutations(range(n), 3):
        weights[i, j, k] = w[i] * w[j] * w[k]
    difference = _np_angles(s) - _np_angles(t)
    return (weights * _np_huber(difference)).sum() / weights.sum(), difference


def _embeddings(seed, shape, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + shift).astype("float32")


@pytest.fixture
def pair():
    """Teacher and student embeddings of different sizes; the teacher has an
    outlier, so some normalized distances differ by more than δ = 1."""
    t = _embeddings(0, (7, 5), shift=3.0)
    t[0] *= 6.0
    s = _embeddings(1, (7, 3, 2))  # rank 3: flattened per example
    return t, s


def test_rkd_distance_matches_numpy_on_both_huber_branches(pair):
    t, s = pair
    expected, difference = _np_rkd_distance(t, s)
    assert np.any(np.abs(difference) >= 1.0) and np.any(np.abs(difference) < 1.0)
    got = relation_losses.rkd_distance_loss(t, s)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_rkd_angle_matches_numpy_on_both_huber_branches(pair):
    t, s = pair
    expected, difference = _np_rkd_angle(t, s)
    assert np.any(np.abs(difference) >= 1.0) and np.any(np.abs(difference) < 1.0)
    got = relation_losses.rkd_angle_loss(t, s)
    np.testing.assert_allclose(float(got), expected, rtol=1e-4)


@pytest.mark.parametrize("function, reference", [
    (relation_losses.rkd_distance_loss, _np_rkd_distance),
    (relation_losses.rkd_angle_loss, _np_rkd_angle),
])
def test_sample_weights_weight_relations_and_zero_drops_examples(pair, function, reference):
    t, s = pair
    weights = np.array([1.0, 0.0, 2.0, 1.0, 0.5, 0.0, 1.0], "float32")
    got = float(function(t, s, weights))
    np.testing.assert_allclose(got, reference(t, s, weights)[0], rtol=1e-4)
    kept = weights > 0
    np.testing.assert_allclose(
        got, reference(t[kept], s[kept], weights[kept])[0], rtol=1e-4
    )


def test_relations_ignore_scale_and_translation():
    t = _embeddings(2, (6, 4))
    similar = 2.5 * t + 7.0
    assert float(relation_losses.rkd_distance_loss(t, similar)) < 1e-6
    assert float(relation_losses.rkd_angle_loss(t, similar)) < 1e-6


def test_gradients_stay_finite_with_duplicate_examples_on_every_backend():
    t = _embeddings(3, (5, 4))
    s = np.concatenate([_embeddings(4, (4, 3)), _embeddings(4, (1, 3))])
    loss, gradient = value_and_gradient(
        lambda v: relation_losses.rkd_distance_loss(t, v)
        + relation_losses.rkd_angle_loss(t, v),
        s,
    )
    assert np.isfinite(float(loss))
    assert np.all(np.isfinite(gradient))


def test_terms_in_a_distiller_read_embedding_layers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = x[:, :4].argmax(axis=-1).astype("int32")

    def mlp(name, width, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((6,)),
            keras.layers.Dense(width, activation="relu", name="embedding"),
            keras.layers.Dense(4, name="logits"),
        ], name=name)

    distance = RKDDistance(teacher_layer="embedding", student_layer="embedding", weight=5.0)
    angle = RKDAngle(teacher_layer="embedding", student_layer="embedding")
    distiller = tfkd.Distiller(
        teacher=mlp("teacher", 32, 0), student=mlp("student", 8, 1),
        extra_losses=[distance, angle],
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.02))
    before = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    # The reported values are the losses of the two models' embeddings.
    teacher_embedding = distiller.teacher.get_layer("embedding").output
    embed_t = keras.Model(distiller.teacher.inputs[0], teacher_embedding)(x)
    embed_s = keras.Model(distiller.student.inputs[0],
                          distiller.student.get_layer("embedding").output)(x)
    np.testing.assert_allclose(
        before["rkd_distance_loss"], _np_rkd_distance(keras.ops.convert_to_numpy(embed_t), keras.ops.convert_to_numpy(embed_s))[0],
        rtol=1e-4,
    )
    distiller.fit(x, y, batch_size=64, epochs=5, verbose=0)
    after = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert after["rkd_distance_loss"] < before["rkd_distance_loss"]
    assert angle.weight == 2.0 and angle.get_config()["student_layer"] == "embedding"
