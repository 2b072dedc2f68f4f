"""tfkd.losses against an independent NumPy reference."""

import keras
import numpy as np
import pytest

from conftest import value_and_gradient
from tfkd import losses


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_soft(t, s, temperature):
    """T² · Σ p_t (log p_t − log q_s), computed in float64."""
    log_p = _np_log_softmax(t.astype(np.float64) / temperature)
    log_q = _np_log_softmax(s.astype(np.float64) / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


def _np_hard(labels, s):
    return -_np_log_softmax(s.astype(np.float64))[np.arange(len(labels)), labels]


def _logits(seed, shape=(6, 5), scale=3.0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * scale


@pytest.mark.parametrize("temperature", [1.0, 2.5, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_total_loss_matches_numpy(temperature, alpha):
    t, s = _logits(0), _logits(1)
    labels = np.array([0, 1, 2, 3, 4, 0])
    expected = alpha * _np_hard(labels, s) + (1 - alpha) * _np_soft(
        t, s, temperature
    )
    got = losses.knowledge_distillation_loss(labels, s, t, temperature, alpha)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_one_hot_and_sparse_labels_give_the_same_loss():
    t, s = _logits(2), _logits(3)
    labels = np.array([4, 3, 2, 1, 0, 4])
    sparse = losses.knowledge_distillation_loss(labels, s, t, 3.0, 0.3)
    one_hot = losses.knowledge_distillation_loss(
        np.eye(5, dtype="float32")[labels], s, t, 3.0, 0.3
    )
    column = losses.knowledge_distillation_loss(labels[:, None], s, t, 3.0, 0.3)
    np.testing.assert_allclose(np.asarray(sparse), np.asarray(one_hot), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sparse), np.asarray(column), rtol=1e-6)


def test_soft_loss_is_zero_for_identical_logits_and_positive_otherwise():
    t = _logits(6)
    np.testing.assert_allclose(
        np.asarray(losses.soft_target_loss(t, t, 4.0)), 0.0, atol=1e-6
    )
    assert np.all(np.asarray(losses.soft_target_loss(t, _logits(7), 4.0)) > 0)


def test_soft_loss_is_exact_for_saturated_teachers():
    """No clipping: a teacher with probability ~1e-40 on a class stays exact."""
    t = np.array([[100.0, 0.0, -100.0]], dtype="float32")
    s = np.array([[0.0, 1.0, 2.0]], dtype="float32")
    got = np.asarray(losses.soft_target_loss(t, s, 1.0))
    np.testing.assert_allclose(got, _np_soft(t, s, 1.0), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
    ],
)
def test_loss_class_rejects_bad_hyper_parameters(kwargs, message):
    with pytest.raises(ValueError, match=f"`{message}`"):
        losses.KnowledgeDistillation(**kwargs)


def test_loss_class_rejects_wrong_types():
    with pytest.raises(TypeError, match="`temperature`.*Received: temperature='4'"):
        losses.KnowledgeDistillation(temperature="4")


def test_pack_and_unpack_targets_round_trip():
    t = _logits(10)
    labels = np.array([1, 2, 3, 4, 0, 1])
    packed = losses.pack_targets(labels, t)
    assert packed.shape == (6, 6)
    got_labels, got_logits = losses.unpack_targets(packed)
    np.testing.assert_array_equal(np.asarray(got_labels), labels)
    np.testing.assert_allclose(np.asarray(got_logits), t)
    one_hot_packed = losses.pack_targets(np.eye(5)[labels], t)
    np.testing.assert_allclose(np.asarray(one_hot_packed), np.asarray(packed))


def test_loss_class_matches_the_function_and_round_trips(tmp_path):
    t, s = _logits(11), _logits(12)
    labels = np.array([0, 1, 2, 3, 4, 0])
    loss = losses.KnowledgeDistillation(temperature=3.0, alpha=0.2)
    expected = np.mean(0.2 * _np_hard(labels, s) + 0.8 * _np_soft(t, s, 3.0))
    got = float(loss(losses.pack_targets(labels, t), s))
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, losses.KnowledgeDistillation)
    assert (restored.temperature, restored.alpha) == (3.0, 0.2)


def test_loss_class_trains_a_model_in_compile(tmp_path):
    """`model.compile(loss=KnowledgeDistillation())` with cached logits."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    teacher_logits = x @ rng.normal(size=(4, 3)).astype("float32") * 3
    labels = teacher_logits.argmax(axis=-1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(
        keras.optimizers.Adam(0.05),
        loss=losses.KnowledgeDistillation(temperature=2.0, alpha=0.5),
    )
    y = losses.pack_targets(labels, teacher_logits)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.5 * before
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.evaluate(x, y, verbose=0), after, rtol=1e-5)


# -- gradients on every backend (their TensorFlow-tape originals are in
# tests/test_losses_tensorflow.py) --------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0, 8.0])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_soft_gradient_is_the_published_form_on_every_backend(temperature, alpha):
    """d/ds of the mean soft part = (1 − α) · T · (q_s − p_t) / batch."""
    t, s = _logits(4), _logits(5)
    batch = s.shape[0]
    _, gradient = value_and_gradient(
        lambda v: (1 - alpha) * keras.ops.sum(losses.soft_target_loss(t, v, temperature))
        / batch,
        s,
    )
    p_t = np.exp(_np_log_softmax(t.astype(np.float64) / temperature))
    q_s = np.exp(_np_log_softmax(s.astype(np.float64) / temperature))
    expected = (1 - alpha) * temperature * (q_s - p_t) / batch
    np.testing.assert_allclose(gradient, expected, rtol=1e-4, atol=1e-7)


def test_float16_logits_give_a_float32_loss_on_every_backend():
    t, s = _logits(8), _logits(9)
    got = losses.soft_target_loss(t.astype("float16"), s.astype("float16"), 4.0)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    expected = _np_soft(t.astype("float16"), s.astype("float16"), 4.0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("labels", [np.array([2, -1]),
                                    np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])],
                         ids=["sparse", "one-hot"])
def test_unlabelled_examples_have_zero_hard_gradient_on_every_backend(labels):
    z = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]], "float32")
    loss, gradient = value_and_gradient(lambda v: losses.hard_target_loss(labels, v), z)
    z = z.astype(np.float64)
    expected = -(z[0, 2] - np.log(np.exp(z[0]).sum()))
    np.testing.assert_allclose(loss, [expected, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(gradient[1], 0.0)
    assert np.all(np.isfinite(gradient)) and np.any(gradient[0] != 0.0)
    np.testing.assert_array_equal(
        np.asarray(losses.labelled_mask(np.array([[1], [-1], [0]]), 3)), [1, 0, 1]
    )
    np.testing.assert_array_equal(
        np.asarray(losses.class_ids(np.eye(3)[[1, 2]], 3)), [1, 2]
    )
