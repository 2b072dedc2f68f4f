"""Tests of tfkd/environment_report.py and `python -m tfkd doctor`.

What the doctor reports about this machine is checked against what
TensorFlow itself says (GPUs, CUDA build, installed distributions), so the
tests hold on a CPU runner and on a GPU one alike. Version combinations
that are not installed are checked through the pure `check_versions`.
"""

import importlib.metadata
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tfkd.__main__ import main as cli_main

from tfkd import environment_report as doctor_lib


@pytest.fixture(scope="module")
def report():
    return doctor_lib.doctor(print_report=False)


def problems(report):
    return [(p.severity, p.summary, p.fix) for p in report.problems]


def _visible_gpus():
    return tf.config.list_physical_devices("GPU")


def _installed(name):
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_reports_versions_and_devices(report):
    facts = report.facts
    import keras

    assert facts["keras"] == keras.__version__
    tensorflow = facts.get("tensorflow") or facts.get("tensorflow-cpu")
    assert tensorflow == tf.__version__
    assert facts["keras backend"] == "tensorflow"
    gpus = _visible_gpus()
    if gpus:
        assert facts["GPUs"] != "none"
        assert facts["GPUs"].count(", ") == len(gpus) - 1
    else:
        assert facts["GPUs"] == "none"
    cuda_build = bool(tf.sysconfig.get_build_info().get("is_cuda_build"))
    assert facts["CUDA build"].startswith("yes" if cuda_build else "no")


def test_a_missing_gpu_comes_with_the_fix(report):
    missing = [p for p in report.problems if "No GPU" in p.summary]
    if _visible_gpus():
        assert missing == []
        return
    (gpu,) = missing
    assert gpu.severity == "warning"
    assert 'pip install "tensorflow[and-cuda]"' in gpu.fix
    cuda_build = bool(tf.sysconfig.get_build_info().get("is_cuda_build"))
    if _installed("tensorflow-cpu") or not cuda_build:
        assert "uninstall -y tensorflow-cpu" in gpu.fix
    assert report.ok  # a warning, not an error


def test_mixed_precision_and_xla_were_run(report):
    assert report.facts["mixed precision"] == (
        "mixed_float16 ok, mixed_bfloat16 ok"
    )
    assert report.facts["XLA"] == "ok"


def test_this_environment_has_no_errors(report):
    assert [p for p in problems(report) if p[0] == "error"] == []


def test_printed_report(capsys):
    report = doctor_lib.doctor(print_report=True)
    text = capsys.readouterr().out
    assert text.startswith("tfkd doctor")
    for problem in report.problems:
        assert f"[{problem.severity}] {problem.summary}" in text
        assert f"    fix: {problem.fix}" in text


@pytest.mark.parametrize(
    "platform_name, expected",
    [("win32", "WSL2"), ("darwin", "tensorflow-metal"), ("linux", "and-cuda")],
)
def test_gpu_fix_depends_on_the_platform(platform_name, expected):
    import tensorflow as tf

    report = doctor_lib.Report()
    doctor_lib.check_gpus(tf, {}, report, platform_name=platform_name)
    (problem,) = report.problems
    assert expected in problem.fix


GOOD = {
    "tensorflow-cpu": "2.21.0",
    "keras": "3.12.4",
    "autokeras": "3.0.0",
    "keras-tuner": "1.4.8",
    "tensorboard": "2.21.0",
    "tensorflow-datasets": "4.9.10",
}


def check(**changes):
    versions = {**GOOD, **changes}
    versions = {k: v for k, v in versions.items() if v is not None}
    report = doctor_lib.Report()
    doctor_lib.check_versions(versions, report, platform_name="linux")
    return problems(report)


def test_known_good_combination():
    assert check() == []


def test_autokeras_3_0_on_keras_3_13_breaks():
    ((severity, summary, fix),) = check(keras="3.13.0")
    assert severity == "error"
    assert "Dense(units=numpy.int64)" in summary
    assert 'pip install "keras<3.13"' in fix
    assert check(keras="3.13.0", autokeras=None) == []


def test_keras_tuner_needs_tensorboard():
    ((severity, _, fix),) = check(tensorboard=None)
    assert severity == "error"
    assert fix == "pip install tensorboard"


def test_tensorflow_and_tensorflow_cpu_together():
    ((severity, summary, fix),) = check(tensorflow="2.21.0")
    assert severity == "error"
    assert "Both tensorflow 2.21.0 and tensorflow-cpu 2.21.0" in summary
    assert fix.startswith("pip uninstall -y tensorflow tensorflow-cpu")


def test_old_tensorflow_and_keras_2():
    found = check(**{"tensorflow-cpu": "2.15.1", "keras": "2.15.0"})
    summaries = " ".join(summary for _, summary, _ in found)
    assert "older than 2.16" in summaries
    assert "Keras 2.15.0 is Keras 2" in summaries


def test_missing_tensorflow_on_windows_points_to_wsl2():
    versions = {k: v for k, v in GOOD.items() if k != "tensorflow-cpu"}
    report = doctor_lib.Report()
    doctor_lib.check_versions(versions, report, platform_name="win32")
    ((severity, summary, fix),) = problems(report)
    assert summary == "TensorFlow is not installed."
    assert "WSL2" in fix


def test_declared_requirements_of_this_environment_hold():
    report = doctor_lib.Report()
    doctor_lib.check_declared_requirements(
        ["tensorflow", "tensorflow-cpu", "autokeras", "keras-tuner"], report
    )
    assert report.problems == []


def test_parse_version():
    assert doctor_lib.parse_version("3.13.0.dev2025") == (3, 13, 0)
    assert doctor_lib.parse_version(None) == ()


def test_severity_is_validated():
    with pytest.raises(ValueError, match="argument `severity`"):
        doctor_lib.Report().add("fatal", "x", "y")


def test_cli_in_process_exits_0(capsys):
    assert cli_main(["doctor"]) == 0
    assert "tfkd doctor" in capsys.readouterr().out


def test_python_m_tfkd_doctor_strict():
    # A fresh interpreter, as a user runs it; --strict fails on any
    # problem, a missing GPU included.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-m", "tfkd", "doctor", "--strict"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    problems = doctor_lib.doctor(print_report=False).problems
    assert result.returncode == (1 if problems else 0), result.stderr
    for problem in problems:
        assert problem.summary in result.stdout
    assert "Traceback" not in result.stderr
