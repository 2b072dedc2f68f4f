"""Tests of tfkd/cache/views.py: K fixed augmented views per example."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.cache import TeacherCache
from tfkd.cache import views as views_lib

N, K, CLASSES = 24, 3, 5


def _dataset():
    """Images whose pixel (0, 0) holds the example id (augmentation keeps it)."""
    rng = np.random.default_rng(0)
    x = rng.random((N, 8, 8, 1), dtype=np.float32) * 0.5
    x[:, 0, 0, 0] = np.arange(N) + 1.0
    y = (np.arange(N) % CLASSES).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(10), x


class _NoiseExceptCorner(keras.layers.Layer):
    """A random augmentation that keeps pixel (0, 0): noise elsewhere."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        noise = keras.random.uniform(
            keras.ops.shape(inputs), maxval=0.1, seed=self.seed_generator
        )
        keep = np.ones((8, 8, 1), np.float32)
        keep[0, 0, 0] = 0.0
        return inputs + noise * keep


def _teacher():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )


@pytest.fixture
def cache(tmp_path):
    dataset, _ = _dataset()
    return TeacherCache.build(
        _teacher(),
        dataset,
        str(tmp_path / "views"),
        views=K,
        augmentation=_NoiseExceptCorner(name="noise_except_corner"),
        verbose=0,
    )


def test_expand_views_is_example_major():
    counter = iter(range(10))
    add_view_number = lambda batch: batch * 10 + next(counter)  # noqa: E731
    rows = views_lib.expand_views(add_view_number, np.array([1, 2]), views=3)
    assert rows.tolist() == [10, 11, 12, 20, 21, 22]
    assert views_lib.repeat_labels(np.array([7, 8]), 3).tolist() == [7, 7, 7, 8, 8, 8]


def test_every_stored_view_carries_the_teacher_output_on_that_view(cache):
    _, x = _dataset()
    inputs, labels, logits = cache.read()
    assert inputs.shape == (N * K, 8, 8, 1)
    assert cache.num_views == K and cache.metadata["rows"] == N * K
    assert cache.metadata["augmentation"]["name"] == "noise_except_corner"
    np.testing.assert_array_equal(inputs[:, 0, 0, 0], np.repeat(x[:, 0, 0, 0], K))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(N) % CLASSES, K))
    # Consistency: the stored outputs are the teacher's on the stored view.
    np.testing.assert_allclose(
        logits, _teacher()(inputs).numpy(), rtol=2.0**-10, atol=1e-3
    )
    views_of_first = inputs[:K].reshape(K, -1)
    assert not np.allclose(views_of_first[0], views_of_first[1])  # augmented
    assert not np.allclose(inputs[0], x[0])


def _epoch_rows(dataset, inputs):
    """Which stored rows an epoch of the stream served."""
    flat = inputs.reshape(len(inputs), -1)
    rows = []
    for x, y in dataset:
        for example in x.numpy().reshape(x.shape[0], -1):
            rows.append(int(np.flatnonzero((flat == example).all(-1))[0]))
    return np.array(rows)


def test_random_view_mode_serves_each_example_once_per_epoch(cache):
    inputs = cache.read()[0]
    dataset = cache.dataset(batch_size=8, seed=1)
    first, second = _epoch_rows(dataset, inputs), _epoch_rows(dataset, inputs)
    for rows in (first, second):
        np.testing.assert_array_equal(np.sort(rows // K), np.arange(N))
    # New views are drawn each epoch (24 three-way draws agreeing: 3**-24).
    assert not np.array_equal(np.sort(first), np.sort(second))


def test_all_views_mode_serves_every_view_once(cache):
    inputs = cache.read()[0]
    rows = _epoch_rows(cache.dataset(batch_size=16, views="all", seed=0), inputs)
    np.testing.assert_array_equal(np.sort(rows), np.arange(N * K))


def test_random_augmentation_on_top_of_a_cache_is_refused(cache):
    student = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(CLASSES)]
    )
    distiller = tfkd.Distiller(
        student=student, teacher=None, augmentation=keras.layers.RandomFlip()
    )
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="Beyer et al., 2022"):
        distiller.fit(cache.dataset(batch_size=8), epochs=1, verbose=0)
