"""SP and PKT against NumPy float64 references written like the authors' code."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.terms import similarity
from tfkd.terms.similarity import PKT, SimilarityPreserving


def _np_sp(f_t, f_s):
    """github.com/HobbitLong/RepDistiller, distiller_zoo/SP.py."""
    b = f_t.shape[0]
    f_t, f_s = f_t.reshape(b, -1).astype(np.float64), f_s.reshape(b, -1).astype(np.float64)
    g_t, g_s = f_t @ f_t.T, f_s @ f_s.T
    # F.normalize divides by max(‖row‖, 1e-12): an all-zero row stays 0.
    g_t = g_t / np.maximum(np.linalg.norm(g_t, axis=1, keepdims=True), 1e-12)
    g_s = g_s / np.maximum(np.linalg.norm(g_s, axis=1, keepdims=True), 1e-12)
    return ((g_t - g_s) ** 2).sum() / b**2


def _np_pkt(f_t, f_s, eps=1e-7):
    """github.com/passalis/probabilistic_kt, `cosine_similarity_loss`."""
    b = f_t.shape[0]

    def conditional(f):
        f = f.reshape(b, -1).astype(np.float64)
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + eps)
        sim = (f @ f.T + 1.0) / 2.0
        return sim / sim.sum(axis=1, keepdims=True)

    t, s = conditional(f_t), conditional(f_s)
    return np.mean(t * np.log((t + eps) / (s + eps)))


def _features(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("shapes", [((8, 5), (8, 3)), ((6, 2, 2, 3), (6, 4))])
def test_sp_matches_numpy(shapes):
    f_t, f_s = _features(0, shapes[0]), _features(1, shapes[1])
    got = similarity.similarity_preserving_loss(f_t, f_s)
    np.testing.assert_allclose(float(got), _np_sp(f_t, f_s), rtol=1e-4)


@pytest.mark.parametrize("shapes", [((8, 5), (8, 3)), ((6, 2, 2, 3), (6, 4))])
def test_pkt_matches_numpy(shapes):
    f_t, f_s = _features(2, shapes[0]), _features(3, shapes[1])
    got = similarity.pkt_loss(f_t, f_s)
    np.testing.assert_allclose(float(got), _np_pkt(f_t, f_s), rtol=1e-4)


def test_sample_weights():
    f_t, f_s = _features(4, (6, 5)), _features(5, (6, 3))
    ones = np.ones(6, "float32")
    for loss in (similarity.similarity_preserving_loss, similarity.pkt_loss):
        np.testing.assert_allclose(
            float(loss(f_t, f_s, ones)), float(loss(f_t, f_s)), rtol=1e-6
        )
    # PKT weights rows: a zero weight removes that example's distribution.
    weights = ones.copy()
    weights[0] = 0.0
    t = np.asarray(similarity._conditional_similarities(f_t), np.float64)
    s = np.asarray(similarity._conditional_similarities(f_s), np.float64)
    rows = (t * np.log((t + 1e-7) / (s + 1e-7))).sum(1)
    np.testing.assert_allclose(
        float(similarity.pkt_loss(f_t, f_s, weights)), rows[1:].sum() / 36, rtol=1e-4
    )


def _mlp(name, seed, width):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(width, activation="relu", name="embedding"),
         keras.layers.Dense(3, name="logits")],
        name=name,
    )


def test_terms_train_report_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), np.arange(32) % 3
    terms = [SimilarityPreserving("embedding", "embedding", weight=10.0),
             PKT("embedding", "embedding", weight=5.0)]
    teacher, student = _mlp("teacher", 0, 8), _mlp("student", 1, 4)
    distiller = tfkd.Distiller(teacher=teacher, student=student, extra_losses=terms)
    distiller.compile(optimizer="sgd")
    results = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    embed = lambda m: keras.Model(m.inputs, m.get_layer("embedding").output)(x)
    f_t, f_s = keras.ops.convert_to_numpy(embed(teacher)), keras.ops.convert_to_numpy(embed(student))
    np.testing.assert_allclose(results["sp_loss"], _np_sp(f_t, f_s), rtol=1e-3)
    np.testing.assert_allclose(results["pkt_loss"], _np_pkt(f_t, f_s), rtol=1e-3)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert {"sp_loss", "pkt_loss"} <= set(history.history)
    path = tmp_path / "similarity.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert [t.get_config() for t in loaded.extra_losses] == [t.get_config() for t in terms]
    assert tfkd.SP is SimilarityPreserving and tfkd.terms.PKT is PKT


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="weight"):
        PKT(weight=-1.0)
    with pytest.raises(TypeError, match="teacher_layer"):
        SimilarityPreserving(teacher_layer=3)
