"""Opening a cache directory as one generation: pinned, inside, bounded.

A reader may open a cache while another process rebuilds it (one writer,
many readers: `tfkd.cache.format`). A rebuild renames the old directory
away and the new one into place, so a reader that opened files by path one
after the other could verify one generation's metadata and map the next
generation's arrays. Here every read goes through descriptors:

1. the cache directory is opened once (`open_directory`); every file and
   shard directory is then opened relative to that descriptor, so all of
   them come from the same directory, whatever is renamed meanwhile;
2. `metadata.json` is read through one descriptor, capped in size and
   depth before it is parsed (`tfkd.utils.untrusted`), then checked
   (`tfkd.cache.format.check_metadata`);
3. each array file is opened once (`O_NOFOLLOW`, a regular file, of
   exactly the size its metadata gives), its sha256 computed from that
   descriptor and that same descriptor memory-mapped (`map_arrays_at`).

A reader thus maps exactly the files it verified. When the rebuild removes
the old generation, an open reader keeps reading it (POSIX keeps unlinked
files alive while mapped); a reader caught between the two renames gets an
`InvalidCacheError` or `FileNotFoundError`, never a mixture. Symbolic
links inside a cache (array files, metadata, shard directories) are
refused; the cache path itself may be a link the user made.
"""

import hashlib
import os
import stat

import numpy as np

from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.utils import untrusted

# Checksums are computed over reads of this size: large enough that hashing
# runs at memory speed, small enough to keep memory flat.
_CHUNK_BYTES = 1 << 20
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _missing(path):
    leftovers = format_lib.leftover_partials(path)
    detail = (
        f" Found leftovers of interrupted builds: {leftovers} (a later build "
        "of this path removes those tfkd made whose builder has exited)."
        if leftovers
        else ""
    )
    return FileNotFoundError(
        f"No teacher cache at {path!r}.{detail} Build one with "
        "`TeacherCache.build(teacher, dataset, path)`."
    )


def open_directory(path):
    """Opens the cache directory `path`; the caller closes the descriptor.

    Args:
        path: The cache directory (it may itself be a symbolic link the
            user made; nothing inside it may be).

    Returns:
        A directory descriptor.

    Raises:
        FileNotFoundError: if there is nothing at `path`, naming leftovers
            of interrupted builds.
        InvalidCacheError: if `path` is not a directory.
    """
    path = os.fspath(path)
    try:
        return os.open(path, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        raise _missing(path) from None
    except NotADirectoryError:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it is not a directory."
        ) from None


def open_subdirectory(directory_fd, name, path):
    """Opens the shard directory `name` inside an open cache directory.

    Args:
        directory_fd: The cache directory's descriptor.
        name: A plain directory name (checked).
        path: The subdirectory's path, for messages.

    Returns:
        A directory descriptor; the caller closes it.

    Raises:
        FileNotFoundError: if there is no such entry.
        InvalidCacheError: for a symbolic link or a non-directory.
    """
    untrusted.check_plain_name(name, "shard directory")
    try:
        descriptor = os.open(name, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=directory_fd)
    except (NotADirectoryError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise errors.InvalidCacheError(
            f"Invalid teacher cache: refusing the shard directory {path!r}: "
            "it is a symbolic link or not a directory; tfkd follows no "
            "links inside a cache. Delete the cache and build it again."
        ) from None
    if not stat.S_ISDIR(os.fstat(descriptor).st_mode):  # pragma: no cover
        os.close(descriptor)
        raise errors.InvalidCacheError(
            f"Invalid teacher cache: {path!r} is not a directory."
        )
    return descriptor


def read_metadata_bytes_at(directory_fd, path):
    """The raw bytes of `metadata.json` in an open cache directory.

    Args:
        directory_fd: The cache directory's descriptor.
        path: The cache directory's path, for messages.

    Returns:
        The file's bytes (at most `untrusted.MAX_JSON_BYTES`).

    Raises:
        InvalidCacheError: if the file is missing (an unfinished build),
            a link, not a regular file or too large.
    """
    name = format_lib.METADATA_FILE
    metadata_path = os.path.join(path, name)
    try:
        with untrusted.open_regular_file_at(directory_fd, name, metadata_path) as handle:
            return untrusted.read_capped(
                handle, metadata_path, untrusted.MAX_JSON_BYTES
            )
    except FileNotFoundError:
        entries = os.listdir(directory_fd)
        if any(format_lib.shard_count_of_name(e) for e in entries):
            raise errors.InvalidCacheError(
                f"Unfinished sharded teacher cache at {path!r}: it holds "
                "shard directories but no top-level metadata.json. Build the "
                "missing shards, then call TeacherCache.finalize(path)."
            ) from None
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it has no {name}, so its "
            "build never finished (an interrupted build's partial "
            f"directory, or not a cache at all). {format_lib.RECOVERY_HINT}"
        ) from None
    except untrusted.UntrustedFileError as error:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: {error}"
        ) from None


def parse_metadata(data, path):
    """Parses and checks metadata bytes (`format.check_metadata`).

    Args:
        data: The bytes of `metadata.json`.
        path: The cache directory, for messages.

    Returns:
        The checked metadata dict.

    Raises:
        InvalidCacheError: for text that is not JSON, nested too deep, or
            metadata that does not hold (naming the field).
    """
    try:
        metadata = untrusted.parse_json(
            data, os.path.join(path, format_lib.METADATA_FILE)
        )
    except untrusted.UntrustedFileError as error:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: {format_lib.METADATA_FILE} "
            f"cannot be read ({error}). {format_lib.RECOVERY_HINT}"
        ) from None
    format_lib.check_metadata(path, metadata)
    return metadata


