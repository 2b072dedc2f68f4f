"""Tests of tfkd/cache/format.py: raw arrays, metadata, checksums."""

import hashlib
import json
import os

import numpy as np
import pytest

from tfkd.cache import errors
from tfkd.cache import reader
from tfkd.utils import files
from tfkd.cache import format as format_lib


def _verify(directory, metadata, checksums=True):
    """Verifies and maps the arrays of `directory` (pinned reads)."""
    descriptor = reader.open_directory(directory)
    try:
        return reader.map_arrays_at(descriptor, directory, metadata, checksums)
    finally:
        os.close(descriptor)


def _write_cache_directory(directory, arrays):
    """A minimal valid cache directory holding `arrays` (name -> chunks)."""
    os.makedirs(directory)
    specs = {}
    for name, chunks in arrays.items():
        writer = format_lib.ArrayWriter(directory, name)
        for chunk in chunks:
            writer.append(chunk)
        specs[name] = writer.close()
    rows = specs["logits"]["shape"][0]
    format_lib.write_metadata(
        directory,
        {
            "format": format_lib.FORMAT_NAME,
            "format_version": format_lib.FORMAT_VERSION,
            "tfkd_version": "test",
            "examples": rows,
            "views": 1,
            "rows": rows,
            "classes": specs["logits"]["shape"][1],
            "outputs": {"storage": "dense", "dtype": "float16", "top_k": None},
            "teacher": {"fingerprint": "sha256:0", "outputs": "logits"},
            "data": {"fingerprint": "multiset-blake2b:0"},
            "inputs": {"kind": "identity", "source_dtype": "|u1",
                       "stored_dtype": "|u1"},
            "arrays": specs,
        },
    )
    return specs


@pytest.fixture
def cache_dir(tmp_path):
    directory = str(tmp_path / "cache")
    rng = np.random.default_rng(0)
    _write_cache_directory(
        directory,
        {
            "inputs": [rng.integers(0, 255, (5, 3, 2), dtype=np.uint8)] * 2,
            "labels": [rng.integers(0, 4, (5,), dtype=np.int32)] * 2,
            "logits": [rng.normal(size=(5, 4)).astype(np.float16)] * 2,
        },
    )
    return directory


