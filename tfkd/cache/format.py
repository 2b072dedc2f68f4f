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
build killed at any point leaves no directory under `<path>` at all. Every
directory a build creates carries tfkd's ownership marker
(`.tfkd-owner.json`, `tfkd.cache.owned`), and only such directories (or
verifiable caches of an earlier tfkd) are ever replaced or deleted.

Concurrency contract: one writer per path, many readers. Builders of a
path (and finalizers of a sharded cache) hold `<path>.lock`
(`tfkd.cache.locking`) and so run one at a time. Readers take no lock:
they open the directory once and read the metadata and every array through
descriptors of that directory, verifying and memory-mapping the same
descriptors (`tfkd.cache.reader`). An open cache is therefore either
unaffected by a concurrent rebuild (it keeps the generation it verified)
or, if it opens during the rebuild's renames, refused with a clear
`InvalidCacheError` or `FileNotFoundError`, never a mixture of two
generations.

Everything read back is untrusted: `metadata.json` is capped in size and
depth before it is parsed, every field a reader uses is checked here
(`check_structure`, `check_sharded_structure`), and links inside a cache
are refused.
"""

import glob
import hashlib
import json
import math
import os
import re

import numpy as np

from tfkd.cache import errors
from tfkd.cache import row_blocks

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
#: Infix of the directory a rebuild moves the old cache to, then removes.
REPLACED_INFIX = ".replaced-"
#: The value of a sharded cache's `"layout"` metadata field.
LAYOUT_SHARDED = "sharded"
#: Largest shard count (the names carry five digits).
MAX_SHARDS = 99999
#: Storage dtypes of the teacher's outputs, as `outputs.dtype` names them.
OUTPUT_DTYPE_NAMES = ("float16", "float32")
#: What a teacher emitted, as `teacher.outputs` names it.
TEACHER_OUTPUT_NAMES = ("logits", "probabilities")
#: How inputs are stored, as `inputs.kind` names it (`tfkd.cache.codec`).
INPUT_KINDS = ("unit_uint8", "cast", "identity")

INPUTS = "inputs"
LABELS = "labels"
LOGITS = "logits"
TOP_K_VALUES = "top_k_values"
TOP_K_INDICES = "top_k_indices"
TOP_K_FILL = "top_k_fill"

#: What every `InvalidCacheError` about a cache's content advises.
RECOVERY_HINT = (
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


def replaced_directory(path, token):
    """Where a rebuild moves the old cache of `path` before removing it."""
    return f"{os.fspath(path)}{REPLACED_INFIX}{os.getpid()}-{token}"


def leftover_partials(path):
    """Directories left by builds (and rebuilds) of `path` that never
    finished: `<path>.partial-*` and `<path>.replaced-*`."""
    path = glob.escape(os.fspath(path))
    return sorted(
        glob.glob(path + PARTIAL_INFIX + "*")
        + glob.glob(path + REPLACED_INFIX + "*")
    )


def builder_pid(leftover):
    """The pid in a `.partial-<pid>-<token>` or `.replaced-<pid>-<token>`
    name, or `None` if the name holds none.

    Example:

    >>> builder_pid("cache/c.partial-123-ab12")
    123
    >>> builder_pid("cache/c.partial-x") is None
    True
    """
    match = _LEFTOVER.search(os.fspath(leftover))
    return int(match.group(1)) if match else None


def check_header(path, metadata):
    """Checks that parsed metadata is a cache of this format and version.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed `metadata.json`.

    Raises:
        InvalidCacheError: if it is not a dict of format
            `tfkd.TeacherCache`, or of a version this tfkd cannot read.
    """
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: {METADATA_FILE} does not "
            f"describe a {FORMAT_NAME}. {RECOVERY_HINT}"
        )
    version = metadata.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise errors.InvalidCacheError(
            f"Invalid teacher cache at {path!r}: it uses format version "
            f"{version!r} (written by tfkd "
            f"{metadata.get('tfkd_version')!r}) and this tfkd reads version "
            f"{FORMAT_VERSION}. {RECOVERY_HINT}"
        )


def check_metadata(path, metadata):
    """Checks a cache's whole metadata, of either layout, as untrusted.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed `metadata.json`.

    Raises:
        InvalidCacheError: naming the first field that does not hold.
    """
    check_header(path, metadata)
    layout = metadata.get("layout")
    if layout == LAYOUT_SHARDED:
        check_sharded_structure(path, metadata)
    elif layout is None:
        check_structure(path, metadata)
    else:
        raise _invalid_field(path, "layout", f"absent or {LAYOUT_SHARDED!r}", layout)


#: Dtypes an array file may hold (little-endian; `|` for one byte). Inputs'
#: `source_dtype` and a logits-only cache's recorded dtypes must be one too.
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
_INDEX_DTYPES = frozenset({np.dtype("<i2").str, np.dtype("<i4").str})
_SHARD_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})$")
_LEFTOVER = re.compile(r"\.(?:partial|replaced)-(\d+)-[0-9a-f]+$")


def shard_name(index, count):
    """The directory name of shard `index` of `count`.

    Example:

    >>> shard_name(1, 4)
    'shard-00001-of-00004'
    """
    return f"shard-{index:05d}-of-{count:05d}"


def shard_count_of_name(name):
    """The count N in a `shard-XXXXX-of-NNNNN` name, else `None`.

    Example:

    >>> shard_count_of_name("shard-00001-of-00004"), shard_count_of_name("x")
    (4, None)
    """
    match = _SHARD_NAME.match(name)
    return int(match.group(2)) if match else None


def invalid_field(path, field, expected, received):
    """The `InvalidCacheError` of a metadata field that does not hold.

    Args:
        path: The cache directory.
        field: The field's dotted name, e.g. `"outputs.storage"`.
        expected: What it must be (text).
        received: What it is.

    Returns:
        An `InvalidCacheError` naming all three.

    Example:

    >>> print(invalid_field("c", "views", "an int >= 1", 0))
    Invalid teacher cache at 'c': metadata field `views` must be an int >= 1. Received: 0. Delete the directory and build the cache again, or open it with on_stale='rebuild' (and the teacher and dataset) to rebuild it.
    """
    return _invalid_field(path, field, expected, received)


def _invalid_field(path, field, expected, received):
    shown = repr(received)
    if len(shown) > 200:  # a hostile value can be megabytes long
        shown = shown[:200] + "..."
    return errors.InvalidCacheError(
        f"Invalid teacher cache at {path!r}: metadata field `{field}` must "
        f"be {expected}. Received: {shown}. {RECOVERY_HINT}"
    )


def _is_int(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _dict(path, metadata, field):
    value = metadata.get(field)
    if not isinstance(value, dict):
        raise _invalid_field(path, field, "a dict", value)
    return value


def _count(path, metadata, field, minimum):
    value = metadata.get(field)
    if not _is_int(value, minimum):
        raise _invalid_field(path, field, f"an int >= {minimum}", value)
    return value


def _check_dtype(path, field, value):
    if not isinstance(value, str) or value not in ALLOWED_DTYPES:
        raise _invalid_field(
            path, field, f"one of {sorted(ALLOWED_DTYPES)}", value
        )


def _check_shape(path, field, value):
    if not isinstance(value, list) or not all(_is_int(d) for d in value):
        raise _invalid_field(path, field, "a list of ints >= 0", value)


def check_common_fields(path, metadata):
    """Checks the fields a single cache and a sharded cache both carry.

    The counts (`examples`, `views`, `rows`, `classes`), `outputs`,
    `teacher`, `store_inputs`, `inputs` and `augmentation`: every field a
    reader of either layout uses, so none of them can fail later with a raw
    `KeyError` or `TypeError`.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed `metadata.json`.

    Returns:
        `rows`, the checked row count.

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
    _check_outputs(path, metadata, classes)
    _check_teacher(path, metadata)
    if metadata.get("store_inputs", True) not in (True, False):
        raise _invalid_field(
            path, "store_inputs", "true or false", metadata.get("store_inputs")
        )
    _check_inputs(path, metadata)
    augmentation = metadata.get("augmentation")
    if augmentation is not None and not isinstance(augmentation, dict):
        raise _invalid_field(path, "augmentation", "null or a dict", augmentation)
    return rows


