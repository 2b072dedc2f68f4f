"""Tests of tfkd/cache/teacher_cache.py: build, open, verify, train."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import data
from tfkd.cache import InvalidCacheError
from tfkd.cache import StaleCacheError
from tfkd.cache import TeacherCache


def _subset(fashion_mnist, n, split=0, offset=0):
    x, y = fashion_mnist[split]
    images, labels = data.preprocess(
        x[offset : offset + n, ..., np.newaxis], y[offset : offset + n]
    )
    return images.numpy(), labels.numpy()


def _dataset(x, y, batch_size=64, shuffle_seed=None):
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed)
    return dataset.batch(batch_size)


def _mlp(hidden, name):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ],
        name=name,
    )


@pytest.fixture
def built(tmp_path, fashion_mnist):
    x, y = _subset(fashion_mnist, 128)
    keras.utils.set_random_seed(0)
    teacher = _mlp(16, "teacher")
    path = str(tmp_path / "cache")
    TeacherCache.build(teacher, _dataset(x, y), path, verbose=0)
    return path, teacher, x, y


def test_open_accepts_the_same_teacher_and_reshuffled_data(built):
    path, teacher, x, y = built
    clone = _mlp(16, "a_new_name")
    clone.set_weights(teacher.get_weights())
    cache = TeacherCache.open(
        path, teacher=clone, dataset=_dataset(x, y, 32, shuffle_seed=5), verbose=0
    )
    assert len(cache) == 128
    assert "128 examples" in repr(cache)


def test_changed_teacher_is_stale(built):
    path, teacher, _, _ = built
    teacher.layers[-1].bias.assign(teacher.layers[-1].bias + 0.01)
    with pytest.raises(StaleCacheError, match="teacher's weights differ"):
        TeacherCache.open(path, teacher=teacher)


def test_changed_data_is_stale(built, fashion_mnist):
    path, _, x, y = built
    other_x, other_y = _subset(fashion_mnist, 128, offset=128)
    with pytest.raises(StaleCacheError, match="dataset differs"):
        TeacherCache.open(path, dataset=_dataset(other_x, other_y), verbose=0)
    renormalized = (x - 0.5) / 0.5  # same images, another preprocessing
    with pytest.raises(StaleCacheError, match="same count means changed"):
        TeacherCache.open(path, dataset=_dataset(renormalized, y), verbose=0)


def test_stale_cache_is_rebuilt_on_request(built):
    path, teacher, x, y = built
    teacher.layers[-1].bias.assign(teacher.layers[-1].bias + 1.0)
    cache = TeacherCache.open(
        path, teacher=teacher, dataset=_dataset(x, y), on_stale="rebuild",
        verbose=0,
    )
    np.testing.assert_allclose(
        cache.read()[2], teacher.predict(x, verbose=0), rtol=2.0**-10, atol=1e-3
    )
    TeacherCache.open(path, teacher=teacher)  # fresh now
    assert os.listdir(os.path.dirname(path)) == ["cache"]


def test_corrupted_cache_raises_then_is_rebuilt_on_request(built):
    path, teacher, x, y = built
    with open(os.path.join(path, "logits.bin"), "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff\xff")
    with pytest.raises(InvalidCacheError, match="checksum of 'logits.bin'"):
        TeacherCache.open(path)
    cache = TeacherCache.open(
        path, teacher=teacher, dataset=_dataset(x, y), on_stale="rebuild",
        verbose=0, dtype="float32",
    )
    assert cache.metadata["outputs"]["dtype"] == "float32"  # given setting
    cache.verify()


def test_missing_cache_is_built_on_request(tmp_path, built):
    _, teacher, x, y = built
    path = str(tmp_path / "new")
    cache = TeacherCache.open(
        path, teacher=teacher, dataset=_dataset(x, y), on_stale="rebuild",
        verbose=0,
    )
    assert cache.num_examples == 128


def test_rebuild_needs_the_teacher_and_the_data(built):
    path, teacher, _, _ = built
    with pytest.raises(ValueError, match="argument `on_stale`"):
        TeacherCache.open(path, teacher=teacher, on_stale="rebuild")
    with pytest.raises(ValueError, match="argument `on_stale`"):
        TeacherCache.open(path, on_stale="sometimes")
    with pytest.raises(ValueError, match="only apply to a rebuild"):
        TeacherCache.open(path, dtype="float32")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['checksum'\]"):
        TeacherCache.open(path, checksum=False)  # a typo is not ignored


def test_cached_student_matches_online_distillation(tmp_path, fashion_mnist):
    """Same seed, same batches: the cached run trains the same student.

    The cache stores the logits in float32 and the 8-bit images as uint8
    (exact), so both runs see the same numbers; the tolerance, 1e-6 on
    the weights, allows only float32 rounding: the online step computes
    the teacher's logits inside the training graph, which may fuse its
    matmul differently from `predict` (measured: bit-identical here; with
    2000 examples, whose last batch is partial, 6e-8 after 4 epochs).
    float16 storage already moves the weights by 1.2e-4 here; a cache
    whose logits are misaligned with their inputs (the bug this guards
    against) by far more.
    """
    x, y = _subset(fashion_mnist, 512)
    keras.utils.set_random_seed(0)
    teacher = _mlp(128, "teacher")
    teacher.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    teacher.fit(x, y, batch_size=64, epochs=3, verbose=0)
    cache = TeacherCache.build(
        teacher, _dataset(x, y), str(tmp_path / "c"), verbose=0, dtype="float32"
    )

    initial = _mlp(16, "student").get_weights()
    students = {}
    for mode in ("online", "cached"):
        keras.utils.set_random_seed(1)
        student = _mlp(16, "student")
        student.set_weights(initial)
        train = cache.dataset(batch_size=64, seed=1)
        if mode == "online":
            # The very same batches, without the cached logits.
            train = train.map(lambda x, y: (x, y["labels"]))
        distiller = tfkd.Distiller(
            student=student,
            teacher=teacher if mode == "online" else None,
            temperature=4.0,
            alpha=0.1,
        )
        distiller.compile(optimizer="adam")
        distiller.fit(train, epochs=2, verbose=0)
        students[mode] = student.get_weights()
    for cached, online in zip(students["cached"], students["online"]):
        np.testing.assert_allclose(cached, online, rtol=0, atol=1e-6)
    moved = max(np.abs(a - b).max() for a, b in zip(initial, students["online"]))
    assert moved > 1e-2  # the student learned: the comparison is not vacuous
