"""Tests of tfkd/cache/shards.py: sharded builds, finalize, untrusted metadata."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.cache import InvalidCacheError
from tfkd.cache import TeacherCache
from tfkd.cache import shards
from tfkd.utils import files

EXAMPLES = 96


def _pipeline(batch_size=16):
    rng = np.random.default_rng(0)
    x = rng.random((EXAMPLES, 6)).astype("float32")
    y = rng.integers(0, 3, EXAMPLES).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _teacher(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])


@pytest.fixture
def sharded(tmp_path):
    path = str(tmp_path / "cache")
    TeacherCache.build(_teacher(), _pipeline(), path, num_shards=2, verbose=0)
    return path


def _edit(path, edit):
    metadata_path = os.path.join(path, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    edit(metadata)
    files.write_json_atomically(metadata_path, metadata)


def _reseal(path, index):
    """Records a shard's edited metadata in the top level (a forger would)."""
    name = shards.shard_name(index, 2)
    digest = files.sha256_of(os.path.join(path, name, "metadata.json"))
    _edit(path, lambda m: m["shards"][index].update(metadata_sha256=digest))


def test_shards_hold_the_dataset_batches_round_robin(sharded, tmp_path):
    plain = TeacherCache.build(_teacher(), _pipeline(), str(tmp_path / "p"), verbose=0)
    cache = TeacherCache.open(sharded)
    assert cache.num_shards == 2 and cache.num_examples == EXAMPLES
    assert cache.metadata["format_version"] == 2
    _, _, logits = plain.read()
    # Shard 0 holds batches 0, 2, 4 and shard 1 batches 1, 3, 5 (of 16 rows).
    first = TeacherCache.open(sharded, shard=(0, 2))
    expected = np.concatenate([logits[b * 16:(b + 1) * 16] for b in (0, 2, 4)])
    np.testing.assert_array_equal(first.read()[2], expected)
    assert first.opened_shards == [os.path.join(sharded, "shard-00000-of-00002")]
    streamed = np.concatenate(
        [t["teacher_logits"] for _, t in first.dataset(16, shuffle=False)]
    )
    np.testing.assert_array_equal(streamed, expected)
    np.testing.assert_array_equal(np.sort(cache.read()[1]), np.sort(plain.read()[1]))


def test_a_shard_build_waits_for_the_others_then_finalizes(tmp_path):
    path = str(tmp_path / "cache")
    first = TeacherCache.build(
        _teacher(), _pipeline(), path, num_shards=2, shard_index=1, verbose=0
    )
    assert first is None  # shard 0 is still missing
    with pytest.raises(FileNotFoundError, match=r"shards \[0\] of 2"):
        TeacherCache.finalize(path)
    with pytest.raises(InvalidCacheError, match="finalize"):
        TeacherCache.open(path)
    last = TeacherCache.build(
        _teacher(), _pipeline(), path, num_shards=2, shard_index=0, verbose=0
    )
    assert last.shard_indices == [0]
    assert TeacherCache.open(path).num_examples == EXAMPLES


def test_finalize_refuses_shards_of_another_teacher(tmp_path):
    path = str(tmp_path / "cache")
    TeacherCache.build(_teacher(0), _pipeline(), path, num_shards=2, shard_index=0, verbose=0)
    with pytest.raises(InvalidCacheError, match="teacher.fingerprint"):
        # The last shard's build finalizes, and finds the mismatch.
        TeacherCache.build(
            _teacher(1), _pipeline(), path, num_shards=2, shard_index=1, verbose=0
        )
    with pytest.raises(InvalidCacheError, match="teacher.fingerprint"):
        TeacherCache.finalize(path)


def test_shard_directory_names_cannot_leave_the_cache(sharded):
    _edit(sharded, lambda m: m["shards"][1].update(directory="../evil"))
    with pytest.raises(InvalidCacheError, match=r"`shards\[1\]\.directory`"):
        TeacherCache.open(sharded)


def test_shard_counts_must_agree_with_the_list_and_the_total(sharded):
    _edit(sharded, lambda m: m.update(num_shards=3))
    with pytest.raises(InvalidCacheError, match="`shards`"):
        TeacherCache.open(sharded)
    _edit(sharded, lambda m: m.update(num_shards=2, rows=EXAMPLES + 1))
    with pytest.raises(InvalidCacheError, match="`rows`"):
        TeacherCache.open(sharded)