def _check_outputs(path, metadata, classes):
    outputs = metadata.get("outputs")
    storage = outputs.get("storage") if isinstance(outputs, dict) else None
    if not isinstance(storage, str) or storage not in ARRAYS_BY_STORAGE:
        raise _invalid_field(
            path, "outputs.storage", "'dense' or 'top_k'", storage
        )
    if outputs.get("dtype") not in OUTPUT_DTYPE_NAMES:
        raise _invalid_field(
            path, "outputs.dtype", f"one of {list(OUTPUT_DTYPE_NAMES)}",
            outputs.get("dtype"),
        )
    top_k = outputs.get("top_k")
    if storage == "dense":
        if "top_k" not in outputs or top_k is not None:
            raise _invalid_field(path, "outputs.top_k", "null for dense storage", top_k)
        return
    if not _is_int(top_k, 1) or top_k >= classes:
        raise _invalid_field(
            path, "outputs.top_k", f"an int in [1, classes = {classes})", top_k
        )
    temperature = outputs.get("top_k_temperature")
    if not _is_number(temperature) or temperature <= 0:
        raise _invalid_field(
            path, "outputs.top_k_temperature", "a float > 0", temperature
        )
    for key in ("tail_mass_mean", "tail_mass_max"):
        if not _is_number(outputs.get(key)):
            raise _invalid_field(
                path, f"outputs.{key}", "a float", outputs.get(key)
            )


