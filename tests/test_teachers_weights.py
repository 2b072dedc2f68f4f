"""Tests for tfkd/teachers/weights.py (and `weights=` of `build`)."""

import os
import socket

import keras
import numpy as np
import pytest

from tfkd.teachers import InferenceMode
from tfkd.teachers import build
from tfkd.teachers import find_backbone
from tfkd.teachers import registry
from tfkd.teachers import weights

FAMILY = "mobilenetv3small"  # the fastest family to build


def _backbone(teacher):
    return find_backbone(teacher)


def _random_backbone(seed):
    keras.utils.set_random_seed(seed)
    return weights.instantiate_backbone(
        registry.get_family(FAMILY), (32, 32, 3), None)


def test_validate_weights_accepts_none_imagenet_and_files(tmp_path):
    path = tmp_path / "backbone.weights.h5"
    path.write_bytes(b"")
    assert weights.validate_weights(None) is None
    assert weights.validate_weights("imagenet") == "imagenet"
    assert weights.validate_weights(path) == str(path)


def test_validate_weights_rejects_missing_file(tmp_path):
    with pytest.raises(ValueError, match="No file exists"):
        weights.validate_weights(str(tmp_path / "missing.h5"))


def test_validate_weights_rejects_unknown_suffix(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="argument `weights`"):
        weights.validate_weights(str(path))


def test_validate_weights_rejects_other_types():
    with pytest.raises(TypeError, match="weights=3"):
        weights.validate_weights(3)


def test_local_weights_h5_file_loads(tmp_path):
    source = _random_backbone(seed=1)
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(2)  # a different random init
    teacher = build(FAMILY, 3, (28, 28, 1), weights=path)
    # Loaded weights are protected: the backbone runs in inference mode.
    assert isinstance(teacher.get_layer("backbone"), InferenceMode)
    loaded = _backbone(teacher).get_weights()
    expected = source.get_weights()
    assert len(loaded) == len(expected)
    for a, b in zip(loaded, expected):
        np.testing.assert_array_equal(a, b)


def test_local_legacy_h5_file_loads(tmp_path):
    # The `*_notop.h5` files keras.applications downloads are legacy HDF5
    # files; a user copying one from another machine passes its path.
    h5py = pytest.importorskip("h5py")
    from keras.src.legacy.saving import legacy_h5_format

    source = _random_backbone(seed=3)
    path = str(tmp_path / "mobilenet_v3_small_notop.h5")
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, source)
    keras.utils.set_random_seed(4)
    teacher = build(FAMILY, 3, (32, 32, 3), weights=path)
    for a, b in zip(_backbone(teacher).get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_file_of_another_family_is_explained(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not hold weights of the"):
        build(FAMILY, 3, (32, 32, 3), weights=path)


def _offline():
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return True
    return False


def test_imagenet_download_failure_explains_local_file():
    # Real download attempt: only meaningful (and fast) without network.
    if not _offline():
        pytest.skip("network available: the download would succeed")
    cache = weights.keras_cache_dir()
    if os.path.isdir(cache) and any(
        "mobilenet_v3_small" in name for name in os.listdir(cache)
    ):
        pytest.skip("ImageNet weights already cached")
    with pytest.raises(RuntimeError) as info:
        build(FAMILY, 3, (32, 32, 3), weights="imagenet")
    message = str(info.value)
    assert "weights='imagenet'" in message
    assert "Could not download" in message
    assert "weights='/path/to/" in message
    assert cache in message
    assert ".weights.h5" in message


def test_download_failure_detection():
    assert weights._is_download_failure(
        Exception("URL fetch failure on https://x: None -- offline"))
    assert weights._is_download_failure(ConnectionError("reset"))
    assert not weights._is_download_failure(ValueError("bad input shape"))
