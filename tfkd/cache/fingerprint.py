"""Fingerprints that tell whether a cache still matches its teacher and data.

Teacher: the sha256 of every weight's shape, dtype and bytes, in
`model.weights` order (trainable and not, so batch-norm statistics count).
Layer and variable names are left out: they change from one Python session
to the next (`dense` vs `dense_3`) while the model stays the same. Hashing
runs at roughly 1 GB/s, about 0.1 s for a 25 M-parameter ResNet-50.

Data: an order-independent (multiset) hash of the examples. Each example's
input and label bytes get a 128-bit BLAKE2b digest; the digests are summed
modulo 2**128 (Clarke et al., 2003, "Incremental multiset hash functions",
MSet-Add-Hash). Order independence matters because a training pipeline
reshuffles every epoch: the same examples in another order are the same
data. Any added, removed or changed example (a new subset, a new
normalisation) changes the sum, except with probability about 2**-128
for accidental changes; it is not meant to resist a deliberate forgery.
The cost is one pass over the data with no teacher inference: the
fingerprint of a build comes for free, and `TeacherCache.open(...,
dataset=...)` pays that one pass to check it. (Hashing only the first few
batches would be faster but misses changes further down, and depends on
the order a shuffled pipeline happens to produce.)
"""

import hashlib

import keras
import numpy as np

_SUM_MODULUS = 2**128


def teacher_fingerprint(model):
    """The sha256 of a model's weights, independent of layer names.

    Args:
        model: A `keras.Model`.

    Returns:
        A string `"sha256:<hex>"`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> teacher_fingerprint(model).startswith("sha256:")
    True
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(memoryview(value).cast("B"))
    return "sha256:" + digest.hexdigest()


def count_parameters(model):
    """Number of scalars in all of a model's weights."""
    return int(sum(np.prod(w.shape) for w in model.weights))


def _row_spec(array):
    return f"{array.dtype.str}{tuple(array.shape[1:])}"


class DataFingerprint:
    """Accumulates the multiset hash of `(input, label)` examples.

    Feed it batches in any order; equal multisets of examples give equal
    fingerprints.

    Example:

    >>> import numpy as np
    >>> x = np.arange(6, dtype="float32").reshape(3, 2)
    >>> y = np.array([0, 1, 2])
    >>> a, b = DataFingerprint(), DataFingerprint()
    >>> a.update(x, y)
    >>> b.update(x[::-1], y[::-1])
    >>> a.hexdigest() == b.hexdigest()
    True
    """

    def __init__(self):
        self.count = 0
        self._sum = 0
        self._spec = None

    def update(self, inputs, labels):
        """Adds a batch: `inputs` `(batch, ...)`, `labels` `(batch, ...)`."""
        inputs = np.ascontiguousarray(inputs)
        labels = np.ascontiguousarray(labels)
        spec = (_row_spec(inputs), _row_spec(labels))
        if self._spec is None:
            self._spec = spec
        elif spec != self._spec:
            # Differently typed data is different data; keep both in the
            # hash rather than failing, so `open` reports "data changed".
            self._spec = (self._spec, spec)
        total = self._sum
        for example_inputs, example_labels in zip(inputs, labels):
            digest = hashlib.blake2b(example_inputs, digest_size=16)
            digest.update(example_labels)
            total += int.from_bytes(digest.digest(), "little")
        self._sum = total % _SUM_MODULUS
        self.count += inputs.shape[0]

    def hexdigest(self):
        """The fingerprint: `"multiset-blake2b:<hex>"`, spec and count folded in."""
        summary = f"{self.count}|{self._spec}|{self._sum:032x}".encode()
        return "multiset-blake2b:" + hashlib.sha256(summary).hexdigest()


def dataset_fingerprint(batches, progbar=None):
    """Fingerprints an iterable of `(inputs, labels)` NumPy batches.

    Args:
        batches: Iterable of `(inputs, labels)` pairs of arrays.
        progbar: Optional `keras.utils.Progbar` advanced once per batch.
            Defaults to `None`.

    Returns:
        A `DataFingerprint` holding the hash and the example count.
    """
    fingerprint = DataFingerprint()
    for step, (inputs, labels) in enumerate(batches, start=1):
        fingerprint.update(inputs, labels)
        if progbar is not None:
            progbar.update(step)
    return fingerprint
