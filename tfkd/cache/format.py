"""The on-disk layout of a teacher cache: raw arrays, metadata, checksums.

A cache is one directory:

    <path>/
        metadata.json       written last; its presence marks a finished build
        inputs.bin          (rows, *input_shape)  stored input dtype
        labels.bin          (rows, *label_shape)  the dataset's label dtype
        logits.bin          (rows, classes)       float16 or float32
      or, with top-k storage, instead of logits.bin:
        top_k_values.bin    (rows, k)             the k largest logits
        top_k_indices.bin   (rows, k)             their classes (int16/int32)
        top_k_fill.bin      (rows,)               the logit of every other class

Each `.bin` file is the C-order little-endian bytes of one array, nothing
else, so `np.memmap(file, dtype, mode="r", shape=shape)` reads it without
loading it; dtype and shape live in `metadata.json`. (`.npy` would need the
row count in its header before the first row is written, and a streaming
build only knows it at the end.) The metadata also holds the sha256 of
every file, computed while the file was written, so opening a cache can
tell a truncated or corrupted file from a good one.

A build writes into a sibling `<path>.partial-<pid>-<token>` directory and
renames it to `<path>` only once everything, metadata last, is on disk: a
build killed at any point leaves no directory under `<path>` at all.
"""

import glob
import hashlib
import json
import os

import numpy as np

from tfkd.cache import errors
from tfkd.utils import files

#: Value of the metadata's "format" field.
FORMAT_NAME = "tfkd.TeacherCache"
#: Bumped whenever the layout changes incompatibly.
FORMAT_VERSION = 1
#: Name of the metadata file, written last.
METADATA_FILE = "metadata.json"
#: Infix of the directory a build writes into before renaming it.
PARTIAL_INFIX = ".partial-"

INPUTS = "inputs"
LABELS = "labels"
LOGITS = "logits"
TOP_K_VALUES = "top_k_values"
TOP_K_INDICES = "top_k_indices"
TOP_K_FILL = "top_k_fill"

# Checksums are computed over reads of this size: large enough that hashing
# runs at memory speed, small enough to keep memory flat.

_RECOVERY_HINT = (
    "Delete the directory and build the cache again, or open it with "
    "on_stale='rebuild' (and the teacher and dataset) to rebuild it."
)


def array_file(name):
    """File name of the array `name` inside a cache directory."""
    return f"{name}.bin"


def little_endian(dtype):
    """`dtype` in little-endian byte order (the only order on disk)."""
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


