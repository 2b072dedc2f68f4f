"""tfkd.data: offline Fashion-MNIST, tfds datasets, preprocessing."""

import numpy as np
import pytest
import tensorflow as tf

from tfkd import data
from tfkd.data import idx


def _write_tiny_fashion_mnist(directory, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        idx.write_idx(
            directory / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
        )
        idx.write_idx(
            directory / f"{prefix}-labels-idx1-ubyte.gz",
            (np.arange(n) % 10).astype(np.uint8),
        )


def test_fashion_mnist_from_a_directory_of_idx_files(tmp_path):
    _write_tiny_fashion_mnist(tmp_path / "fm")
    (x, y), (xt, yt) = data.load_fashion_mnist_arrays([tmp_path / "fm"], download=False)
    assert x.shape == (40, 28, 28) and xt.shape == (20, 28, 28)
    assert x.dtype == np.uint8 and set(y) == set(range(10))


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist_arrays([tmp_path / "nowhere"], download=False)


def test_environment_variable_directory_is_searched_first(tmp_path, monkeypatch):
    _write_tiny_fashion_mnist(tmp_path / "fm", n_train=30)
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / "fm"))
    (x, _), _ = data.load_fashion_mnist_arrays(download=False)
    assert len(x) == 30


def test_load_real_fashion_mnist_pipelines(fashion_mnist):
    dataset = data.load("fashion_mnist", batch_size=64, download=False)
    assert dataset.input_shape == (28, 28, 1)
    assert dataset.num_classes == 10 and dataset.class_names[0] == "T-shirt/top"
    assert dataset.num_examples == {"train": 54_000, "validation": 6_000, "test": 10_000}
    images, labels = next(iter(dataset.train))
    assert images.shape == (64, 28, 28, 1) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    test_images, _ = next(iter(dataset.test))
    expected = fashion_mnist[1][0][:64, :, :, None] / 255.0
    np.testing.assert_allclose(test_images.numpy(), expected, rtol=1e-6)


def test_resizing_channels_and_a_balanced_subset():
    dataset = data.load(
        "fashion_mnist", batch_size=50, image_size=(32, 32), channels=3,
        train_examples=200, download=False,
    )
    assert dataset.input_shape == (32, 32, 3)
    assert dataset.num_examples["train"] == 200
    labels = np.concatenate([y.numpy() for _, y in dataset.train])
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    images, _ = next(iter(dataset.train))
    assert images.shape == (50, 32, 32, 3)
    np.testing.assert_allclose(images[..., 0], images[..., 2])


def test_training_split_is_reshuffled_each_epoch_and_validation_is_not():
    dataset = data.load("fashion_mnist", batch_size=100, train_examples=500, download=False)
    first = [y.numpy() for _, y in dataset.train]
    second = [y.numpy() for _, y in dataset.train]
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    v1 = np.concatenate([y.numpy() for _, y in dataset.validation])
    v2 = np.concatenate([y.numpy() for _, y in dataset.validation])
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"batch_size": 0}, "`batch_size`"),
        ({"validation_fraction": 1.0}, "`validation_fraction`"),
        ({"channels": 2}, "`channels`"),
        ({"image_size": (32,)}, "`image_size`"),
    ],
)
def test_bad_arguments_are_named(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        data.load("fashion_mnist", download=False, **kwargs)


def test_balanced_subset_is_balanced_and_deterministic():
    labels = np.repeat(np.arange(5), [50, 10, 30, 30, 30])
    chosen = data.balanced_subset(labels, 40, seed=3)
    assert len(set(chosen.tolist())) == 40
    assert np.bincount(labels[chosen]).tolist() == [8] * 5
    np.testing.assert_array_equal(chosen, data.balanced_subset(labels, 40, seed=3))


def test_any_tfds_image_dataset_by_name(tmp_path):
    """A real tfds builder, prepared locally (no network), loads by name."""
    import tensorflow_datasets as tfds

    class TfkdTinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(8, 8, 3)),
                        "label": tfds.features.ClassLabel(names=["dark", "bright"]),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(40, 0),
                "test": self._generate_examples(10, 1),
            }

        def _generate_examples(self, n, seed):
            rng = np.random.default_rng(seed)
            for i in range(n):
                label = i % 2
                image = np.full((8, 8, 3), 200 if label else 30, np.uint8)
                image += rng.integers(0, 20, size=image.shape, dtype=np.uint8)
                yield i, {"image": image, "label": label}

    dataset = data.load(
        "tfkd_tiny_shapes", batch_size=8, data_dir=str(tmp_path),
        validation_fraction=0.25, image_size=(16, 16), channels=1,
    )
    assert dataset.class_names == ("dark", "bright")
    assert dataset.input_shape == (16, 16, 1)
    assert dataset.num_examples == {"train": 30, "validation": 10, "test": 10}
    images, labels = next(iter(dataset.test))
    bright = images.numpy().mean(axis=(1, 2, 3)) > 0.5
    np.testing.assert_array_equal(bright, labels.numpy() == 1)
