"""Sharded caches: several workers build (and later read) their own shards.

A sharded cache is a directory of ordinary single caches, one per shard,
plus a top-level `metadata.json` that lists them:

    <path>/
        metadata.json               written last, by `finalize`
        shard-00000-of-00004/       a complete cache (tfkd.cache.format)
        shard-00001-of-00004/
        ...

Shard i holds the batches i, i + N, i + 2N, ... of the dataset given to
`TeacherCache.build`, i.e. the cache of `dataset.shard(N, i)`, with
`tf.data`'s meaning of sharding. Each shard is built like any cache (a
partial directory renamed into place, every file checksummed), so workers
on several machines that share the directory can each write theirs, with
no coordination beyond the file system: whichever worker sees all N shards
finished writes the top-level metadata (`finalize`, in
`tfkd.cache.shard_builds`; all of them may, the content is the same and the
write is atomic and locked). This module is the reading side: names,
selections, and opening one shard pinned (`tfkd.cache.reader`).

The top-level metadata is untrusted like any other (`check_structure`):
shard directories must be the canonical plain names, the counts must add
up, and each shard entry carries the sha256 of the shard's own
`metadata.json`, whose counts, classes, dtypes, teacher fingerprint and
shard index are cross-checked when the shard is opened. A reader opens
only the shards it selects (`TeacherCache.open(path, shard=(i, n))`):
worker i of n reads the shards s with s % n == i, and nothing else.
"""

import hashlib
import json
import os

from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.cache import reader
from tfkd.utils import validation

#: The value of a sharded cache's `"layout"` metadata field.
LAYOUT = format_lib.LAYOUT_SHARDED
#: Largest shard count (the names carry five digits).
MAX_SHARDS = format_lib.MAX_SHARDS
# The layout's names and checks live in `format`, which both the readers
# and this module import; they are re-exported here under their old names.
shard_name = format_lib.shard_name
check_sharded_structure = format_lib.check_sharded_structure
# Fields every shard must share with the others (and with the top level).
_SHARED_FIELDS = ("views", "classes", "outputs.dtype", "outputs.storage",
                  "outputs.top_k", "outputs.top_k_temperature",
                  "teacher.fingerprint", "teacher.outputs", "teacher.stored_as",
                  "inputs", "store_inputs", "teacher.ensemble.temperature")


def check_shard(shard, argument="shard"):
    """Validates a `(index, count)` pair; returns it as a tuple of ints.

    Args:
        shard: A pair `(index, count)` with `0 <= index < count`.
        argument: The argument's name, for messages. Defaults to `"shard"`.

    Returns:
        The tuple `(index, count)`.

    Raises:
        TypeError: if `shard` is not a pair of ints.
        ValueError: if the index is out of range.

    Example:

    >>> check_shard((1, 2))
    (1, 2)
    """
    if (
        not isinstance(shard, (tuple, list))
        or len(shard) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
    ):
        raise validation.invalid_type(
            argument, "a pair of ints (index, count), or 'auto'", shard
        )
    index, count = shard
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise validation.invalid_value(
            argument, f"(index, count) with 0 <= index < count <= {MAX_SHARDS}",
            shard,
        )
    return int(index), int(count)


def worker_from_tf_config(environ=None):
    """This process's `(worker index, worker count)` from `TF_CONFIG`.

    Numbered as `MultiWorkerMirroredStrategy` numbers its workers: a
    `chief` is worker 0 and `worker` i is then i + 1; without a chief,
    `worker` i is i. Without `TF_CONFIG`, `(0, 1)`.

    Args:
        environ: The environment to read. Defaults to `os.environ`.

    Returns:
        A tuple `(index, count)`.

    Raises:
        ValueError: if `TF_CONFIG` is not JSON or names no known task.

    Example:

    >>> config = {"cluster": {"worker": ["a:1", "b:2"]},
    ...           "task": {"type": "worker", "index": 1}}
    >>> worker_from_tf_config({"TF_CONFIG": json.dumps(config)})
    (1, 2)
    """
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG") or "{}"
    try:
        config = json.loads(text)
    except ValueError:
        raise validation.invalid_value("TF_CONFIG", "JSON", text) from None
    cluster = config.get("cluster") or {}
    task = config.get("task") or {}
    chiefs = len(cluster.get("chief", []))
    workers = len(cluster.get("worker", []))
    if not cluster:
        return 0, 1
    task_type, task_index = task.get("type"), int(task.get("index", 0))
    if task_type == "chief":
        return 0, chiefs + workers
    if task_type == "worker":
        return chiefs + task_index, chiefs + workers
    raise validation.invalid_value(
        "TF_CONFIG", "a task of type 'chief' or 'worker'", task
    )


