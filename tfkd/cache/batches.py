"""The datasets a cache is built from: `tf.data`, or any iterable of batches.

`TeacherCache.build` reads its dataset once, batch by batch, as NumPy
arrays. On TensorFlow that is usually a `tf.data.Dataset`; on every backend
it may be any finite, re-iterable collection of batches: a list of
`(inputs, labels)` tuples, a `keras.utils.PyDataset`, or an object whose
`__iter__` yields batches. Each batch is `(inputs, labels)` or `inputs`
alone; its tensors may be NumPy arrays or any backend's tensors.

A one-shot generator builds a cache too, but it cannot be read again, so
`check_fresh(dataset=...)` then needs a fresh one.
"""

import itertools

import keras
import numpy as np

from tfkd import backend_support
from tfkd.utils import validation

#: What `TeacherCache.build(dataset=...)` accepts, for error messages.
EXPECTED = (
    "a `tf.data.Dataset`, or a finite iterable of NumPy `(inputs, labels)` "
    "or `inputs` batches (a list of tuples, a `keras.utils.PyDataset`, a "
    "generator)"
)


def check_dataset(dataset):
    """Returns `dataset` if a cache can be built from it, else raises.

    Args:
        dataset: A finite `tf.data.Dataset`, or an iterable of batches.

    Returns:
        `dataset`.

    Raises:
        TypeError: for a value that is not such a collection (an array,
            a string, a dict, a non-iterable).
        ValueError: for an infinite `tf.data.Dataset`.

    Example:

    >>> import numpy as np
    >>> batches = [(np.zeros((2, 3)), np.zeros(2))]
    >>> check_dataset(batches) is batches
    True
    """
    if backend_support.is_tf_dataset(dataset):
        tf = backend_support.imported_tensorflow()
        if int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise validation.invalid_value(
                "dataset",
                "a finite dataset (one pass is read; remove `.repeat()`)",
                dataset,
            )
        return dataset
    if isinstance(dataset, keras.utils.PyDataset):
        if dataset.num_batches is None:
            raise validation.invalid_value(
                "dataset",
                "a finite keras.utils.PyDataset (its `num_batches` is None)",
                dataset,
            )
        return dataset
    iterable = hasattr(dataset, "__iter__")
    if not iterable or isinstance(dataset, (str, bytes, dict, np.ndarray)):
        raise validation.invalid_type("dataset", EXPECTED, dataset)
    return dataset


def iterate(dataset):
    """The batches of a dataset `check_dataset` accepted, in order.

    Example:

    >>> [b for b in iterate([1, 2])]
    [1, 2]
    """
    if isinstance(dataset, keras.utils.PyDataset):
        # Indexed, not iterated: a PyDataset's own `__iter__` may repeat.
        return (dataset[i] for i in range(dataset.num_batches))
    return iter(dataset)


def count(dataset):
    """The number of batches when known without reading them, else `None`.

    Example:

    >>> count([1, 2, 3]), count(iter([1]))
    (3, None)
    """
    if backend_support.is_tf_dataset(dataset):
        cardinality = int(dataset.cardinality())
        return cardinality if cardinality >= 0 else None
    if isinstance(dataset, keras.utils.PyDataset):
        return dataset.num_batches
    try:
        return len(dataset)
    except TypeError:
        return None


class _ShardOfBatches:
    """Batches `index, index + n, index + 2n, ...` of a re-iterable."""

    def __init__(self, dataset, num_shards, index):
        self._dataset = dataset
        self._num_shards = num_shards
        self._index = index

    def __iter__(self):
        return itertools.islice(
            iterate(self._dataset), self._index, None, self._num_shards
        )


def shard(dataset, num_shards, index):
    """Shard `index` of `num_shards`: every n-th batch, as `tf.data` does.

    For a `tf.data.Dataset` this is `dataset.shard(num_shards, index)`; for
    any other dataset the batches `b` with `b % num_shards == index`, the
    same batches.

    Example:

    >>> list(shard([0, 1, 2, 3, 4], 2, 1))
    [1, 3]
    """
    if backend_support.is_tf_dataset(dataset):
        return dataset.shard(num_shards, index)
    return _ShardOfBatches(dataset, num_shards, index)