def read_metadata_at(directory_fd, path):
    """Reads and checks the metadata of an open cache directory.

    Returns:
        A tuple `(metadata, raw_bytes)`.

    Raises:
        InvalidCacheError: as `read_metadata_bytes_at` and `parse_metadata`.
    """
    data = read_metadata_bytes_at(directory_fd, path)
    return parse_metadata(data, path), data


def read_metadata(path):
    """Reads and checks the metadata of the cache at `path` (either layout).

    Args:
        path: The cache directory.

    Returns:
        The metadata dict.

    Raises:
        FileNotFoundError: if there is no directory at `path`; the message
            lists leftovers of interrupted builds.
        InvalidCacheError: if the build never finished (no metadata), the
            metadata is unreadable, too large or too deep, or does not
            hold (naming the field).

    Example:

    >>> read_metadata("no/such/cache")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No teacher cache at 'no/such/cache'. Build one with `TeacherCache.build(teacher, dataset, path)`.
    """
    path = os.fspath(path)
    descriptor = open_directory(path)
    try:
        return read_metadata_at(descriptor, path)[0]
    finally:
        os.close(descriptor)


def _map(handle, spec):
    dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
    if format_lib.expected_bytes(spec) == 0:  # mmap cannot map 0 bytes
        empty = np.zeros(shape, dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(handle, dtype=dtype, mode="r", shape=shape)


def _sha256_of_descriptor(descriptor, size):
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(descriptor, min(_CHUNK_BYTES, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def map_arrays_at(directory_fd, path, metadata, checksums=True):
    """Verifies and memory-maps every array of an open cache directory.

    Each file is opened once: checked to be a regular file (no link) of
    exactly the size its metadata gives, with `checksums` its sha256
    computed from that descriptor, and that descriptor is mapped. Sizes
    are checked before mapping, so a metadata claiming huge shapes never
    maps more than the real file.

    Args:
        directory_fd: The cache directory's descriptor.
        path: Its path, for messages.
        metadata: Its checked metadata.
        checksums: Whether to compare sha256 digests too (reads every
            byte once). Defaults to `True`.

    Returns:
        A dict from array name to a read-only `np.memmap`.

    Raises:
        InvalidCacheError: naming the first file that is missing, a link,
            truncated (or too long) or corrupted.
    """
    arrays = {}
    for name, spec in sorted(metadata["arrays"].items()):
        file_path = os.path.join(path, spec["file"])
        try:
            handle = untrusted.open_regular_file_at(
                directory_fd, spec["file"], file_path
            )
        except FileNotFoundError:
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: the file {spec['file']!r}"
                f" is missing. {format_lib.RECOVERY_HINT}"
            ) from None
        except untrusted.UntrustedFileError as error:
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: {error}"
            ) from None
        with handle:
            descriptor = handle.fileno()
            expected = format_lib.expected_bytes(spec)
            actual = os.fstat(descriptor).st_size
            if actual != expected:
                raise errors.InvalidCacheError(
                    f"Invalid teacher cache at {path!r}: {spec['file']!r} "
                    f"holds {actual} bytes, expected {expected} for {name} of "
                    f"shape {tuple(spec['shape'])} and dtype {spec['dtype']} "
                    f"({'truncated' if actual < expected else 'too long'}). "
                    f"{format_lib.RECOVERY_HINT}"
                )
            if checksums and _sha256_of_descriptor(descriptor, expected) != spec["sha256"]:
                raise errors.InvalidCacheError(
                    f"Invalid teacher cache at {path!r}: the checksum of "
                    f"{spec['file']!r} does not match its metadata (the file "
                    "was corrupted or modified after the build). "
                    f"{format_lib.RECOVERY_HINT}"
                )
            arrays[name] = _map(handle, spec)
    if format_lib.TOP_K_INDICES in arrays:
        _check_class_indices(path, metadata, arrays[format_lib.TOP_K_INDICES])
    return arrays


def _check_class_indices(path, metadata, indices):
    """Top-k class indices must name classes: else the stream's scatter
    fails with a raw TensorFlow error (or writes out of bounds)."""
    classes = metadata["classes"]
    flat = np.asarray(indices).reshape(-1)
    step = _CHUNK_BYTES // max(flat.itemsize, 1)
    for start in range(0, flat.size, step):
        chunk = flat[start:start + step]
        if chunk.size and (chunk.min() < 0 or chunk.max() >= classes):
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: "
                f"{format_lib.array_file(format_lib.TOP_K_INDICES)!r} holds "
                f"class indices outside [0, classes = {classes}) "
                f"(from {int(chunk.min())} to {int(chunk.max())}). "
                f"{format_lib.RECOVERY_HINT}"
            )


def check_mapped(path, metadata, arrays):
    """Re-computes the sha256 of mapped arrays against their metadata.

    Hashes the very bytes a reader streams (the pinned maps), in chunks.

    Args:
        path: The cache directory, for messages.
        metadata: Its metadata.
        arrays: The maps from `map_arrays_at`.

    Raises:
        InvalidCacheError: naming the first array whose digest differs.
    """
    for name, spec in sorted(metadata["arrays"].items()):
        flat = np.asarray(arrays[name]).reshape(-1).view(np.uint8)
        digest = hashlib.sha256()
        for start in range(0, flat.size, _CHUNK_BYTES):
            digest.update(flat[start:start + _CHUNK_BYTES])
        if digest.hexdigest() != spec["sha256"]:
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: the checksum of "
                f"{spec['file']!r} does not match its metadata (the file "
                "was corrupted or modified after the build). "
                f"{format_lib.RECOVERY_HINT}"
            )
