"""The shards a `TeacherCache` reads: all of them, or one worker's share.

An unsharded cache is one part, its own directory. A sharded cache
(`tfkd.cache.shards`) opened with `shard=(i, n)` is the parts s with
`s % n == i`; only their metadata is read, only their files are verified,
and only their arrays are memory-mapped, on first use. `opened` records the
directories memory-mapped so far: the documented way to see that a worker
touched its own shards only.
"""

import os

import tensorflow as tf

from tfkd.cache import concatenated
from tfkd.cache import format as format_lib
from tfkd.cache import shards
from tfkd.utils import validation


class ShardSelection:
    """The selected parts of a cache and their (lazily opened) arrays.

    Args:
        path: The cache directory.
        metadata: Its checked metadata (`format.read_metadata`).
        shard: `None` (every part), `(index, count)` or `"auto"` (from
            `TF_CONFIG`).

    Raises:
        ValueError: for a `shard` a worker cannot take.
        InvalidCacheError: if a selected shard is missing or inconsistent.
    """

    def __init__(self, path, metadata, shard=None):
        self.path = os.fspath(path)
        self.sharded = metadata.get("layout") == shards.LAYOUT
        if self.sharded:
            self.num_shards = metadata["num_shards"]
            self.indices = shards.resolve_selection(shard, self.num_shards)
            self.parts = [
                shards.read_shard(self.path, metadata, index)
                for index in self.indices
            ]
        else:
            if shard is not None and shard != "auto":
                index, count = shards.check_shard(shard)
                if count > 1:
                    raise validation.invalid_value(
                        "shard",
                        "None or 'auto' for an unsharded cache (build with "
                        "num_shards=N to give each worker its own shards)",
                        shard,
                    )
            self.num_shards = 1
            self.indices = [0]
            self.parts = [(self.path, metadata)]
        # Every shard belongs to one worker when a subset is selected.
        self.is_subset = len(self.indices) < self.num_shards
        self.opened = []
        self._arrays = None
        self.metadata = dict(
            metadata,
            examples=sum(m["examples"] for _, m in self.parts),
            rows=sum(m["rows"] for _, m in self.parts),
        )

    @property
    def auto_shard_policy(self):
        """`OFF` when the rows are a worker's own shards, else `DATA`."""
        policy = tf.data.experimental.AutoShardPolicy
        return policy.OFF if self.is_subset else policy.DATA

    def verify(self, checksums=True):
        """Checks every selected part's files (sizes, and sha256)."""
        for part_path, part_metadata in self.parts:
            format_lib.verify_arrays(part_path, part_metadata, checksums)

    def part_arrays(self, position):
        """The memory-mapped arrays of the `position`-th selected part."""
        part_path, part_metadata = self.parts[position]
        if part_path not in self.opened:
            self.opened.append(part_path)
        return format_lib.open_arrays(part_path, part_metadata)

    def arrays(self):
        """Dict from array name to the rows of all selected parts."""
        if self._arrays is None:
            per_part = [self.part_arrays(i) for i in range(len(self.parts))]
            if len(per_part) == 1:
                self._arrays = per_part[0]
            else:
                self._arrays = {
                    name: concatenated.ConcatenatedRows(
                        [arrays[name] for arrays in per_part]
                    )
                    for name in per_part[0]
                }
        return self._arrays

    @property
    def nbytes(self):
        """Bytes of the selected parts' array files."""
        return sum(
            format_lib.expected_bytes(spec)
            for _, part_metadata in self.parts
            for spec in part_metadata["arrays"].values()
        )
