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

A logits-only cache (`store_inputs=False`, format version 2) has no
`inputs.bin` and no `labels.bin`: its `metadata.json` records instead the
inputs' dtype and shape and one digest per block of 1,024 examples
(`"order"`, see `tfkd.cache.row_blocks`). A sharded cache (version 2) is a
directory of such directories, one per shard, and a top-level
`metadata.json` listing them (see `tfkd.cache.shards`).

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
#: Bumped whenever the layout changes incompatibly. Version 2 adds
#: logits-only caches (`store_inputs: false`, `order` digests) and shards
#: (`tfkd.cache.shards`); a cache using neither is still written as 1.
FORMAT_VERSION = 2
#: The version of a cache with inputs, unsharded (readable by tfkd < 2).
FORMAT_VERSION_PLAIN = 1
#: Every version this tfkd reads.
READABLE_VERSIONS = (1, 2)
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
        if glob.glob(os.path.join(glob.escape(path), "shard-*-of-*")):
            raise errors.InvalidCacheError(
                f"Unfinished sharded teacher cache at {path!r}: it holds "
                "shard directories but no top-level metadata.json. Build the "
                "missing shards, then call TeacherCache.finalize(path)."
            )
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
    if metadata.get("format_version") not in READABLE_VERSIONS:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it uses format version "
            f"{metadata.get('format_version')!r} (written by tfkd "
            f"{metadata.get('tfkd_version')!r}) and this tfkd reads version "
            f"{FORMAT_VERSION}. {_RECOVERY_HINT}"
        )
    if metadata.get("layout") == "sharded":
        from tfkd.cache import shards  # shards builds on this module

        shards.check_sharded_structure(path, metadata)
    else:
        check_structure(path, metadata)
    return metadata


#: Dtypes an array file may hold (little-endian; `|` for one byte).
ALLOWED_DTYPES = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in (
        "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
        "int64", "float16", "float32", "float64",
    )
)
#: The arrays of each storage kind, as `metadata["outputs"]["storage"]`.
ARRAYS_BY_STORAGE = {
    "dense": frozenset({INPUTS, LABELS, LOGITS}),
    "top_k": frozenset(
        {INPUTS, LABELS, TOP_K_VALUES, TOP_K_INDICES, TOP_K_FILL}
    ),
}


def invalid_field(path, field, expected, received):
    """The `InvalidCacheError` of a metadata field that does not hold."""
    return _invalid_field(path, field, expected, received)


def _invalid_field(path, field, expected, received):
    return errors.InvalidCacheError(
        f"Invalid teacher cache at {path!r}: metadata field `{field}` must "
        f"be {expected}. Received: {received!r}. {_RECOVERY_HINT}"
    )


def _count(path, metadata, field, minimum):
    value = metadata.get(field)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
    ):
        raise _invalid_field(path, field, f"an int >= {minimum}", value)
    return value


def check_structure(path, metadata):
    """Checks a cache's metadata as untrusted input, before any file is read.

    A cache directory may come from anywhere (a copy, a download, a shared
    disk), so its `metadata.json` is not trusted: every array file must be
    the plain file name of its array inside the cache directory (no path,
    no `..`), every dtype one of `ALLOWED_DTYPES`, every shape a list of
    ints whose first dimension is the cache's `rows`, and the counts must
    agree with each other (`rows == examples * views`, the logits' width
    with `classes`).

    Args:
        path: The cache directory (for messages).
        metadata: The parsed `metadata.json`.

    Raises:
        InvalidCacheError: naming the first field that does not hold.
    """
    examples = _count(path, metadata, "examples", 0)
    views = _count(path, metadata, "views", 1)
    rows = _count(path, metadata, "rows", 0)
    classes = _count(path, metadata, "classes", 1)
    if rows != examples * views:
        raise _invalid_field(
            path, "rows", f"examples * views = {examples * views}", rows
        )
    outputs = metadata.get("outputs")
    storage = outputs.get("storage") if isinstance(outputs, dict) else None
    if storage not in ARRAYS_BY_STORAGE:
        raise _invalid_field(
            path, "outputs.storage", "'dense' or 'top_k'", storage
        )
    arrays = metadata.get("arrays")
    if metadata.get("store_inputs", True) not in (True, False):
        raise _invalid_field(
            path, "store_inputs", "true or false", metadata.get("store_inputs")
        )
    expected_arrays = expected_array_names(metadata, storage)
    if not isinstance(arrays, dict) or set(arrays) != expected_arrays:
        raise _invalid_field(
            path, "arrays", f"the arrays {sorted(expected_arrays)}",
            sorted(arrays) if isinstance(arrays, dict) else arrays,
        )
    for name, spec in sorted(arrays.items()):
        _check_array_spec(path, name, spec, rows)
    if storage == "dense" and arrays[LOGITS]["shape"][1:] != [classes]:
        raise _invalid_field(
            path, "arrays.logits.shape",
            f"[rows, classes] = [{rows}, {classes}]",
            arrays[LOGITS]["shape"],
        )
    if not stores_inputs(metadata):
        _check_order(path, metadata.get("order"), rows)


