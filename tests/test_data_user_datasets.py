"""tfkd.data.from_dataset: a user's tf.data.Dataset, streamed, never materialised."""

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import data

#: Declared size of the endless stream: 28x28 images, ~78 GB as uint8.
HUGE = 100_000_000


class _CountingSource:
    """A generator of `(image, label)` that counts and bounds its pulls.

    Each image stores its index in its first two pixels, so a test can
    tell which examples went where.
    """

    def __init__(self, limit, size=HUGE):
        self.limit, self.size, self.pulled = limit, size, 0

    def __call__(self):
        for index in range(self.size):
            if self.pulled >= self.limit:
                raise RuntimeError(
                    f"more than {self.limit} examples pulled: materialised?"
                )
            self.pulled += 1
            image = np.zeros((28, 28), np.uint8)
            image[0, 0], image[0, 1] = index % 256, index // 256
            yield image, index % 10

    def dataset(self):
        return tf.data.Dataset.from_generator(
            self,
            output_signature=(
                tf.TensorSpec((28, 28), tf.uint8),
                tf.TensorSpec((), tf.int64),
            ),
        )


def _ids(images):
    pixels = np.rint(np.asarray(images)[:, 0, :2, 0] * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


def test_a_stream_larger_than_memory_is_never_materialised():
    source = _CountingSource(limit=2_000)
    loaded = data.from_dataset(
        source.dataset(), num_classes=10, batch_size=32, shuffle_buffer=64,
        validation_fraction=0.1,
    )
    assert source.pulled == 0  # building the pipelines reads nothing
    images, labels = next(iter(loaded.train))
    assert images.shape == (32, 28, 28, 1) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    # One batch: the shuffle buffer, the batch and a few prefetched ones.
    assert 32 <= source.pulled <= 64 + 10 * 32 + 32
    assert loaded.input_shape == (28, 28, 1)


def test_validation_is_disjoint_from_train_and_stable():
    source = _CountingSource(limit=10**6, size=500)
    loaded = data.from_dataset(
        source.dataset(), num_classes=10, batch_size=64, validation_fraction=0.2,
        seed=3,
    )
    train_ids = np.concatenate([_ids(x) for x, _ in loaded.train])
    validation_ids = np.concatenate([_ids(x) for x, _ in loaded.validation])
    assert not set(train_ids) & set(validation_ids)
    assert sorted(np.concatenate([train_ids, validation_ids])) == list(range(500))
    again = np.concatenate([_ids(x) for x, _ in loaded.validation])
    np.testing.assert_array_equal(validation_ids, again)


def test_sizes_come_from_cardinality_when_known():
    images = np.zeros((200, 8, 8, 3), np.uint8)
    labels = np.arange(200) % 4
    stream = tf.data.Dataset.from_tensor_slices((images, labels))
    loaded = data.from_dataset(
        stream, num_classes=4, test=stream.take(30), batch_size=16,
        validation_fraction=0.25, class_names=["a", "b", "c", "d"],
    )
    assert loaded.num_examples == {"train": 150, "validation": 50, "test": 30}
    assert sum(len(y) for _, y in loaded.validation) == 50
    assert sum(len(y) for _, y in loaded.test) == 30
    assert loaded.class_names == ("a", "b", "c", "d")


def test_unknown_sizes_are_none():
    loaded = data.from_dataset(_CountingSource(10, size=10).dataset(), num_classes=10)
    assert loaded.num_examples == {"train": None, "validation": None, "test": None}
    assert loaded.test is None


def test_a_class_balanced_subset_by_streaming():
    source = _CountingSource(limit=10**6, size=2_000)
    loaded = data.from_dataset(
        source.dataset(), num_classes=10, batch_size=16, train_examples=75,
        validation_fraction=0.1,
    )
    assert source.pulled == 0
    assert loaded.num_examples["train"] == 75
    labels = np.concatenate([y.numpy() for _, y in loaded.train])
    assert sorted(np.bincount(labels, minlength=10).tolist()) == [7] * 5 + [8] * 5
    # One pass reads about the subset, not the 2,000 examples.
    assert source.pulled < 200


def test_a_subset_short_of_a_class_fails_loudly():
    source = _CountingSource(limit=10**6, size=500)
    stream = source.dataset().filter(lambda x, y: y < 7)  # classes 7-9 absent
    loaded = data.from_dataset(
        stream, num_classes=10, batch_size=16, train_examples=70,
        validation_data=stream.take(10),
    )
    with pytest.raises(tf.errors.FailedPreconditionError, match="expected to contain 70"):
        for _ in loaded.train:
            pass


def test_explicit_validation_data_leaves_the_training_data_whole():
    stream = tf.data.Dataset.from_tensor_slices(
        (np.zeros((40, 4, 4, 1), np.float32), np.arange(40) % 2)
    )
    loaded = data.from_dataset(
        stream, num_classes=2, validation_data=stream.take(8), batch_size=40
    )
    assert loaded.num_examples == {"train": 40, "validation": 8, "test": None}
    assert len(next(iter(loaded.train))[1]) == 40


def test_a_user_dataset_trains_a_distiller():
    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), np.uint8)
    stream = tf.data.Dataset.from_tensor_slices((images, np.arange(64) % 2))
    loaded = data.from_dataset(stream, num_classes=2, batch_size=16)

    def model(name):
        return tf.keras.Sequential(
            [tf.keras.Input(loaded.input_shape), tf.keras.layers.Flatten(),
             tf.keras.layers.Dense(loaded.num_classes)], name=name)

    distiller = tfkd.Distiller(teacher=model("teacher"), student=model("student"))
    distiller.compile(optimizer="sgd")
    history = distiller.fit(loaded.train, validation_data=loaded.validation,
                            epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _stream(shape=(8, 8, 1), label_dtype=tf.int64):
    return tf.data.Dataset.from_tensor_slices(
        (np.zeros((4,) + shape, np.uint8), np.zeros(4, label_dtype.as_numpy_dtype))
    )


@pytest.mark.parametrize(
    "arguments, error, pattern",
    [
        ({"num_classes": None}, ValueError, "`num_classes`.*does not say"),
        ({"num_classes": 2.5}, TypeError, "`num_classes`"),
        ({"num_classes": 1}, ValueError, "`num_classes`.*>= 2"),
        ({"dataset": np.zeros((4, 8, 8, 1))}, TypeError, "`dataset`.*tf.data.Dataset"),
        ({"dataset": _stream().batch(2)}, ValueError, "`dataset`.*unbatched"),
        ({"dataset": _stream(shape=(2, 8, 8, 1))}, ValueError, "`dataset`.*unbatched"),
        ({"dataset": _stream(label_dtype=tf.float32)}, ValueError, "`dataset`.*integer"),
        ({"dataset": tf.data.Dataset.range(3)}, ValueError, "`dataset`.*pairs"),
        ({"dataset": _stream().repeat()}, ValueError, "`validation_data`.*forever"),
        ({"test": [1, 2]}, TypeError, "`test`"),
        ({"validation_data": _stream().batch(2)}, ValueError, "`validation_data`"),
        ({"class_names": ["a"]}, ValueError, "`class_names`"),
        ({"batch_size": 0}, ValueError, "`batch_size`"),
        ({"shuffle_buffer": 0}, ValueError, "`shuffle_buffer`"),
        ({"validation_fraction": "0.1"}, ValueError, "`validation_fraction`"),
        ({"image_size": 32}, TypeError, "`image_size`"),
        ({"channels": 2}, ValueError, "`channels`"),
    ],
)
def test_bad_arguments_are_named(arguments, error, pattern):
    arguments = {"dataset": _stream(), "num_classes": 2, **arguments}
    with pytest.raises(error, match=pattern):
        data.from_dataset(arguments.pop("dataset"), **arguments)


def test_images_of_varying_size_need_an_image_size():
    stream = tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros((5, 6, 3), np.uint8), 0)]),
        output_signature=(
            tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int32)
        ),
    )
    with pytest.raises(ValueError, match="`image_size`.*no fixed size"):
        data.from_dataset(stream, num_classes=2)
    loaded = data.from_dataset(stream, num_classes=2, image_size=(4, 4))
    assert loaded.input_shape == (4, 4, 3)


def test_load_points_a_dataset_to_from_dataset():
    with pytest.raises(TypeError, match="`name`.*from_dataset"):
        data.load(_stream())
