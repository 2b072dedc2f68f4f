"""The process-wide memory cap (`tfkd.memory_limit`) and hostile `.keras` files."""

import json
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tfkd import memory_limit


@pytest.fixture(autouse=True)
def reset_the_cap(monkeypatch):
    monkeypatch.delenv(memory_limit.ENVIRONMENT_VARIABLE, raising=False)
    memory_limit.set_max_memory_mb(None)
    yield
    memory_limit.set_max_memory_mb(None)


def _mlp():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, name="embedding"),
         keras.layers.Dense(3)]
    )


def _resident_mb():
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    pytest.skip("needs /proc/self/status")


def _hostile_keras_file(tmp_path, num_data, max_memory_mb):
    """A small, valid `.keras` file whose CRD config asks for `num_data` rows."""
    crd = tfkd.CRD("embedding", "embedding", num_data=32, feat_dim=128,
                   num_negatives=8)
    distiller = tfkd.Distiller(teacher=_mlp(), student=_mlp(), extra_losses=[crd])
    clean = tmp_path / "clean.keras"
    distiller.save(clean)
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                term = config["config"]["extra_losses"][0]["config"]
                term["num_data"] = num_data
                term["max_memory_mb"] = max_memory_mb  # the file "allows" it
                data = json.dumps(config).encode()
            target.writestr(item, data)
    assert hostile.stat().st_size < 100_000
    return hostile


def test_a_hostile_keras_file_cannot_allocate_past_the_process_cap(tmp_path):
    # 1.5 GB of memory banks, with max_memory_mb raised in the same file:
    # refused before anything is allocated, safe_mode or not.
    hostile = _hostile_keras_file(tmp_path, 1_500_000, 1e9)
    before = _resident_mb()
    for safe_mode in (True, False):
        with pytest.raises(
            ValueError,
            match=r"Invalid value for argument `num_data`. Expected a size "
            r"within the memory limit of 1024 MB: CRD's two memory banks.* "
            r"would take 1536.0 MB.*TFKD_MAX_MEMORY_MB, never from a saved "
            r"file\). Received: num_data=1500000",
        ):
            keras.saving.load_model(hostile, safe_mode=safe_mode)
    assert _resident_mb() - before < 100


def test_the_cap_comes_from_the_environment_or_the_code(monkeypatch):
    assert memory_limit.get_max_memory_mb() == memory_limit.DEFAULT_MAX_MEMORY_MB
    monkeypatch.setenv(memory_limit.ENVIRONMENT_VARIABLE, "0.05")
    with pytest.raises(ValueError, match="num_data"):
        tfkd.CRD(num_data=1000, feat_dim=128)  # 1.0 MB > 0.05 MB
    memory_limit.set_max_memory_mb(2.0)
    tfkd.CRD(num_data=1000, feat_dim=128)
    monkeypatch.setenv(memory_limit.ENVIRONMENT_VARIABLE, "lots")
    memory_limit.set_max_memory_mb(None)
    with pytest.raises(ValueError, match="TFKD_MAX_MEMORY_MB"):
        memory_limit.get_max_memory_mb()


def test_max_memory_mb_can_only_lower_the_cap():
    memory_limit.set_max_memory_mb(1.0)
    with pytest.raises(ValueError, match="memory limit of 1 MB"):
        tfkd.CRD(num_data=2000, feat_dim=128, max_memory_mb=1e6)  # 2 MB
    with pytest.raises(ValueError, match="max_memory_mb=0.5"):
        tfkd.CRD(num_data=1000, feat_dim=128, max_memory_mb=0.5)  # 1 MB


def test_the_embeddings_count_too():
    memory_limit.set_max_memory_mb(1.0)
    crd = tfkd.CRD("embedding", "embedding", num_data=10, feat_dim=512,
                   num_negatives=8)
    wide = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1000, name="embedding"),
                             keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="feat_dim.*embeddings"):
        tfkd.Distiller(teacher=wide, student=_mlp(), extra_losses=[crd])
    assert np.isfinite(memory_limit.get_max_memory_mb())
