"""tfkd.data.pipelines: lazy preprocessing, balanced subsets, held-out splits."""

import numpy as np
import pytest
import tensorflow as tf

from tfkd.data import pipelines


def _pairs(labels):
    labels = np.asarray(labels)
    ids = np.arange(len(labels))
    return tf.data.Dataset.from_tensor_slices((ids, labels))


def _labels(dataset):
    return np.array([int(y) for _, y in dataset])


def test_balanced_take_counts_from_an_unbalanced_stream():
    labels = np.repeat([0, 1, 2], [150, 90, 60])
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    subset = pipelines.balanced_take(_pairs(labels), 30, num_classes=3)
    assert np.bincount(_labels(subset), minlength=3).tolist() == [10, 10, 10]


def test_balanced_take_spreads_a_remainder_one_per_class():
    labels = np.arange(200) % 4
    subset = pipelines.balanced_take(_pairs(labels), 10, num_classes=4)
    assert sorted(np.bincount(_labels(subset), minlength=4).tolist()) == [2, 2, 3, 3]


def test_balanced_take_keeps_the_first_examples_of_each_class_every_pass():
    labels = np.arange(100) % 5
    subset = pipelines.balanced_take(_pairs(labels), 10, num_classes=5)
    first = sorted(int(i) for i, _ in subset)
    assert first == list(range(10))
    assert sorted(int(i) for i, _ in subset) == first


def test_balanced_take_stops_reading_once_every_quota_is_met():
    pulled = []

    def source():
        for index in range(10_000):
            pulled.append(index)
            yield index, index % 2

    stream = tf.data.Dataset.from_generator(
        source,
        output_signature=(tf.TensorSpec((), tf.int64), tf.TensorSpec((), tf.int64)),
    )
    assert len(list(pipelines.balanced_take(stream, 6, num_classes=2))) == 6
    assert len(pulled) <= 10


def test_balanced_take_fails_loudly_when_a_class_is_rare():
    labels = [0] * 20 + [1] * 2
    subset = pipelines.balanced_take(_pairs(labels), 10, num_classes=2)
    assert int(subset.cardinality()) == 10
    with pytest.raises(tf.errors.FailedPreconditionError, match="only 7"):
        _labels(subset)


def test_hold_out_keeps_a_known_size():
    train, validation = pipelines.hold_out(tf.data.Dataset.range(250), 0.2)
    held = pipelines.held_out_count(250, 0.2)
    assert 40 <= held <= 60  # 40 from the two full blocks, some of the last 50
    assert int(validation.cardinality()) == held == len(list(validation))
    assert int(train.cardinality()) == 250 - held == len(list(train))


def test_hold_out_is_disjoint_complete_and_sized_as_announced():
    stream = tf.data.Dataset.range(1_234)
    train, validation = pipelines.hold_out(stream, 0.15, seed=7)
    train_ids = list(train.as_numpy_iterator())
    validation_ids = list(validation.as_numpy_iterator())
    assert not set(train_ids) & set(validation_ids)
    assert sorted(train_ids + validation_ids) == list(range(1_234))
    assert len(validation_ids) == pipelines.held_out_count(1_234, 0.15, seed=7)
    assert abs(len(validation_ids) - 185) <= 1
    # The same split on a second pass.
    assert list(validation.as_numpy_iterator()) == validation_ids


def test_hold_out_samples_every_class_of_a_cycling_stream():
    # A regular "every 10th example" rule would hold out a single class.
    labels = np.arange(1_000) % 10
    _, validation = pipelines.hold_out(_pairs(labels), 0.1)
    counts = np.bincount(_labels(validation), minlength=10)
    assert counts.sum() == 100 and counts.min() >= 4


def test_hold_out_depends_on_the_seed():
    stream = tf.data.Dataset.range(300)
    a = list(pipelines.hold_out(stream, 0.1, seed=0)[1].as_numpy_iterator())
    b = list(pipelines.hold_out(stream, 0.1, seed=1)[1].as_numpy_iterator())
    assert a != b and len(a) == len(b) == 30


def test_preprocess_scales_integers_and_keeps_floats_in_unit_range():
    images, _ = pipelines.preprocess(np.full((1, 2, 2, 1), 51, np.uint8), [0])
    np.testing.assert_allclose(images.numpy(), 0.2)
    images, _ = pipelines.preprocess(np.full((1, 2, 2, 1), 0.2, np.float64), [0])
    np.testing.assert_allclose(images.numpy(), 0.2, rtol=1e-6)


def test_to_batches_resizes_images_of_varying_size_before_batching():
    def images():
        for size in (5, 7, 9):
            yield np.full((size, size + 1, 1), 255, np.uint8), 1

    stream = tf.data.Dataset.from_generator(
        images,
        output_signature=(
            tf.TensorSpec((None, None, 1), tf.uint8),
            tf.TensorSpec((), tf.int64),
        ),
    )
    batches = pipelines.to_batches(stream, 3, image_size=(4, 4), channels=3)
    batch, labels = next(iter(batches))
    assert batch.shape == (3, 4, 4, 3) and labels.dtype == tf.int32
    np.testing.assert_allclose(batch.numpy(), 1.0)
