"""Writing a sharded cache: each worker's shard builds, then `finalize`.

The layout and the reading side are `tfkd.cache.shards`. Each shard is
built like any cache (`tfkd.cache.builder`: a marked partial directory
renamed into place under the shard's own lock, `<root>/shard-i-of-N.lock`),
so workers build their shards in parallel. The root is created and marked
as tfkd's (`tfkd.cache.owned`) under the root's lock (`<root>.lock`, next
to it), which `finalize` also holds while it reads the shards and writes
the top-level `metadata.json`: finalizing workers run one at a time, and a
rebuild never writes shards into a directory tfkd did not make.
"""

import dataclasses
import fnmatch
import hashlib
import os
import time

from tfkd.cache import batches
from tfkd.cache import builder
from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.cache import locking
from tfkd.cache import owned
from tfkd.cache import reader
from tfkd.cache import shards
from tfkd.utils import files
from tfkd.utils import ownership

_POLL_SECONDS = 0.5


def _prepare_root(path, overwrite):
    """Makes `path` a sharded root tfkd owns; call under the root's lock."""
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)):
        raise FileExistsError(
            f"A file exists at {path!r} ({ownership.describe(path)}); expected "
            "a directory."
        )
    top = os.path.join(path, format_lib.METADATA_FILE)
    if os.path.lexists(top):
        if not overwrite:
            raise FileExistsError(
                f"A finished cache already exists at {path!r}. Open it with "
                "`TeacherCache.open(path)`, or pass overwrite=True to "
                "rebuild its shards."
            )
        if ownership.marked_kind(path) == owned.SHARDED_KIND:
            owned.make_root(path)  # checks it holds only a root's entries
            os.remove(top)  # unfinished until every shard is new
            return
        # An unsharded cache, or a root from a tfkd without markers:
        # replaced whole when verifiably tfkd's (a ForeignPathError if not).
        owned.remove(path, "sharded teacher cache")
    owned.make_root(path)


def build_shards(teacher, dataset, path, options, num_shards, indices):
    """Builds the shards `indices` of a sharded cache at `path`.

    Shard i is `dataset.shard(num_shards, i)`, built like any cache into
    `<path>/shard-i-of-N` (atomic rename, checksummed files, its own lock).
    The top-level metadata is left to `finalize`; a rebuild
    (`options.overwrite`) removes it first, so the cache reads as
    unfinished until every shard is new.

    Args:
        teacher: The `keras.Model`.
        dataset: The whole `tf.data.Dataset` of batches.
        path: The sharded cache's directory (created and marked if
            missing or empty).
        options: `builder.BuildOptions`.
        num_shards: The shard count.
        indices: The shards to build here.

    Raises:
        FileExistsError: if `path` holds a finished cache, or a shard to
            build exists, and `options.overwrite` is False.
        ForeignPathError: if `path` holds anything tfkd did not make.
    """
    path = os.fspath(path)
    with locking.DestinationLock(path):
        _prepare_root(path, options.overwrite)
    for index in indices:
        shard_options = dataclasses.replace(options, shard=(index, num_shards))
        builder.build(
            teacher,
            batches.shard(dataset, num_shards, index),
            os.path.join(path, shards.shard_name(index, num_shards)),
            shard_options,
        )


def _wait_for_shards(path, num_shards, timeout):
    deadline = time.monotonic() + timeout
    missing = shards.missing_shards(path, num_shards)
    while missing and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        missing = shards.missing_shards(path, num_shards)
    if missing:
        raise FileNotFoundError(
            f"Sharded teacher cache at {path!r}: shards {missing} of "
            f"{num_shards} are not built yet (waited {timeout:g} s). Build "
            "them with TeacherCache.build(..., num_shards="
            f"{num_shards}, shard_index=i), then call "
            "TeacherCache.finalize(path)."
        )


def _read_shards(path, num_shards):
    """Each shard's checked metadata and the sha256 of its bytes."""
    metadatas, digests = [], []
    root_fd = reader.open_directory(path)
    try:
        for index in range(num_shards):
            name = shards.shard_name(index, num_shards)
            shard_path = os.path.join(path, name)
            try:
                shard_fd = reader.open_subdirectory(root_fd, name, shard_path)
            except FileNotFoundError:
                raise errors.InvalidCacheError(
                    f"Invalid sharded teacher cache at {path!r}: shard "
                    f"{index} ({name}) disappeared while finalizing."
                ) from None
            try:
                data = reader.read_metadata_bytes_at(shard_fd, shard_path)
            finally:
                os.close(shard_fd)
            metadatas.append(reader.parse_metadata(data, shard_path))
            digests.append(hashlib.sha256(data).hexdigest())
    finally:
        os.close(root_fd)
    return metadatas, digests


def _check_root(path):
    """Refuses to write a top-level metadata into a directory not tfkd's."""
    extra = ownership.unexpected_entries(path, owned.SHARDED_ENTRIES)
    if extra:
        raise ownership.ForeignPathError(
            f"Refusing to finalize {path!r}: besides shard directories it "
            f"holds {extra}, which a sharded teacher cache made by tfkd "
            "does not. Move them away, or build the cache elsewhere."
        )
    if ownership.marked_kind(path) == owned.SHARDED_KIND:
        # Temporary files of finalizers that were killed: under the root's
        # lock no other finalizer is writing one.
        for name in os.listdir(path):
            if fnmatch.fnmatchcase(name, ".tmp-*"):
                os.remove(os.path.join(path, name))


def finalize(path, num_shards=None, timeout=0.0):
    """Writes the top-level metadata once every shard is built.

    Waits for the shards without a lock, then holds the root's lock while
    it reads every shard's metadata (through descriptors, links refused),
    checks that they agree, and writes the top level atomically.

    Args:
        path: The sharded cache's directory.
        num_shards: The shard count, or `None` to read it from the shard
            directories' names. Defaults to `None`.
        timeout: Seconds to wait for shards other workers are still
            building. Defaults to `0.0`.

    Returns:
        The top-level metadata dict.

    Raises:
        FileNotFoundError: if shards are still missing after `timeout`
            (the message lists them).
        InvalidCacheError: if a shard is invalid or disagrees with another.
        ForeignPathError: if the directory holds entries tfkd did not make.
    """
    path = os.fspath(path)
    if num_shards is None:
        num_shards = shards.count_from_directory(path)
    _wait_for_shards(path, num_shards, timeout)
    with locking.DestinationLock(path):
        _check_root(path)
        shard_metadatas, digests = _read_shards(path, num_shards)
        merged = shards.merged_metadata(path, num_shards, shard_metadatas, digests)
        files.write_json_atomically(
            os.path.join(path, format_lib.METADATA_FILE), merged, indent=2,
            sort_keys=True,
        )
        files.fsync_directory(path)
    return merged
