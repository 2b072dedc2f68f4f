"""Tests of tfkd/cache/reader.py: a cache on disk is untrusted input.

Through the public API (`TeacherCache.open`): links inside a cache, oversize
or deep metadata, malformed fields (one by one, and by a property test that
mutates random fields) all give an `InvalidCacheError` naming what is wrong,
never a raw `KeyError`/`TypeError`/`RecursionError`, and never a read of a
file outside the cache.
"""

import copy
import hashlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tfkd.cache import InvalidCacheError
from tfkd.cache import TeacherCache

EXAMPLES = 32


def _teacher(classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(classes)])


def _pipeline(n=EXAMPLES):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4)).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Small caches of every kind, built once; tests copy them."""
    root = tmp_path_factory.mktemp("built")
    caches = {
        "dense": dict(),
        "top_k": dict(top_k=2, store_inputs=False),
        "sharded": dict(num_shards=2),
    }
    for name, options in caches.items():
        classes = 5 if name == "top_k" else 3
        TeacherCache.build(
            _teacher(classes), _pipeline(), str(root / name), verbose=0, **options
        )
    return root


def _copy(built, name, tmp_path):
    path = str(tmp_path / name)
    shutil.copytree(str(built / name), path)
    return path


def _edit(path, change):
    metadata_path = os.path.join(path, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    change(metadata)
    with open(metadata_path, "w", encoding="utf-8") as handle:
        json.dump(metadata, handle)


def test_a_linked_array_file_is_refused_even_with_a_matching_digest(built, tmp_path):
    path = _copy(built, "dense", tmp_path)
    logits = os.path.join(path, "logits.bin")
    elsewhere = str(tmp_path / "elsewhere.bin")
    with open(elsewhere, "wb") as handle:
        handle.write(b"\x01" * os.path.getsize(logits))  # same size, other bytes
    os.remove(logits)
    os.symlink(elsewhere, logits)
    with pytest.raises(InvalidCacheError, match="symbolic link"):
        TeacherCache.open(path, checksums=False)
    digest = hashlib.sha256(open(elsewhere, "rb").read()).hexdigest()
    _edit(path, lambda m: m["arrays"]["logits"].update(sha256=digest))
    with pytest.raises(InvalidCacheError, match="symbolic link"):
        TeacherCache.open(path)


def test_a_linked_metadata_file_is_refused(built, tmp_path):
    path = _copy(built, "dense", tmp_path)
    moved = str(tmp_path / "metadata.json")
    shutil.move(os.path.join(path, "metadata.json"), moved)
    os.symlink(moved, os.path.join(path, "metadata.json"))
    with pytest.raises(InvalidCacheError, match="symbolic link"):
        TeacherCache.open(path, checksums=False)


def test_a_linked_shard_directory_is_refused(built, tmp_path):
    path = _copy(built, "sharded", tmp_path)
    shard = os.path.join(path, "shard-00001-of-00002")
    moved = str(tmp_path / "elsewhere")
    shutil.move(shard, moved)
    os.symlink(moved, shard)
    with pytest.raises(InvalidCacheError, match="symbolic link"):
        TeacherCache.open(path, checksums=False)
    with pytest.raises(InvalidCacheError, match="symbolic link"):
        TeacherCache.open(path, shard=(1, 2))


def _rss_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_an_oversize_metadata_is_refused_before_it_is_parsed(built, tmp_path):
    path = _copy(built, "dense", tmp_path)
    metadata_path = os.path.join(path, "metadata.json")
    text = open(metadata_path).read().rstrip()
    assert text.endswith("}")
    with open(metadata_path, "w") as handle:  # valid JSON, 17 MB of spaces
        handle.write(text[:-1] + " " * (17 * 2**20) + "}")
    before = _rss_bytes()
    with pytest.raises(InvalidCacheError, match="bytes"):
        TeacherCache.open(path, checksums=False)
    assert _rss_bytes() - before < 100 * 2**20


def test_deeply_nested_metadata_is_refused_without_recursion(built, tmp_path):
    path = _copy(built, "dense", tmp_path)
    with open(os.path.join(path, "metadata.json"), "w") as handle:
        handle.write('{"format": "tfkd.TeacherCache", "x": ' + "[" * 100000
                     + "]" * 100000 + "}")
    with pytest.raises(InvalidCacheError, match="levels deep"):
        TeacherCache.open(path)


def test_huge_claimed_shapes_are_refused_by_the_real_size_before_mapping(
    built, tmp_path
):
    path = _copy(built, "dense", tmp_path)
    rows = 10**11

    def claim(metadata):
        metadata.update(examples=rows, rows=rows)
        for spec in metadata["arrays"].values():
            spec["shape"][0] = rows

    _edit(path, claim)
    before = _rss_bytes()
    with pytest.raises(InvalidCacheError, match="bytes, expected"):
        TeacherCache.open(path, checksums=False)
    assert _rss_bytes() - before < 100 * 2**20


def _delete(*keys):
    def change(metadata):
        target = metadata
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(metadata):
        target = metadata
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


MALFORMED = [
    (_delete("teacher"), "`teacher`"),
    (_set("teacher", "fingerprint", 3), "`teacher.fingerprint`"),
    (_set("teacher", "outputs", "logit"), "`teacher.outputs`"),
    (_set("teacher", "ensemble", {"temperature": "hot"}), "`teacher.ensemble.temperature`"),
    (_delete("data"), "`data`"),
    (_set("outputs", "dtype", "float64"), "`outputs.dtype`"),
    (_set("outputs", "top_k", 2), "`outputs.top_k`"),
    (_delete("inputs"), "`inputs`"),
    (_set("inputs", "source_dtype", "|O"), "`inputs.source_dtype`"),
    (_set("inputs", "source_dtype", "O"), "`inputs.source_dtype`"),
    (_set("inputs", "kind", "pickle"), "`inputs.kind`"),
    (_set("augmentation", [1]), "`augmentation`"),
    (_set("layout", "striped"), "`layout`"),
    (_set("arrays", "logits", "dtype", "|b1"), "`arrays.logits.dtype`"),
]


@pytest.mark.parametrize("change, field", MALFORMED)
def test_each_malformed_field_is_named(built, tmp_path, change, field):
    path = _copy(built, "dense", tmp_path)
    _edit(path, change)
    with pytest.raises(InvalidCacheError, match=field):
        TeacherCache.open(path, checksums=False)


def test_top_k_indices_outside_the_classes_are_refused(built, tmp_path):
    path = _copy(built, "top_k", tmp_path)
    with open(os.path.join(path, "top_k_indices.bin"), "r+b") as handle:
        handle.write(np.array([7], "<i2").tobytes())  # 5 classes: 0..4
    with pytest.raises(InvalidCacheError, match="class indices"):
        TeacherCache.open(path, checksums=False)


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix + (key,)
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            yield prefix + (index,)
            yield from _paths(item, prefix + (index,))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(["<f4", "|u1", "|O", "float16", "dense", "top_k", "logits"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def _use(cache):
    """Everything a training run touches of an opened cache."""
    repr(cache)
    _ = (cache.num_examples, cache.num_views, cache.num_classes, cache.top_k,
         cache.teacher_outputs, cache.soft_target_temperature, cache.nbytes)
    cache.read(0, 2)
    if cache.stores_inputs:
        next(iter(cache.dataset(4, shuffle=False)))


@pytest.mark.parametrize("kind", ["dense", "top_k", "sharded"])
@settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_metadata_opens_correctly_or_is_an_invalid_cache(built, kind, data):
    with open(os.path.join(str(built), kind, "metadata.json")) as handle:
        original = json.load(handle)
    paths = sorted(_paths(original), key=repr)
    key_path = data.draw(st.sampled_from(paths))
    delete = data.draw(st.booleans())
    replacement = None if delete else data.draw(_JSON)
    mutated = copy.deepcopy(original)
    target = mutated
    for key in key_path[:-1]:
        target = target[key]
    if delete and isinstance(target, dict):
        del target[key_path[-1]]
    elif delete:
        target.pop(key_path[-1])
    else:
        target[key_path[-1]] = replacement
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, kind)
        shutil.copytree(os.path.join(str(built), kind), path)
        with open(os.path.join(path, "metadata.json"), "w") as handle:
            json.dump(mutated, handle)
        try:
            cache = TeacherCache.open(path, checksums=False)
        except InvalidCacheError:
            return
        _use(cache)