def stores_inputs(metadata):
    """Whether a cache holds its inputs (format 1 always does)."""
    return metadata.get("store_inputs", True) is not False


def soft_target_temperature(metadata):
    """The T an ensemble cache's targets are exact at, else `None`."""
    ensemble = metadata["teacher"].get("ensemble")
    return None if ensemble is None else float(ensemble["temperature"])


def output_array_names(metadata):
    """The stored arrays of the teacher's outputs, in stream order."""
    if metadata["outputs"]["storage"] == "top_k":
        return (TOP_K_VALUES, TOP_K_INDICES, TOP_K_FILL)
    return (LOGITS,)


def expected_array_names(metadata, storage):
    """The arrays a cache of `storage` (`"dense"`/`"top_k"`) must hold."""
    names = ARRAYS_BY_STORAGE[storage]
    if stores_inputs(metadata):
        return names
    return names - {INPUTS, LABELS}


def _check_order(path, order, rows):
    from tfkd.cache import row_blocks  # a leaf module; imported where used

    if not isinstance(order, dict):
        raise _invalid_field(path, "order", "a dict of block digests", order)
    if order.get("rows_per_block") != row_blocks.ROWS_PER_BLOCK:
        raise _invalid_field(
            path, "order.rows_per_block", row_blocks.ROWS_PER_BLOCK,
            order.get("rows_per_block"),
        )
    if order.get("input_samples") != row_blocks.INPUT_SAMPLES:
        raise _invalid_field(
            path, "order.input_samples", row_blocks.INPUT_SAMPLES,
            order.get("input_samples"),
        )
    digests = order.get("block_digests")
    count = row_blocks.block_count(rows)
    if (
        not isinstance(digests, list)
        or len(digests) != count
        or not all(
            isinstance(d, str) and len(d) == row_blocks.DIGEST_HEX_CHARS
            for d in digests
        )
    ):
        raise _invalid_field(
            path, "order.block_digests",
            f"{count} hex digests (one per {row_blocks.ROWS_PER_BLOCK} rows)",
            digests if not isinstance(digests, list) else f"{len(digests)} entries",
        )


def _check_array_spec(path, name, spec, rows):
    field = f"arrays.{name}"
    required = {"file", "dtype", "shape", "sha256"}
    if not isinstance(spec, dict) or not required <= set(spec):
        raise _invalid_field(
            path, field, "a dict with file, dtype, shape and sha256", spec
        )
    if spec["file"] != array_file(name):
        # Only the array's own plain file name: never a path that leaves
        # (or walks around in) the cache directory.
        raise _invalid_field(
            path, f"{field}.file", repr(array_file(name)), spec["file"]
        )
    if spec["dtype"] not in ALLOWED_DTYPES:
        raise _invalid_field(
            path, f"{field}.dtype", f"one of {sorted(ALLOWED_DTYPES)}",
            spec["dtype"],
        )
    shape = spec["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0
            for d in shape
        )
    ):
        raise _invalid_field(path, f"{field}.shape", "a list of ints >= 0", shape)
    if shape[0] != rows:
        raise _invalid_field(
            path, f"{field}.shape", f"a first dimension of rows = {rows}", shape
        )
    if not isinstance(spec["sha256"], str):
        raise _invalid_field(
            path, f"{field}.sha256", "a hex digest", spec["sha256"]
        )


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
