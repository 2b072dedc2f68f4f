"""Datasets for distillation, offline first.

- `tfkd.data.load(name, ...)`: an image-classification dataset as batched,
  prefetched `tf.data` pipelines (`ImageDataset`); Fashion-MNIST offline,
  any other name streamed from `tensorflow-datasets` (`tfds_datasets`).
- `tfkd.data.from_dataset(dataset, num_classes=...)`: the same pipelines
  from your own `tf.data.Dataset` of `(image, label)` pairs.
- `tfkd.data.pipelines`: the lazy steps they share (preprocessing,
  batching, a streaming class-balanced subset, a held-out split).
- `tfkd.data.idx`: reading and writing the IDX files MNIST-style datasets
  ship in, verified.
"""

from tfkd.data import idx
from tfkd.data import pipelines
from tfkd.data.loading import FASHION_MNIST_CLASS_NAMES
from tfkd.data.loading import FASHION_MNIST_DIR_ENV
from tfkd.data.image_dataset import ImageDataset
from tfkd.data.loading import balanced_subset
from tfkd.data.loading import fashion_mnist_directories
from tfkd.data.loading import load
from tfkd.data.loading import load_fashion_mnist_arrays
from tfkd.data.pipelines import preprocess
from tfkd.data.user_datasets import from_dataset

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_DIR_ENV",
    "ImageDataset",
    "balanced_subset",
    "fashion_mnist_directories",
    "from_dataset",
    "idx",
    "load",
    "load_fashion_mnist_arrays",
    "pipelines",
    "preprocess",
]
