"""The shards a `TeacherCache` reads: all of them, or one worker's share.

An unsharded cache is one part, its own directory. A sharded cache
(`tfkd.cache.shards`) opened with `shard=(i, n)` is the parts s with
`s % n == i`; only their metadata is read, only their files are verified
and memory-mapped (when the cache is opened, pinned: `tfkd.cache.reader`).
`opened` records the directories whose arrays were used so far: the
documented way to see that a worker touched its own shards only.
"""

import os

from tfkd import backend_support
from tfkd.cache import concatenated
from tfkd.cache import format as format_lib
from tfkd.cache import reader
from tfkd.cache import shards
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow("tf.data sharding of a teacher cache")


class ShardSelection:
    """The selected parts of a cache, opened and pinned (`tfkd.cache.reader`).

    Use `ShardSelection.open`. Every selected part's metadata is read and
    checked, and its array files verified and memory-mapped, when it is
    opened, all through descriptors of one directory: the object then reads
    that generation of the cache whatever happens at `path` afterwards.

    Args:
        path: The cache directory.
        metadata: Its checked top-level metadata.
        sharded: Whether it is a sharded cache.
        num_shards: Its shard count (1 when unsharded).
        indices: The selected shard indices.
        parts: `(part_path, part_metadata)` of each selected part.
        maps: The mapped arrays of each selected part.
    """

    def __init__(self, path, metadata, sharded, num_shards, indices, parts, maps):
        self.path = os.fspath(path)
        self.sharded = sharded
        self.num_shards = num_shards
        self.indices = indices
        self.parts = parts
        self._maps = maps
        # Every shard belongs to one worker when a subset is selected.
        self.is_subset = len(self.indices) < self.num_shards
        self.opened = []
        self._arrays = None
        self.metadata = dict(
            metadata,
            examples=sum(m["examples"] for _, m in self.parts),
            rows=sum(m["rows"] for _, m in self.parts),
        )

    @classmethod
    def open(cls, path, shard=None, checksums=True):
        """Opens, verifies and maps the parts of `path` that `shard` selects.

        Args:
            path: The cache directory.
            shard: `None` (every part), `(index, count)` or `"auto"` (from
                `TF_CONFIG`). Defaults to `None`.
            checksums: Whether to verify every selected file's sha256, not
                only its size. Defaults to `True`.

        Returns:
            A `ShardSelection`.

        Raises:
            FileNotFoundError: if there is no cache at `path`.
            ValueError: for a `shard` a worker cannot take.
            InvalidCacheError: if the metadata or a selected part is
                missing, invalid, truncated or corrupted.
        """
        path = os.fspath(path)
        root_fd = reader.open_directory(path)
        try:
            metadata, _ = reader.read_metadata_at(root_fd, path)
            if metadata.get("layout") == shards.LAYOUT:
                num_shards = metadata["num_shards"]
                indices = shards.resolve_selection(shard, num_shards)
                opened = [
                    shards.read_shard(root_fd, path, metadata, index, checksums)
                    for index in indices
                ]
                parts = [(p, m) for p, m, _ in opened]
                maps = [arrays for _, _, arrays in opened]
                return cls(path, metadata, True, num_shards, indices, parts, maps)
            _check_unsharded_selection(shard)
            maps = [reader.map_arrays_at(root_fd, path, metadata, checksums)]
            return cls(path, metadata, False, 1, [0], [(path, metadata)], maps)
        finally:
            os.close(root_fd)

    @property
    def auto_shard_policy(self):
        """`OFF` when the rows are a worker's own shards, else `DATA`."""
        policy = tf.data.experimental.AutoShardPolicy
        return policy.OFF if self.is_subset else policy.DATA

    def verify(self, checksums=True):
        """Re-checks every selected part's mapped bytes against its sha256.

        Sizes were checked when the parts were opened, and the maps cannot
        change size, so without `checksums` there is nothing to re-check.
        """
        if not checksums:
            return
        for (part_path, part_metadata), arrays in zip(self.parts, self._maps):
            reader.check_mapped(part_path, part_metadata, arrays)

    def part_arrays(self, position):
        """The memory-mapped arrays of the `position`-th selected part."""
        part_path, _ = self.parts[position]
        if part_path not in self.opened:
            self.opened.append(part_path)
        return self._maps[position]

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


def _check_unsharded_selection(shard):
    if shard is not None and shard != "auto":
        _, count = shards.check_shard(shard)
        if count > 1:
            raise validation.invalid_value(
                "shard",
                "None or 'auto' for an unsharded cache (build with "
                "num_shards=N to give each worker its own shards)",
                shard,
            )