def resolve_selection(shard, num_shards):
    """The shard indices a reader or builder with `shard` takes.

    Args:
        shard: `None` (all shards), `(index, count)` or `"auto"` (from
            `TF_CONFIG`, see `worker_from_tf_config`).
        num_shards: Shards of the cache.

    Returns:
        A list of shard indices `s` with `s % count == index`.

    Raises:
        ValueError: if `num_shards` is not a multiple of `count` (the
            workers would then get unequal shares).

    Example:

    >>> resolve_selection((1, 2), 4)
    [1, 3]
    """
    if shard is None:
        return list(range(num_shards))
    if isinstance(shard, str) and shard == "auto":
        shard = worker_from_tf_config()
    index, count = check_shard(shard)
    if num_shards % count:
        raise validation.invalid_value(
            "shard",
            f"a worker count that divides the cache's {num_shards} shards",
            (index, count),
        )
    return [s for s in range(num_shards) if s % count == index]


def missing_shards(path, num_shards):
    """Indices of the shards of `path` whose build has not finished."""
    return [
        index
        for index in range(num_shards)
        if not os.path.isfile(
            os.path.join(path, shard_name(index, num_shards), format_lib.METADATA_FILE)
        )
    ]


def count_from_directory(path):
    """The shard count named by the shard directories under `path`.

    Raises:
        FileNotFoundError: if `path` holds no shard directory.
        InvalidCacheError: if the directories disagree on the count.
    """
    counts = set()
    if os.path.isdir(path):
        for name in os.listdir(path):
            count = format_lib.shard_count_of_name(name)
            if count is not None:
                counts.add(count)
    if not counts:
        raise FileNotFoundError(
            f"No shard directories (shard-XXXXX-of-NNNNN) under {path!r}. "
            "Build shards with TeacherCache.build(..., num_shards=N, "
            "shard_index=i)."
        )
    if len(counts) > 1:
        raise errors.InvalidCacheError(
            f"Invalid sharded teacher cache at {path!r}: its shard "
            f"directories name different shard counts {sorted(counts)}. "
            "Delete the directory and build it again."
        )
    return counts.pop()


def _field(metadata, dotted):
    value = metadata
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def read_shard(root_fd, path, metadata, index, checksums=True):
    """Opens, checks and maps shard `index` of an open sharded cache.

    The shard directory is opened relative to the cache's own descriptor
    (never through a link), its `metadata.json` read once: its sha256 is
    computed from the very bytes that are parsed, then its fields are
    cross-checked with the top level, then its arrays are verified and
    mapped (`reader.map_arrays_at`).

    Args:
        root_fd: The sharded cache's directory descriptor.
        path: Its path, for messages.
        metadata: Its checked top-level metadata.
        index: The shard's index.
        checksums: Whether to verify the arrays' sha256 too. Defaults to
            `True`.

    Returns:
        A tuple `(shard_path, shard_metadata, arrays)`.

    Raises:
        InvalidCacheError: if the shard is missing, a link, its metadata
            was modified, or it disagrees with the top level (naming the
            field).
    """
    entry = metadata["shards"][index]
    shard_path = os.path.join(os.fspath(path), entry["directory"])
    field = f"shards[{index}]"
    missing = errors.InvalidCacheError(
        f"Invalid sharded teacher cache at {path!r}: shard {index} "
        f"({entry['directory']}) is missing. Delete the directory and "
        "build it again."
    )
    try:
        shard_fd = reader.open_subdirectory(root_fd, entry["directory"], shard_path)
    except FileNotFoundError:
        raise missing from None
    try:
        data = reader.read_metadata_bytes_at(shard_fd, shard_path)
        if hashlib.sha256(data).hexdigest() != entry["metadata_sha256"]:
            raise format_lib.invalid_field(
                path, f"{field}.metadata_sha256",
                f"the sha256 of {entry['directory']}/{format_lib.METADATA_FILE}",
                entry["metadata_sha256"],
            )
        shard_metadata = reader.parse_metadata(data, shard_path)
        check_shard_agrees(path, metadata, index, shard_metadata)
        arrays = reader.map_arrays_at(shard_fd, shard_path, shard_metadata, checksums)
    finally:
        os.close(shard_fd)
    return shard_path, shard_metadata, arrays


def check_shard_agrees(path, metadata, index, shard_metadata):
    """Checks a shard's own (checked) metadata against the top level.

    Raises:
        InvalidCacheError: naming the first field that differs.
    """
    entry = metadata["shards"][index]
    field = f"shards[{index}]"
    shard_path = os.path.join(os.fspath(path), entry["directory"])
    if shard_metadata.get("layout") is not None:
        raise format_lib.invalid_field(
            shard_path, "layout", "absent (a shard is a single cache)",
            shard_metadata.get("layout"),
        )
    expected = {"index": index, "count": metadata["num_shards"]}
    if shard_metadata.get("shard") != expected:
        raise format_lib.invalid_field(
            shard_path, "shard", expected, shard_metadata.get("shard")
        )
    for key in ("examples", "rows"):
        if shard_metadata[key] != entry[key]:
            raise format_lib.invalid_field(
                path, f"{field}.{key}",
                f"the shard's own {key}, {shard_metadata[key]}", entry[key],
            )
    for dotted in _SHARED_FIELDS:
        if _field(shard_metadata, dotted) != _field(metadata, dotted):
            raise format_lib.invalid_field(
                path, f"{field}: {dotted}",
                f"the cache's {_field(metadata, dotted)!r}",
                _field(shard_metadata, dotted),
            )


