"""scripts/gpu_check.py: its core trains every arm on the backend at hand.

The GPU itself is not here; the test runs `measure` and `check` (what the
script does on the GPU) on the CPU, on a tiny synthetic dataset, so the
script cannot rot between GPU runs. Runs on TensorFlow and on JAX.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _script()


def _npz(path, count=96):
    """Fashion-MNIST-shaped uint8 images whose class is a bright row band."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % 10
    images = rng.integers(0, 60, size=(count, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label:2 * label + 4] = 255
    np.savez(path, x_train=images, y_train=labels.astype(np.uint8),
             x_test=images[:32], y_test=labels[:32].astype(np.uint8))
    return path


def test_every_arm_trains_and_the_kd_losses_fall(tmp_path):
    import keras

    sizes = gpu_check.PRESETS["tiny"]
    data = gpu_check.load_data(_npz(tmp_path / "data.npz"),
                               sizes["teacher_examples"], sizes["test_examples"])
    figures = gpu_check.measure(data, backend=keras.backend.backend(),
                                workdir=tmp_path, log=lambda line: None, **sizes)
    assert set(figures["images_per_second"]) == set(gpu_check.ARMS)
    for arm in gpu_check.ARMS:
        rates = figures["images_per_second"][arm]
        assert 0 < rates["min"] <= rates["median"] <= rates["max"]
        assert rates["repeats"] == sizes["repeats"]
    assert set(figures["ratios"]) == {f"{arm}_over_student" for arm in gpu_check.ARMS[1:]}
    for arm in gpu_check.ARMS[1:]:
        assert set(figures["losses"][arm]) == {"loss", "student_loss", "distillation_loss"}
    checks = gpu_check.check(figures, min_accuracy=0.0)
    assert checks["kd_losses_fell"] and checks["passed"]
    assert not gpu_check.check(figures, min_accuracy=1.0)["passed"]


def test_check_fails_when_a_kd_loss_does_not_fall():
    losses = {"loss": {"first_epoch": 1.0, "last_epoch": 0.5}}
    figures = {"losses": {arm: dict(losses) for arm in gpu_check.ARMS},
               "test_accuracy": {arm: 0.9 for arm in gpu_check.ARMS}}
    assert gpu_check.check(figures, 0.5)["passed"]
    figures["losses"]["cached"] = {"distillation_loss": {"first_epoch": 0.2,
                                                         "last_epoch": 0.3}}
    assert not gpu_check.check(figures, 0.5)["kd_losses_fell"]


def test_an_empty_wheels_folder_says_how_to_fill_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make gpu-wheels"):
        gpu_check.install_wheels(tmp_path, log=lambda line: None)


def test_the_committed_runs_name_a_clean_commit_and_their_device():
    import json
    import re
    import subprocess

    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", "HEAD", "--",
         "benchmarks/results/gpu_check"], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    paths = [p for p in listed.stdout.split() if p.endswith(".json")]
    assert paths, "no committed gpu_check run"
    for path in paths:
        result = json.loads(subprocess.run(
            ["git", "-C", str(ROOT), "show", f"HEAD:{path}"],
            capture_output=True, text=True, check=True).stdout)
        assert re.fullmatch(r"[0-9a-f]{40}", result["git"]["commit"]), path
        assert result["git"]["clean"] is True, path
        # The file's name says what it ran on, and so does the result.
        backend, accelerator = pathlib.PurePosixPath(path).stem.split("-")
        assert (result["backend"], result["device"]["accelerator"]) == (backend, accelerator)
        assert result["ran_on"].startswith("GPU" if accelerator == "gpu" else "CPU, not a GPU")
        assert result["checks"]["passed"], path
