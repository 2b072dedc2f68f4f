"""The rows of several shards' memory maps, read as one array."""

import numpy as np


class ConcatenatedRows:
    """Several arrays of the same row shape and dtype, indexed as one.

    Only what the stream needs: `shape`, `dtype`, `len` and indexing by an
    array of rows or a slice (rows are gathered from each part in turn, so
    only the parts touched are read).

    Args:
        parts: Arrays (e.g. read-only `np.memmap`s) `(rows_i, *row_shape)`.

    Example:

    >>> rows = ConcatenatedRows([np.arange(3), np.arange(10, 12)])
    >>> rows[np.array([4, 0, 3])].tolist()
    [11, 0, 10]
    >>> rows.shape
    (5,)
    """

    def __init__(self, parts):
        self.parts = list(parts)
        self.dtype = self.parts[0].dtype
        lengths = [part.shape[0] for part in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]),) + tuple(self.parts[0].shape[1:])

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(len(self)))
        rows = np.asarray(rows, dtype=np.int64)
        part_of_row = np.searchsorted(self.offsets[1:], rows, side="right")
        out = np.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        for part in np.unique(part_of_row):
            mask = part_of_row == part
            out[mask] = self.parts[part][rows[mask] - self.offsets[part]]
        return out