def _check_teacher(path, metadata):
    teacher = _dict(path, metadata, "teacher")
    if not isinstance(teacher.get("fingerprint"), str):
        raise _invalid_field(
            path, "teacher.fingerprint", "a str", teacher.get("fingerprint")
        )
    if teacher.get("outputs") not in TEACHER_OUTPUT_NAMES:
        raise _invalid_field(
            path, "teacher.outputs", f"one of {list(TEACHER_OUTPUT_NAMES)}",
            teacher.get("outputs"),
        )
    ensemble = teacher.get("ensemble")
    if ensemble is None:
        return
    temperature = ensemble.get("temperature") if isinstance(ensemble, dict) else None
    if not _is_number(temperature) or temperature <= 0:
        raise _invalid_field(
            path, "teacher.ensemble.temperature", "a float > 0", temperature
        )


def _check_inputs(path, metadata):
    inputs = _dict(path, metadata, "inputs")
    if stores_inputs(metadata):
        if inputs.get("kind") not in INPUT_KINDS:
            raise _invalid_field(
                path, "inputs.kind", f"one of {list(INPUT_KINDS)}",
                inputs.get("kind"),
            )
        for key in ("source_dtype", "stored_dtype"):
            _check_dtype(path, f"inputs.{key}", inputs.get(key))
        return
    for key in ("dtype", "label_dtype"):
        _check_dtype(path, f"inputs.{key}", inputs.get(key))
    for key in ("shape", "label_shape"):
        _check_shape(path, f"inputs.{key}", inputs.get(key))


def check_structure(path, metadata):
    """Checks a cache's metadata as untrusted input, before any file is read.

    A cache directory may come from anywhere (a copy, a download, a shared
    disk), so its `metadata.json` is not trusted: every array file must be
    the plain file name of its array inside the cache directory (no path,
    no `..`), every dtype one of `ALLOWED_DTYPES`, every shape a list of
    ints whose first dimension is the cache's `rows`, and the counts must
    agree with each other (`rows == examples * views`, the logits' width
    with `classes`, top-k arrays with `outputs.top_k`). Every field a
    reader uses is checked here (`check_common_fields`, `data`, `order`),
    so a malformed one is an `InvalidCacheError` naming it, never a raw
    `KeyError` later.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed `metadata.json`.

    Raises:
        InvalidCacheError: naming the first field that does not hold.
    """
    rows = check_common_fields(path, metadata)
    classes = metadata["classes"]
    storage = metadata["outputs"]["storage"]
    arrays = metadata.get("arrays")
    expected_arrays = expected_array_names(metadata, storage)
    if not isinstance(arrays, dict) or set(arrays) != expected_arrays:
        raise _invalid_field(
            path, "arrays", f"the arrays {sorted(expected_arrays)}",
            sorted(arrays) if isinstance(arrays, dict) else arrays,
        )
    for name, spec in sorted(arrays.items()):
        _check_array_spec(path, name, spec, rows)
    _check_output_arrays(path, metadata, arrays, rows, classes)
    data = _dict(path, metadata, "data")
    if not isinstance(data.get("fingerprint"), str):
        raise _invalid_field(
            path, "data.fingerprint", "a str", data.get("fingerprint")
        )
    if not stores_inputs(metadata):
        _check_order(path, metadata.get("order"), rows)