def _text(path, index, metadata, key):
    value = metadata.get(key)
    if not isinstance(value, str):
        raise format_lib.invalid_field(
            path, f"shard {index}: {key}", "a str", value
        )
    return value


def _seconds(path, index, metadata):
    value = metadata.get("build_seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise format_lib.invalid_field(
            path, f"shard {index}: build_seconds", "a float >= 0", value
        )
    return value


def merged_metadata(path, count, shard_metadatas, shard_digests):
    """The top-level metadata of a sharded cache, from its shards' own.

    Args:
        path: The sharded cache's directory (for messages).
        count: The shard count.
        shard_metadatas: Each shard's checked metadata, in order.
        shard_digests: The sha256 of each shard's `metadata.json` bytes.

    Returns:
        The top-level metadata dict.

    Raises:
        InvalidCacheError: if the shards disagree (built with another
            teacher or other options), naming the shard and the field.
    """
    first = shard_metadatas[0]
    for index, shard in enumerate(shard_metadatas):
        expected = {"index": index, "count": count}
        if shard.get("shard") != expected or shard.get("layout") is not None:
            raise format_lib.invalid_field(
                path, f"shard {index}: shard", expected, shard.get("shard")
            )
        for dotted in _SHARED_FIELDS:
            if _field(shard, dotted) != _field(first, dotted):
                raise errors.InvalidCacheError(
                    f"Invalid sharded teacher cache at {path!r}: shard "
                    f"{index} has {dotted}={_field(shard, dotted)!r} and "
                    f"shard 0 {_field(first, dotted)!r} (built with another "
                    "teacher or other options). Rebuild that shard."
                )
    rows = sum(shard["rows"] for shard in shard_metadatas)
    outputs = dict(first["outputs"])
    if outputs["storage"] == "top_k":
        outputs["tail_mass_max"] = max(s["outputs"]["tail_mass_max"] for s in shard_metadatas)
        outputs["tail_mass_mean"] = sum(
            s["outputs"]["tail_mass_mean"] * s["rows"] for s in shard_metadatas
        ) / max(rows, 1)
    merged = {
        "format": format_lib.FORMAT_NAME,
        "format_version": format_lib.FORMAT_VERSION,
        "layout": LAYOUT,
        "tfkd_version": _text(path, 0, first, "tfkd_version"),
        # The newest shard's time: every finalizing worker writes the same.
        "created": max(
            _text(path, i, shard, "created") for i, shard in enumerate(shard_metadatas)
        ),
        "build_seconds": round(
            sum(_seconds(path, i, s) for i, s in enumerate(shard_metadatas)), 3
        ),
        "num_shards": count,
        "examples": sum(shard["examples"] for shard in shard_metadatas),
        "rows": rows,
        "outputs": outputs,
        "shards": [],
    }
    for key in ("views", "classes", "teacher", "inputs", "augmentation"):
        merged[key] = first.get(key)
    if "store_inputs" in first:
        merged["store_inputs"] = first["store_inputs"]
    for index, (shard, digest) in enumerate(zip(shard_metadatas, shard_digests)):
        merged["shards"].append({
            "directory": shard_name(index, count),
            "examples": shard["examples"],
            "rows": shard["rows"],
            "metadata_sha256": digest,
        })
    return merged


def shard_of_builder(shard_index, num_shards):
    """The `shard` selection of a builder given `shard_index`.

    Args:
        shard_index: `None` (all shards), an int in `[0, num_shards)` or
            `"auto"` (this worker's shards, from `TF_CONFIG`).
        num_shards: The shard count.

    Returns:
        `None`, `(shard_index, num_shards)` or `"auto"`.

    Raises:
        TypeError: if `shard_index` is of another type.
        ValueError: if it is out of range.

    Example:

    >>> shard_of_builder(1, 4)
    (1, 4)
    """
    if shard_index is None or (
        isinstance(shard_index, str) and shard_index == "auto"
    ):
        return shard_index
    validation.check_int(
        "shard_index", shard_index, minimum=0, maximum=num_shards - 1,
        expected=f"an int in [0, num_shards - 1 = {num_shards - 1}] or 'auto'",
    )
    return (int(shard_index), num_shards)