def test_array_writer_round_trips_chunks_and_hashes_the_file(tmp_path):
    chunks = [np.arange(6, dtype=">f4").reshape(3, 2), np.ones((2, 2), "<f4")]
    writer = format_lib.ArrayWriter(str(tmp_path), "logits")
    for chunk in chunks:
        writer.append(chunk)
    spec = writer.close()

    assert spec["shape"] == [5, 2]
    assert spec["dtype"] == "<f4"  # big-endian input stored little-endian
    path = os.path.join(str(tmp_path), spec["file"])
    stored = np.memmap(path, dtype=spec["dtype"], mode="r", shape=(5, 2))
    np.testing.assert_array_equal(stored, np.concatenate(chunks))
    with open(path, "rb") as handle:
        assert spec["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert files.sha256_of(path) == spec["sha256"]


def test_array_writer_refuses_a_change_of_row_shape(tmp_path):
    writer = format_lib.ArrayWriter(str(tmp_path), "inputs")
    writer.append(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="same inputs shape and dtype"):
        writer.append(np.zeros((2, 4), np.float32))
    writer.abort()


def test_a_valid_cache_verifies_and_memory_maps(cache_dir):
    metadata = reader.read_metadata(cache_dir)
    arrays = _verify(cache_dir, metadata)
    assert arrays["inputs"].shape == (10, 3, 2)
    assert arrays["logits"].dtype == np.float16
    np.testing.assert_array_equal(arrays["logits"][:5], arrays["logits"][5:])


def test_missing_directory_names_leftovers_of_interrupted_builds(tmp_path):
    path = str(tmp_path / "cache")
    os.makedirs(format_lib.partial_directory(path, "dead"))
    with pytest.raises(FileNotFoundError, match="interrupted builds"):
        reader.read_metadata(path)


def test_directory_without_metadata_is_an_unfinished_build(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    (path / "logits.bin").write_bytes(b"\0" * 8)
    with pytest.raises(errors.InvalidCacheError, match="never finished"):
        reader.read_metadata(str(path))


def test_unreadable_or_foreign_metadata_is_invalid(tmp_path, cache_dir):
    metadata_path = os.path.join(cache_dir, format_lib.METADATA_FILE)
    with open(metadata_path, "w") as handle:
        handle.write('{"format": "tfkd.TeacherCache", "arr')  # torn write
    with pytest.raises(errors.InvalidCacheError, match="cannot be read"):
        reader.read_metadata(cache_dir)
    with open(metadata_path, "w") as handle:
        json.dump({"format": "something else"}, handle)
    with pytest.raises(errors.InvalidCacheError, match="does not describe"):
        reader.read_metadata(cache_dir)


def test_other_format_version_is_invalid(cache_dir):
    metadata_path = os.path.join(cache_dir, format_lib.METADATA_FILE)
    with open(metadata_path) as handle:
        metadata = json.load(handle)
    metadata["format_version"] = format_lib.FORMAT_VERSION + 1
    with open(metadata_path, "w") as handle:
        json.dump(metadata, handle)
    with pytest.raises(errors.InvalidCacheError, match="format version"):
        reader.read_metadata(cache_dir)


def test_truncated_file_is_detected_without_reading_it(cache_dir):
    path = os.path.join(cache_dir, "logits.bin")
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - 3)
    metadata = reader.read_metadata(cache_dir)
    with pytest.raises(errors.InvalidCacheError, match="truncated"):
        _verify(cache_dir, metadata, checksums=False)


def test_one_flipped_byte_fails_the_checksum(cache_dir):
    path = os.path.join(cache_dir, "inputs.bin")
    with open(path, "r+b") as handle:
        handle.seek(17)
        byte = handle.read(1)
        handle.seek(17)
        handle.write(bytes([byte[0] ^ 0x01]))
    metadata = reader.read_metadata(cache_dir)
    _verify(cache_dir, metadata, checksums=False)  # same size
    with pytest.raises(errors.InvalidCacheError, match="checksum of 'inputs.bin'"):
        _verify(cache_dir, metadata)


def test_missing_array_file_is_invalid(cache_dir):
    os.remove(os.path.join(cache_dir, "logits.bin"))
    metadata = reader.read_metadata(cache_dir)
    with pytest.raises(errors.InvalidCacheError, match="is missing"):
        _verify(cache_dir, metadata)


def _craft(cache_dir, change):
    """Rewrites the cache's metadata.json with `change(metadata)` applied."""
    path = os.path.join(cache_dir, format_lib.METADATA_FILE)
    with open(path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    change(metadata)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle)


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(metadata):
        target = metadata
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _delete(key):
    return lambda metadata: metadata.pop(key)


CRAFTED = [
    # Path traversal: another directory's files, absolute paths.
    (_set("arrays", "inputs", "file", "../other/inputs.bin"),
     "`arrays.inputs.file`"),
    (_set("arrays", "logits", "file", "/etc/passwd"), "`arrays.logits.file`"),
    (_set("arrays", "labels", "file", "logits.bin"), "`arrays.labels.file`"),
    # Counts that disagree with each other or with the arrays.
    (_set("rows", 10**12), "`rows`"),
    (_set("examples", 11), "`rows`"),
    (_set("classes", 7), "`arrays.logits.shape`"),
    (_set("arrays", "inputs", "shape", [10**12, 3, 2]), "`arrays.inputs.shape`"),
    (_set("arrays", "labels", "shape", [9]), "`arrays.labels.shape`"),
    (_set("arrays", "inputs", "shape", [10, -3, 2]), "`arrays.inputs.shape`"),
    (_set("rows", "10"), "`rows`"),
    (_set("views", 0), "`views`"),
    # Dtypes no cache writes (object arrays would unpickle).
    (_set("arrays", "logits", "dtype", "|O"), "`arrays.logits.dtype`"),
    (_set("arrays", "logits", "dtype", ">f4"), "`arrays.logits.dtype`"),
    # Missing keys.
    (_delete("rows"), "`rows`"),
    (_delete("arrays"), "`arrays`"),
    (_delete("outputs"), "`outputs.storage`"),
    (lambda m: m["arrays"].pop("labels"), "`arrays`"),
    (lambda m: m["arrays"]["inputs"].pop("sha256"), "`arrays.inputs`"),
]


@pytest.mark.parametrize("change, field", CRAFTED)
def test_crafted_metadata_is_refused_naming_the_field(cache_dir, change, field):
    _craft(cache_dir, change)
    with pytest.raises(errors.InvalidCacheError, match=field):
        reader.read_metadata(cache_dir)
