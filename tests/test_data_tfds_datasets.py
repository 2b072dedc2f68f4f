"""tfkd.data.load with a tfds name: streamed by tfds, never materialised.

The datasets are real tfds builders prepared into a temporary directory
(no network): 300 training images whose first two pixels store their
index, in three unbalanced classes (150/90/60).
"""

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from tfkd import data  # noqa: E402
from tfkd.data import tfds_datasets  # noqa: E402

N_TRAIN, N_TEST = 300, 20


def _label(index):
    return 0 if index % 10 < 5 else (1 if index % 10 < 8 else 2)


def _image(index, shape=(6, 6, 1)):
    image = np.zeros(shape, np.uint8)
    image[0, 0, 0], image[0, 1, 0] = index % 256, index // 256
    return image


class TfkdStreamIndexed(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(6, 6, 1)),
                    "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(range(N_TRAIN)),
            "test": self._generate_examples(range(1000, 1000 + N_TEST)),
        }

    def _generate_examples(self, indices):
        for index in indices:
            yield index, {"image": _image(index), "label": _label(index)}


class TfkdStreamVarying(tfds.core.GeneratorBasedBuilder):
    """Images of several sizes, as in ImageNet-like datasets."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for index in range(n):
            size = 5 + index % 4
            image = np.full((size, size + 2, 3), 255, np.uint8)
            yield index, {"image": image, "label": index % 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    for builder in (TfkdStreamIndexed, TfkdStreamVarying):
        builder(data_dir=str(directory)).download_and_prepare()
    return str(directory)


@pytest.fixture
def reads(monkeypatch):
    """Counts the examples tfds's `as_dataset` hands out, and how it is called."""
    counter = tf.Variable(0, dtype=tf.int64)
    calls = []
    as_dataset = tfds.core.DatasetBuilder.as_dataset

    def counting_as_dataset(self, *args, **kwargs):
        calls.append(kwargs)
        dataset = as_dataset(self, *args, **kwargs)
        # A stateful map: tf.data neither parallelizes nor reorders it.
        return dataset.map(
            lambda image, label: (image, label + 0 * counter.assign_add(1))
        )

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", counting_as_dataset)
    return counter, calls


def _ids(images):
    pixels = np.rint(np.asarray(images)[:, 0, :2, 0] * 255).astype(int)
    return pixels[:, 0] + 256 * pixels[:, 1]


def _all(dataset):
    ids, labels = [], []
    for images, batch_labels in dataset:
        ids.append(_ids(images))
        labels.append(batch_labels.numpy())
    return np.concatenate(ids), np.concatenate(labels)


def test_loading_reads_no_example_and_one_batch_reads_about_one_batch(data_dir, reads):
    counter, calls = reads
    loaded = data.load(
        "tfkd_stream_indexed", data_dir=data_dir, download=False, batch_size=8,
        shuffle_buffer=16,
    )
    assert int(counter.numpy()) == 0
    assert calls and all("batch_size" not in c or c["batch_size"] is None for c in calls)
    assert all(c["read_config"].try_autocache is False for c in calls)
    images, labels = next(iter(loaded.train))
    assert images.shape == (8, 6, 6, 1) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    # The shuffle buffer, the first batch and a few prefetched ones, out of 270.
    assert 8 <= int(counter.numpy()) <= 16 + 8 * 8


def test_metadata_comes_from_tfds_info(data_dir):
    loaded = data.load(
        "tfkd_stream_indexed", data_dir=data_dir, download=False,
        validation_fraction=0.1, image_size=(12, 12), channels=3,
    )
    assert loaded.num_classes == 3 and loaded.class_names == ("a", "b", "c")
    assert loaded.input_shape == (12, 12, 3)
    assert loaded.num_examples == {"train": 270, "validation": 30, "test": 20}
    images, _ = next(iter(loaded.validation))
    assert images.shape[1:] == (12, 12, 3)


def test_validation_is_disjoint_from_train_and_test_is_the_test_split(data_dir):
    loaded = data.load(
        "tfkd_stream_indexed", data_dir=data_dir, download=False,
        validation_fraction=0.2, batch_size=32,
    )
    train_ids, _ = _all(loaded.train)
    validation_ids, _ = _all(loaded.validation)
    test_ids, _ = _all(loaded.test)
    assert len(train_ids) == 240 and len(validation_ids) == 60
    assert not set(train_ids) & set(validation_ids)
    assert set(train_ids) | set(validation_ids) == set(range(N_TRAIN))
    assert set(test_ids) == set(range(1000, 1000 + N_TEST))
    # The training split is shuffled every epoch, the validation split not.
    np.testing.assert_array_equal(validation_ids, _all(loaded.validation)[0])
    assert not np.array_equal(train_ids, _all(loaded.train)[0])


def test_a_class_balanced_subset_by_streaming(data_dir, reads):
    counter, _ = reads
    loaded = data.load(
        "tfkd_stream_indexed", data_dir=data_dir, download=False, batch_size=7,
        train_examples=31, validation_fraction=0.2,
    )
    assert int(counter.numpy()) == 0
    assert loaded.num_examples["train"] == 31
    ids, labels = _all(loaded.train)
    assert sorted(np.bincount(labels, minlength=3).tolist()) == [10, 10, 11]
    np.testing.assert_array_equal(labels, [_label(i) for i in ids])
    validation_ids, _ = _all(loaded.validation)
    assert not set(ids) & set(validation_ids)
    # The same subset every epoch, in a new order.
    again, _ = _all(loaded.train)
    assert set(again) == set(ids) and len(again) == 31
    # One streaming pass reads until class "c" (1 in 5 examples) has its
    # quota, about 55 examples (plus the validation pass), not all 240.
    counter.assign(0)
    _all(loaded.train)
    assert int(counter.numpy()) < 120


def test_images_of_varying_size_are_resized_in_the_pipeline(data_dir):
    with pytest.raises(ValueError, match="`image_size`.*no fixed size"):
        data.load("tfkd_stream_varying", data_dir=data_dir, download=False)
    loaded = data.load(
        "tfkd_stream_varying", data_dir=data_dir, download=False, batch_size=4,
        image_size=(8, 8), validation_fraction=0.0,
    )
    assert loaded.input_shape == (8, 8, 3)
    assert loaded.num_examples == {"train": 20, "validation": 0, "test": 4}
    assert list(loaded.validation) == []
    images, _ = next(iter(loaded.train))
    assert images.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(images.numpy(), 1.0)


def test_a_missing_tfds_dataset_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="'tfkd_stream_indexed' is not prepared"):
        data.load("tfkd_stream_indexed", data_dir=str(tmp_path), download=False)


def test_the_loader_is_lazy_about_tensorflow_datasets():
    # tfds is imported only when a tfds name is loaded.
    import subprocess
    import sys

    code = (
        "import sys, tfkd.data; "
        "print('tensorflow_datasets' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().endswith("False")
    assert callable(tfds_datasets.load_tfds)