def test_shard_counts_must_agree_with_the_shard_arrays(sharded):
    def shift(metadata):  # consistent sums, but shard 0 claims 8 more rows
        for entry, delta in zip(metadata["shards"], (8, -8)):
            entry["rows"] += delta
            entry["examples"] += delta

    _edit(sharded, shift)
    with pytest.raises(InvalidCacheError, match=r"`shards\[0\]\.examples`"):
        TeacherCache.open(sharded)
    _edit(sharded, lambda m: [e.update(examples=e["rows"] - d) for e, d in zip(m["shards"], (8, -8))])
    with pytest.raises(InvalidCacheError, match=r"`shards\[0\]\.rows`"):
        TeacherCache.open(sharded)


def test_a_modified_shard_metadata_is_refused(sharded):
    shard = os.path.join(sharded, "shard-00000-of-00002")
    metadata_path = os.path.join(shard, "metadata.json")
    with open(metadata_path, encoding="utf-8") as handle:
        metadata = json.load(handle)
    metadata["arrays"]["logits"]["file"] = "../../logits.bin"
    files.write_json_atomically(metadata_path, metadata)
    with pytest.raises(InvalidCacheError, match=r"`shards\[0\]\.metadata_sha256`"):
        TeacherCache.open(sharded)
    _reseal(sharded, 0)  # the checks of the shard itself still hold
    with pytest.raises(InvalidCacheError, match="`arrays.logits.file`"):
        TeacherCache.open(sharded)
    metadata["arrays"]["logits"].update(file="logits.bin", dtype="|O")
    files.write_json_atomically(metadata_path, metadata)
    _reseal(sharded, 0)
    with pytest.raises(InvalidCacheError, match="`arrays.logits.dtype`"):
        TeacherCache.open(sharded)


def test_a_corrupted_shard_file_is_refused_by_its_reader_only(sharded):
    with open(os.path.join(sharded, "shard-00001-of-00002", "logits.bin"), "r+b") as f:
        f.write(b"\x00\x01")
    TeacherCache.open(sharded, shard=(0, 2))  # shard 1 is not read
    with pytest.raises(InvalidCacheError, match="checksum"):
        TeacherCache.open(sharded, shard=(1, 2))


def test_logits_only_digests_are_untrusted_too(tmp_path):
    path = str(tmp_path / "lean")
    TeacherCache.build(_teacher(), _pipeline(), path, store_inputs=False, verbose=0)
    _edit(path, lambda m: m["order"].update(block_digests=[]))
    with pytest.raises(InvalidCacheError, match="`order.block_digests`"):
        TeacherCache.open(path)


def test_one_worker_attaches_its_own_shard_of_the_pipeline(tmp_path):
    path = str(tmp_path / "lean")
    TeacherCache.build(
        _teacher(), _pipeline(), path, num_shards=2, store_inputs=False, verbose=0
    )
    full = TeacherCache.open(path)
    with pytest.raises(ValueError, match="`shard`"):
        full.attach(_pipeline())
    second = TeacherCache.open(path, shard=(1, 2))
    joined = list(second.attach(_pipeline()))
    assert [int(x.shape[0]) for x, _ in joined] == [16, 16, 16]
    assert second.opened_shards == [os.path.join(path, "shard-00001-of-00002")]


def test_shard_arguments_are_checked(sharded):
    with pytest.raises(ValueError, match="`shard`"):
        TeacherCache.open(sharded, shard=(2, 2))
    with pytest.raises(ValueError, match="`shard`"):
        TeacherCache.open(sharded, shard=(0, 3))  # 3 workers, 2 shards
    with pytest.raises(TypeError, match="`shard`"):
        TeacherCache.open(sharded, shard=1)
    with pytest.raises(ValueError, match="`shard_index`"):
        TeacherCache.build(_teacher(), _pipeline(), "unused", shard_index=0)
    with pytest.raises(ValueError, match="`shard_index`"):
        TeacherCache.build(_teacher(), _pipeline(), "unused", num_shards=2, shard_index=2)
    with pytest.raises(FileExistsError):
        TeacherCache.build(_teacher(), _pipeline(), sharded, num_shards=2, verbose=0)


def test_worker_from_tf_config_counts_a_chief_first():
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
              "task": {"type": "worker", "index": 1}}
    assert shards.worker_from_tf_config({"TF_CONFIG": json.dumps(config)}) == (2, 3)
    assert shards.worker_from_tf_config({}) == (0, 1)
