"""Tests of tfkd/cache/topk.py: top-k storage and its error on the KD loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tfkd import losses
from tfkd.cache import TeacherCache
from tfkd.cache import topk


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_reconstruction_keeps_top_k_probabilities_and_tail_mass(temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (64, 50)).astype(np.float32)
    k = 5
    values, indices, fill = topk.compress(logits, k, temperature)
    dense = topk.reconstruct(values, indices, fill, 50)

    q = _softmax(logits / temperature)
    q_reconstructed = _softmax(dense / temperature)
    top = topk.top_k_indices(logits, k)
    np.testing.assert_allclose(
        np.take_along_axis(q_reconstructed, top, -1),
        np.take_along_axis(q, top, -1),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        1 - np.take_along_axis(q_reconstructed, top, -1).sum(-1),
        topk.tail_mass(logits, k, temperature),
        atol=1e-6,
    )
    assert indices.dtype == np.int16
    # Largest first.
    assert np.all(np.diff(values, axis=-1) <= 0)


def test_tensorflow_reconstruction_equals_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(9, 30)).astype(np.float32)
    values, indices, fill = topk.compress(logits, 4)
    expected = topk.reconstruct(values, indices, fill, 30)
    actual = topk.reconstruct_tensor(
        tf.constant(values.astype(np.float16)),
        tf.constant(indices),
        tf.constant(fill.astype(np.float16)),
        30,
    ).numpy()
    np.testing.assert_allclose(actual, expected, rtol=2**-10, atol=1e-3)


def test_kd_loss_reference_matches_tfkd_losses():
    rng = np.random.default_rng(2)
    t, s = rng.normal(size=(2, 8, 12))
    np.testing.assert_allclose(
        topk.kd_loss(t, s, 3.0),
        losses.soft_target_loss(t, s, 3.0).numpy(),
        rtol=1e-5,
    )


@settings(max_examples=60, deadline=None)
@given(
    classes=st.integers(3, 200),
    k_fraction=st.floats(0.0, 0.9),
    temperature=st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
    teacher_scale=st.floats(0.1, 8.0),
    student_scale=st.floats(0.1, 8.0),
    seed=st.integers(0, 2**16),
)
def test_kd_loss_error_stays_within_the_documented_bound(
    classes, k_fraction, temperature, teacher_scale, student_scale, seed
):
    k = 1 + int(k_fraction * (classes - 2))  # 1 <= k < classes
    rng = np.random.default_rng(seed)
    teacher = rng.normal(0, teacher_scale, (16, classes))
    student = rng.normal(0, student_scale, (16, classes))
    values, indices, fill = topk.compress(teacher, k, temperature)
    dense = topk.reconstruct(values, indices, fill, classes)

    error = np.abs(
        topk.kd_loss(dense, student, temperature)
        - topk.kd_loss(teacher, student, temperature)
    )
    bound = topk.kd_loss_error_bound(teacher, student, k, temperature)
    # float32 storage of the logits adds rounding far below the bound's
    # slack; the 1e-4 relative margin only absorbs it.
    full = topk.kd_loss(teacher, student, temperature)
    assert np.all(error <= bound + 1e-4 * (1 + full))


def test_documented_error_for_a_confident_1000_class_teacher():
    # The k = 10, T = 1 cell of the module docstring's table (0.10 %).
    rng = np.random.default_rng(0)
    n, classes = 1024, 1000
    teacher = rng.normal(0, 1, (n, classes))
    teacher[np.arange(n), rng.integers(0, classes, n)] += 12.0
    student = rng.normal(0, 1, (n, classes))
    values, indices, fill = topk.compress(teacher, 10, 1.0)
    dense = topk.reconstruct(
        values.astype(np.float16), indices, fill.astype(np.float16), classes
    )
    full = topk.kd_loss(teacher, student, 1.0)
    relative = np.abs(topk.kd_loss(dense, student, 1.0) - full) / full
    assert relative.mean() < 0.003
    # And more k never hurts: the tail only shrinks.
    assert np.all(
        topk.tail_mass(teacher, 20, 1.0) <= topk.tail_mass(teacher, 10, 1.0)
    )


def test_top_k_cache_streams_reconstructed_logits(tmp_path):
    classes, k = 100, 8
    rng = np.random.default_rng(3)
    x = rng.random((40, 6), dtype=np.float32)
    y = rng.integers(0, classes, 40).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(classes)]
    )
    teacher.layers[0].kernel.assign(teacher.layers[0].kernel * 10.0)

    cache = TeacherCache.build(
        teacher,
        dataset,
        str(tmp_path / "cache"),
        top_k=k,
        top_k_temperature=2.0,
        dtype="float32",
        verbose=0,
    )
    full = teacher.predict(x, verbose=0)
    values, indices, fill = topk.compress(full, k, 2.0)
    expected = topk.reconstruct(values, indices, fill, classes)
    _, _, stored = cache.read()
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5)

    streamed_x, targets = next(iter(cache.dataset(40, shuffle=False)))
    np.testing.assert_allclose(
        targets["teacher_logits"].numpy(), expected, rtol=1e-5, atol=1e-5
    )
    assert targets["teacher_logits"].shape == (40, classes)
    metadata = cache.metadata["outputs"]
    assert metadata["storage"] == "top_k" and metadata["top_k"] == k
    assert 0.0 <= metadata["tail_mass_mean"] <= metadata["tail_mass_max"] <= 1.0
    # float32: 4k value bytes + 2k int16 index bytes + 4 fill bytes.
    arrays = cache.metadata["arrays"]
    output_bytes = sum(
        np.prod(arrays[name]["shape"]) * np.dtype(arrays[name]["dtype"]).itemsize
        for name in ("top_k_values", "top_k_indices", "top_k_fill")
    )
    assert output_bytes == 40 * (4 * k + 2 * k + 4)


def test_top_k_must_be_below_the_number_of_classes(tmp_path):
    x = np.zeros((4, 3), np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(4, np.int32))).batch(4)
    teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="argument `top_k`.*below the teacher's 5"):
        TeacherCache.build(
            teacher, dataset, str(tmp_path / "c"), top_k=5, verbose=0
        )
    assert not (tmp_path / "c").exists()
