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
finished writes the top-level metadata (`finalize`; all of them may, the
content is the same and the write is atomic).

The top-level metadata is untrusted like any other (`check_structure`):
shard directories must be the canonical plain names, the counts must add
up, and each shard entry carries the sha256 of the shard's own
`metadata.json`, whose counts, classes, dtypes, teacher fingerprint and
shard index are cross-checked when the shard is opened. A reader opens
only the shards it selects (`TeacherCache.open(path, shard=(i, n))`):
worker i of n reads the shards s with s % n == i, and nothing else.
"""

import dataclasses
import json
import os
import re
import time

from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.utils import files
from tfkd.utils import validation

#: The value of a sharded cache's `"layout"` metadata field.
LAYOUT = "sharded"
#: Largest shard count (the names carry five digits).
MAX_SHARDS = 99999
_NAME = re.compile(r"^shard-(\d{5})-of-(\d{5})$")
# Fields every shard must share with the others (and with the top level).
_SHARED_FIELDS = ("views", "classes", "outputs.dtype", "outputs.storage",
                  "outputs.top_k", "outputs.top_k_temperature",
                  "teacher.fingerprint", "teacher.outputs", "teacher.stored_as",
                  "inputs", "store_inputs")
_POLL_SECONDS = 0.5


def shard_name(index, count):
    """The directory name of shard `index` of `count`.

    Example:

    >>> shard_name(1, 4)
    'shard-00001-of-00004'
    """
    return f"shard-{index:05d}-of-{count:05d}"


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
            match = _NAME.match(name)
            if match:
                counts.add(int(match.group(2)))
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


def check_sharded_structure(path, metadata):
    """Checks a sharded cache's top-level metadata as untrusted input.

    The shard list must have `num_shards` entries, each naming its
    canonical directory (a plain name inside the cache: no path, no `..`),
    with int counts that sum to the top-level `examples` and `rows`.

    Args:
        path: The cache directory (for messages).
        metadata: The parsed top-level `metadata.json`.

    Raises:
        InvalidCacheError: naming the first field that does not hold.
    """
    invalid = format_lib.invalid_field
    count = metadata.get("num_shards")
    if not isinstance(count, int) or isinstance(count, bool) or not (
        1 <= count <= MAX_SHARDS
    ):
        raise invalid(path, "num_shards", f"an int in [1, {MAX_SHARDS}]", count)
    entries = metadata.get("shards")
    if not isinstance(entries, list) or len(entries) != count:
        raise invalid(
            path, "shards", f"a list of num_shards = {count} entries",
            entries if not isinstance(entries, list) else f"{len(entries)} entries",
        )
    totals = {"examples": 0, "rows": 0}
    for index, entry in enumerate(entries):
        field = f"shards[{index}]"
        if not isinstance(entry, dict):
            raise invalid(path, field, "a dict", entry)
        if entry.get("directory") != shard_name(index, count):
            raise invalid(
                path, f"{field}.directory", repr(shard_name(index, count)),
                entry.get("directory"),
            )
        for key in totals:
            value = entry.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise invalid(path, f"{field}.{key}", "an int >= 0", value)
            totals[key] += value
        if not isinstance(entry.get("metadata_sha256"), str):
            raise invalid(
                path, f"{field}.metadata_sha256", "a hex digest",
                entry.get("metadata_sha256"),
            )
    for key, total in totals.items():
        if metadata.get(key) != total:
            raise invalid(
                path, key, f"the sum over shards, {total}", metadata.get(key)
            )


def read_shard(path, metadata, index):
    """Reads and cross-checks shard `index` of a checked sharded cache.

    Args:
        path: The sharded cache's directory.
        metadata: Its top-level metadata (checked by `read_metadata`).
        index: The shard's index.

    Returns:
        A tuple `(shard_path, shard_metadata)`.

    Raises:
        InvalidCacheError: if the shard is missing, its metadata was
            modified, or it disagrees with the top level (naming the field).
    """
    entry = metadata["shards"][index]
    shard_path = os.path.join(os.fspath(path), entry["directory"])
    field = f"shards[{index}]"
    metadata_file = os.path.join(shard_path, format_lib.METADATA_FILE)
    if not os.path.isfile(metadata_file):
        raise errors.InvalidCacheError(
            f"Invalid sharded teacher cache at {path!r}: shard {index} "
            f"({entry['directory']}) is missing. Delete the directory and "
            "build it again."
        )
    if files.sha256_of(metadata_file) != entry["metadata_sha256"]:
        raise format_lib.invalid_field(
            path, f"{field}.metadata_sha256",
            f"the sha256 of {entry['directory']}/{format_lib.METADATA_FILE}",
            entry["metadata_sha256"],
        )
    shard_metadata = format_lib.read_metadata(shard_path)
    if shard_metadata.get("shard") != {"index": index, "count": metadata["num_shards"]}:
        raise format_lib.invalid_field(
            shard_path, "shard",
            {"index": index, "count": metadata["num_shards"]},
            shard_metadata.get("shard"),
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
    return shard_path, shard_metadata


def _merged_metadata(path, count, shard_metadatas):
    first = shard_metadatas[0]
    for index, shard in enumerate(shard_metadatas):
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
        "tfkd_version": first["tfkd_version"],
        # The newest shard's time: every finalizing worker writes the same.
        "created": max(shard["created"] for shard in shard_metadatas),
        "build_seconds": round(sum(s["build_seconds"] for s in shard_metadatas), 3),
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
    for index, shard in enumerate(shard_metadatas):
        directory = shard_name(index, count)
        merged["shards"].append({
            "directory": directory,
            "examples": shard["examples"],
            "rows": shard["rows"],
            "metadata_sha256": files.sha256_of(
                os.path.join(path, directory, format_lib.METADATA_FILE)
            ),
        })
    return merged


def finalize(path, num_shards=None, timeout=0.0):
    """Writes the top-level metadata once every shard is built.

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
    """
    path = os.fspath(path)
    if num_shards is None:
        num_shards = count_from_directory(path)
    deadline = time.monotonic() + timeout
    missing = missing_shards(path, num_shards)
    while missing and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        missing = missing_shards(path, num_shards)
    if missing:
        raise FileNotFoundError(
            f"Sharded teacher cache at {path!r}: shards {missing} of "
            f"{num_shards} are not built yet (waited {timeout:g} s). Build "
            "them with TeacherCache.build(..., num_shards="
            f"{num_shards}, shard_index=i), then call "
            "TeacherCache.finalize(path)."
        )
    shard_metadatas = [
        format_lib.read_metadata(os.path.join(path, shard_name(i, num_shards)))
        for i in range(num_shards)
    ]
    merged = _merged_metadata(path, num_shards, shard_metadatas)
    files.write_json_atomically(
        os.path.join(path, format_lib.METADATA_FILE), merged, indent=2,
        sort_keys=True,
    )
    files.fsync_directory(path)
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


def build_shards(teacher, dataset, path, options, num_shards, indices):
    """Builds the shards `indices` of a sharded cache at `path`.

    Shard i is `dataset.shard(num_shards, i)`, built like any cache into
    `<path>/shard-i-of-N` (atomic rename, checksummed files). The top-level
    metadata is left to `finalize`; a rebuild (`options.overwrite`) removes
    it first, so the cache reads as unfinished until every shard is new.

    Args:
        teacher: The `keras.Model`.
        dataset: The whole `tf.data.Dataset` of batches.
        path: The sharded cache's directory (created if missing).
        options: `builder.BuildOptions`.
        num_shards: The shard count.
        indices: The shards to build here.

    Raises:
        FileExistsError: if `path` holds a finished cache, or a shard to
            build exists, and `options.overwrite` is False.
    """
    from tfkd.cache import builder  # builder does not import this module

    path = os.fspath(path)
    top = os.path.join(path, format_lib.METADATA_FILE)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise FileExistsError(f"A file exists at {path!r}; expected a directory.")
    if os.path.lexists(top):
        if not options.overwrite:
            raise FileExistsError(
                f"A finished cache already exists at {path!r}. Open it with "
                "`TeacherCache.open(path)`, or pass overwrite=True to "
                "rebuild its shards."
            )
        os.remove(top)
    os.makedirs(path, exist_ok=True)
    for index in indices:
        shard_options = dataclasses.replace(options, shard=(index, num_shards))
        builder.build(
            teacher,
            dataset.shard(num_shards, index),
            os.path.join(path, shard_name(index, num_shards)),
            shard_options,
        )