class ArrayWriter:
    """Appends the rows of one array to its file, hashing them as they go.

    Memory stays at one chunk of rows: nothing is kept after `append`.

    Args:
        directory: The (partial) cache directory.
        name: The array's name, e.g. `"inputs"`.
    """

    def __init__(self, directory, name):
        self.name = name
        self.path = os.path.join(directory, array_file(name))
        self._file = open(self.path, "wb")
        self._sha256 = hashlib.sha256()
        self._rows = 0
        self._dtype = None
        self._row_shape = None

    def append(self, rows):
        """Writes `rows`, an array of shape `(n, *row_shape)`.

        Raises:
            ValueError: if the row shape or dtype differs from the first
                chunk's (a dataset whose batches change shape or dtype).
        """
        rows = np.asarray(rows)
        dtype = little_endian(rows.dtype)
        if self._dtype is None:
            self._dtype, self._row_shape = dtype, rows.shape[1:]
        elif (dtype, rows.shape[1:]) != (self._dtype, self._row_shape):
            raise ValueError(
                f"Invalid value for argument `dataset`. Expected every batch "
                f"to have the same {self.name} shape and dtype. Received: "
                f"{self.name} of shape (batch, *{rows.shape[1:]}) and dtype "
                f"{rows.dtype} after batches of (batch, *{self._row_shape}) "
                f"and {self._dtype}"
            )
        rows = np.ascontiguousarray(rows, dtype=dtype)
        payload = memoryview(rows).cast("B")
        self._file.write(payload)
        self._sha256.update(payload)
        self._rows += rows.shape[0]

    def close(self):
        """Flushes the file to disk and returns its metadata entry."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {
            "file": array_file(self.name),
            "dtype": self._dtype.str,
            "shape": [self._rows, *(int(d) for d in self._row_shape)],
            "sha256": self._sha256.hexdigest(),
        }

    def abort(self):
        """Closes the file without flushing (the build failed)."""
        if not self._file.closed:
            self._file.close()


def write_metadata(directory, metadata):
    """Writes `metadata.json` durably; call it after every array is closed."""
    path = os.path.join(directory, METADATA_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def partial_directory(path, token):
    """Where a build of `path` writes before its atomic rename."""
    return f"{os.fspath(path)}{PARTIAL_INFIX}{os.getpid()}-{token}"


def leftover_partials(path):
    """Directories left by builds of `path` that never finished."""
    pattern = glob.escape(os.fspath(path)) + PARTIAL_INFIX + "*"
    return sorted(glob.glob(pattern))


def read_metadata(path):
    """Reads and checks the metadata of the cache at `path`.

    Args:
        path: The cache directory.

    Returns:
        The metadata dict.

    Raises:
        FileNotFoundError: if there is no directory at `path`; the message
            lists leftovers of interrupted builds.
        InvalidCacheError: if the build never finished (no metadata), the
            metadata is unreadable, or it is not a cache of this format.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        leftovers = leftover_partials(path)
        detail = (
            f" Found leftovers of interrupted builds (safe to delete): "
            f"{leftovers}."
            if leftovers
            else ""
        )
        raise FileNotFoundError(
            f"No teacher cache at {path!r}.{detail} Build one with "
            "`TeacherCache.build(teacher, dataset, path)`."
        )
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(metadata_path):
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it has no {METADATA_FILE}, "
            "so its build never finished (an interrupted build's partial "
            f"directory, or not a cache at all). {_RECOVERY_HINT}"
        )
    try:
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as error:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: {METADATA_FILE} cannot be "
            f"read ({error}). {_RECOVERY_HINT}"
        ) from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: {METADATA_FILE} does not "
            f"describe a {FORMAT_NAME}. {_RECOVERY_HINT}"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it uses format version "
            f"{metadata.get('format_version')!r} (written by tfkd "
            f"{metadata.get('tfkd_version')!r}) and this tfkd reads version "
            f"{FORMAT_VERSION}. {_RECOVERY_HINT}"
        )
    return metadata


def expected_bytes(spec):
    """The size in bytes an array file described by `spec` must have."""
    return int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize


def verify_arrays(path, metadata, checksums=True):
    """Checks every array file's presence, size and (optionally) checksum.

    Sizes catch truncation for free; checksums read every byte once (about
    a second per GB) and catch any corruption.

    Args:
        path: The cache directory.
        metadata: Its metadata dict.
        checksums: Whether to compare sha256 digests too. Defaults to
            `True`.

    Raises:
        InvalidCacheError: naming the first file that is missing,
            truncated (or too long) or corrupted.
    """
    path = os.fspath(path)
    for name, spec in sorted(metadata["arrays"].items()):
        file_path = os.path.join(path, spec["file"])
        if not os.path.isfile(file_path):
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: the file {spec['file']!r}"
                f" is missing. {_RECOVERY_HINT}"
            )
        expected, actual = expected_bytes(spec), os.path.getsize(file_path)
        if actual != expected:
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: {spec['file']!r} holds "
                f"{actual} bytes, expected {expected} for {name} of shape "
                f"{tuple(spec['shape'])} and dtype {spec['dtype']} "
                f"({'truncated' if actual < expected else 'too long'}). "
                f"{_RECOVERY_HINT}"
            )
        if checksums and files.sha256_of(file_path) != spec["sha256"]:
            raise errors.InvalidCacheError(
                f"Invalid teacher cache at {path!r}: the checksum of "
                f"{spec['file']!r} does not match its metadata (the file "
                f"was corrupted or modified after the build). {_RECOVERY_HINT}"
            )


def open_arrays(path, metadata):
    """Memory-maps every array of a verified cache, read-only.

    Returns:
        A dict from array name to a read-only `np.memmap`.
    """
    arrays = {}
    for name, spec in metadata["arrays"].items():
        arrays[name] = np.memmap(
            os.path.join(os.fspath(path), spec["file"]),
            dtype=np.dtype(spec["dtype"]),
            mode="r",
            shape=tuple(spec["shape"]),
        )
    return arrays
