"""Order fingerprints: what ties a logits-only cache to its input pipeline.

A cache built with `store_inputs=False` keeps the teacher's outputs only,
keyed by each example's position in the (deterministic) pipeline it was
built from. At training time `TeacherCache.attach` re-joins them with that
pipeline, so a pipeline that has since changed its order or its length
would silently pair images with another image's logits. To catch that the
build records, for every block of `ROWS_PER_BLOCK` consecutive examples, a
16-byte BLAKE2b digest of the block, and `attach` recomputes it as the
blocks stream by.

A block's digest covers, in order, every example's label bytes and a
sample of its input: `INPUT_SAMPLES` elements at evenly spaced positions of
the flattened input (all of them for smaller inputs), plus the inputs'
dtype and shape. That is cheap (a few hundred bytes hashed per example,
whatever the image size) and catches a reordering, a dropped, added or
shifted example, a new label, a new normalisation or resizing. It is a
check of order and length, not of every pixel: a change confined to
unsampled pixels passes (the multiset data fingerprint of the whole
inputs, `TeacherCache.check_fresh(dataset=...)`, catches those, at the
cost of hashing every byte).

The overhead is 16 bytes per 1,024 examples, in the metadata.
"""

import hashlib

import numpy as np

#: Consecutive examples covered by one digest.
ROWS_PER_BLOCK = 1024
#: Input elements hashed per example (evenly spaced over the flat input).
INPUT_SAMPLES = 64
#: Length of a digest in hex characters (16 bytes).
DIGEST_HEX_CHARS = 32


def sample_positions(row_size):
    """Flat positions of the input elements that enter a digest.

    Args:
        row_size: Number of elements of one example's input.

    Returns:
        A sorted int64 array of at most `INPUT_SAMPLES` positions.

    Example:

    >>> sample_positions(4).tolist()
    [0, 1, 2, 3]
    >>> len(sample_positions(28 * 28))
    64
    """
    if row_size <= INPUT_SAMPLES:
        return np.arange(row_size, dtype=np.int64)
    return np.linspace(0, row_size - 1, INPUT_SAMPLES).astype(np.int64)


def block_digest(inputs, labels):
    """The digest of one block of consecutive examples.

    Args:
        inputs: Array `(rows, *input_shape)`, the block's inputs as the
            pipeline yields them.
        labels: Array `(rows, *label_shape)`, their labels.

    Returns:
        32 hex characters.

    Example:

    >>> x = np.zeros((3, 2, 2), "float32")
    >>> y = np.array([0, 1, 2], "int32")
    >>> block_digest(x, y) == block_digest(x, y[::-1])
    False
    """
    inputs = np.asarray(inputs)
    labels = np.ascontiguousarray(labels)
    rows = inputs.shape[0]
    flat = inputs.reshape(rows, -1)
    sampled = np.ascontiguousarray(flat[:, sample_positions(flat.shape[1])])
    digest = hashlib.blake2b(digest_size=16)
    spec = f"{inputs.dtype.str}{inputs.shape[1:]}|{labels.dtype.str}{labels.shape[1:]}"
    digest.update(spec.encode())
    for example_sample, example_label in zip(sampled, labels):
        digest.update(example_sample)
        digest.update(example_label)
    return digest.hexdigest()


def block_count(rows):
    """Number of blocks over `rows` examples (the last may be shorter)."""
    return -(-rows // ROWS_PER_BLOCK)


class BlockHasher:
    """Digests consecutive blocks of examples fed in batches of any size.

    Example:

    >>> hasher = BlockHasher()
    >>> x = np.zeros((1500, 3), "float32"); y = np.zeros(1500, "int32")
    >>> hasher.update(x[:700], y[:700]); hasher.update(x[700:], y[700:])
    >>> digests = hasher.close()
    >>> digests == [block_digest(x[:1024], y[:1024]),
    ...             block_digest(x[1024:], y[1024:])]
    True
    """

    def __init__(self):
        self._pending = []  # (inputs, labels) chunks of the open block
        self._pending_rows = 0
        self.digests = []
        self.rows = 0  # examples fed so far

    def update(self, inputs, labels):
        """Adds a batch `(inputs, labels)` of the next examples."""
        start = 0
        rows = len(inputs)
        self.rows += rows
        while start < rows:
            take = min(ROWS_PER_BLOCK - self._pending_rows, rows - start)
            self._pending.append(
                (inputs[start:start + take], labels[start:start + take])
            )
            self._pending_rows += take
            start += take
            if self._pending_rows == ROWS_PER_BLOCK:
                self._flush()

    def _flush(self):
        inputs = np.concatenate([chunk[0] for chunk in self._pending])
        labels = np.concatenate([chunk[1] for chunk in self._pending])
        self.digests.append(block_digest(inputs, labels))
        self._pending, self._pending_rows = [], 0

    def close(self):
        """Digests the last, partial block; returns the list of digests."""
        if self._pending_rows:
            self._flush()
        return self.digests


def input_spec(inputs, labels):
    """The dtypes and per-example shapes a re-joined pipeline must yield.

    Args:
        inputs: One batch of inputs `(batch, *input_shape)`.
        labels: Its labels `(batch, *label_shape)`.

    Returns:
        A dict with `dtype`, `shape`, `label_dtype` and `label_shape`
        (what a logits-only cache records as its `"inputs"` entry).

    Example:

    >>> input_spec(np.zeros((2, 28, 28), "float32"), np.zeros(2, "int32"))
    {'dtype': '<f4', 'shape': [28, 28], 'label_dtype': '<i4', 'label_shape': []}
    """
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    return {
        "dtype": inputs.dtype.str,
        "shape": [int(d) for d in inputs.shape[1:]],
        "label_dtype": labels.dtype.str,
        "label_shape": [int(d) for d in labels.shape[1:]],
    }