def _check_output_arrays(path, metadata, arrays, rows, classes):
    outputs = metadata["outputs"]
    stored = np.dtype(outputs["dtype"]).newbyteorder("<").str
    if outputs["storage"] == "dense":
        expected_shapes = {LOGITS: [rows, classes]}
        floats = (LOGITS,)
    else:
        k = outputs["top_k"]
        expected_shapes = {
            TOP_K_VALUES: [rows, k], TOP_K_INDICES: [rows, k], TOP_K_FILL: [rows]
        }
        floats = (TOP_K_VALUES, TOP_K_FILL)
        if arrays[TOP_K_INDICES]["dtype"] not in _INDEX_DTYPES:
            raise _invalid_field(
                path, f"arrays.{TOP_K_INDICES}.dtype", "'<i2' or '<i4'",
                arrays[TOP_K_INDICES]["dtype"],
            )
    for name, shape in expected_shapes.items():
        if arrays[name]["shape"] != shape:
            raise _invalid_field(
                path, f"arrays.{name}.shape", f"{shape}", arrays[name]["shape"]
            )
    for name in floats:
        if arrays[name]["dtype"] != stored:
            raise _invalid_field(
                path, f"arrays.{name}.dtype",
                f"{stored!r} (outputs.dtype {outputs['dtype']})",
                arrays[name]["dtype"],
            )


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
    _check_dtype(path, f"{field}.dtype", spec["dtype"])
    shape = spec["shape"]
    if not isinstance(shape, list) or not shape or not all(_is_int(d) for d in shape):
        raise _invalid_field(path, f"{field}.shape", "a list of ints >= 0", shape)
    if shape[0] != rows:
        raise _invalid_field(
            path, f"{field}.shape", f"a first dimension of rows = {rows}", shape
        )
    if not isinstance(spec["sha256"], str):
        raise _invalid_field(
            path, f"{field}.sha256", "a hex digest", spec["sha256"]
        )


def check_sharded_structure(path, metadata):
    """Checks a sharded cache's top-level metadata as untrusted input.

    The fields common to every cache (`check_common_fields`), and the
    shard list: `num_shards` entries, each naming its canonical directory
    (a plain name inside the cache: no path, no `..`), with int counts that
    sum to the top-level `examples` and `rows`.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed top-level `metadata.json`.

    Raises:
        InvalidCacheError: naming the first field that does not hold.
    """
    count = metadata.get("num_shards")
    if not _is_int(count, 1) or count > MAX_SHARDS:
        raise _invalid_field(path, "num_shards", f"an int in [1, {MAX_SHARDS}]", count)
    entries = metadata.get("shards")
    if not isinstance(entries, list) or len(entries) != count:
        raise _invalid_field(
            path, "shards", f"a list of num_shards = {count} entries",
            entries if not isinstance(entries, list) else f"{len(entries)} entries",
        )
    totals = {"examples": 0, "rows": 0}
    for index, entry in enumerate(entries):
        field = f"shards[{index}]"
        if not isinstance(entry, dict):
            raise _invalid_field(path, field, "a dict", entry)
        if entry.get("directory") != shard_name(index, count):
            raise _invalid_field(
                path, f"{field}.directory", repr(shard_name(index, count)),
                entry.get("directory"),
            )
        for key in totals:
            value = entry.get(key)
            if not _is_int(value):
                raise _invalid_field(path, f"{field}.{key}", "an int >= 0", value)
            totals[key] += value
        if not isinstance(entry.get("metadata_sha256"), str):
            raise _invalid_field(
                path, f"{field}.metadata_sha256", "a hex digest",
                entry.get("metadata_sha256"),
            )
    for key, total in totals.items():
        if metadata.get(key) != total:
            raise _invalid_field(
                path, key, f"the sum over shards, {total}", metadata.get(key)
            )
    check_common_fields(path, metadata)


def expected_bytes(spec):
    """The size in bytes an array file described by a checked `spec` has."""
    return math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize
