"""Tests of tfkd/cache/owned.py: a rebuild replaces only what tfkd made.

Through the public API only (`TeacherCache.build/open`), so each test also
states the contract for users.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.cache import TeacherCache
from tfkd.utils.ownership import ForeignPathError

MARKER = ".tfkd-owner.json"


def _teacher(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _pipeline(n=32):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4)).astype("float32")
    y = rng.integers(0, 3, n).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _user_directory(tmp_path):
    """A directory that is not a cache: a thesis and a photo folder."""
    data = tmp_path / "data"
    (data / "photos").mkdir(parents=True)
    (data / "thesis.tex").write_text("\\documentclass{article}")
    (data / "photos" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    return data


def _tree(directory):
    return sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, dirs, names in os.walk(directory)
        for name in dirs + names
    )


def test_a_rebuild_never_deletes_a_directory_that_is_not_a_cache(tmp_path):
    data = _user_directory(tmp_path)
    before = _tree(data)
    with pytest.raises(ForeignPathError, match=r"thesis\.tex") as error:
        TeacherCache.open(
            str(data), teacher=_teacher(), dataset=_pipeline(),
            on_stale="rebuild", verbose=0,
        )
    assert str(data) in str(error.value)
    with pytest.raises(ForeignPathError, match=r"photos"):
        TeacherCache.build(
            _teacher(), _pipeline(), str(data), overwrite=True, verbose=0
        )
    assert _tree(data) == before
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no partial, no lock left


def test_a_sharded_build_never_writes_into_a_foreign_directory(tmp_path):
    data = _user_directory(tmp_path)
    before = _tree(data)
    with pytest.raises(ForeignPathError, match=r"thesis\.tex"):
        TeacherCache.build(
            _teacher(), _pipeline(), str(data), num_shards=2, overwrite=True,
            verbose=0,
        )
    assert _tree(data) == before


def test_a_cache_with_files_added_is_not_replaced(tmp_path):
    path = str(tmp_path / "cache")
    TeacherCache.build(_teacher(), _pipeline(), path, verbose=0)
    with open(os.path.join(path, "notes.txt"), "w") as handle:
        handle.write("my notes")
    with pytest.raises(ForeignPathError, match=r"notes\.txt"):
        TeacherCache.build(_teacher(1), _pipeline(), path, overwrite=True, verbose=0)
    assert open(os.path.join(path, "notes.txt")).read() == "my notes"
    TeacherCache.open(path)  # still the first cache, intact


def test_caches_of_an_earlier_tfkd_open_and_are_replaced_when_verifiable(tmp_path):
    path = str(tmp_path / "cache")
    first = TeacherCache.build(_teacher(0), _pipeline(), path, verbose=0)
    if os.path.exists(os.path.join(path, MARKER)):
        os.remove(os.path.join(path, MARKER))  # as written before the marker
    assert TeacherCache.open(path).num_examples == 32
    rebuilt = TeacherCache.open(
        path, teacher=_teacher(1), dataset=_pipeline(), on_stale="rebuild",
        verbose=0,
    )
    assert rebuilt.metadata["teacher"]["fingerprint"] != (
        first.metadata["teacher"]["fingerprint"]
    )
    assert os.path.exists(os.path.join(path, MARKER))  # now marked


def test_an_unmarked_cache_with_other_entries_is_not_replaced(tmp_path):
    path = str(tmp_path / "cache")
    TeacherCache.build(_teacher(), _pipeline(), path, verbose=0)
    if os.path.exists(os.path.join(path, MARKER)):
        os.remove(os.path.join(path, MARKER))
    os.mkdir(os.path.join(path, "results"))
    with pytest.raises(ForeignPathError, match="results"):
        TeacherCache.build(_teacher(1), _pipeline(), path, overwrite=True, verbose=0)
    assert os.path.isdir(os.path.join(path, "results"))


def test_an_unmarked_directory_with_a_forged_metadata_is_not_replaced(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    (path / "metadata.json").write_text(json.dumps({"format": "tfkd.TeacherCache"}))
    (path / "thesis.tex").write_text("x")
    with pytest.raises(ForeignPathError, match="thesis"):
        TeacherCache.build(_teacher(), _pipeline(), str(path), overwrite=True, verbose=0)
    assert (path / "thesis.tex").exists()
