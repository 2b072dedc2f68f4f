"""`tfkd.doctor()` on every Keras backend (issue #23).

A JAX or PyTorch user is never told to install or switch to TensorFlow:
the doctor reports JAX's devices or `torch.cuda.is_available()` and how to
get a GPU there. The real report of this machine is checked against what
the backend itself says; the advice for other machines (a GPU expected but
not seen, Windows, macOS) is checked through fake `jax`/`torch` modules.
TensorFlow's own checks are tested in tests/test_environment_report.py.
"""

import sys
import types

import keras
import pytest

from tfkd import environment_report as doctor_lib


def _problems(report):
    return [(p.severity, p.summary, p.fix) for p in report.problems]


def test_the_report_of_this_backend_asks_for_tensorflow_only_on_tensorflow():
    backend = keras.backend.backend()
    imported_before = "tensorflow" in sys.modules
    report = doctor_lib.doctor(print_report=False)
    assert report.facts["keras backend"] == backend
    if backend == "tensorflow":
        return  # tests/test_environment_report.py
    for severity, summary, fix in _problems(report):
        assert "tensorflow" not in (summary + fix).lower(), (severity, summary, fix)
    # TensorFlow's checks did not run, and did not import it.
    assert "XLA" not in report.facts and "mixed precision" not in report.facts
    assert ("tensorflow" in sys.modules) == imported_before
    errors = [p for p in report.problems if p.severity == "error"]
    if backend in doctor_lib.training_backends():
        assert errors == []
    else:  # PyTorch before its step lands: that, and the way out
        ((summary, fix),) = [(p.summary, p.fix) for p in errors]
        assert f"{backend!r} backend" in summary and "KERAS_BACKEND=jax" in fix


def test_the_report_lists_this_backends_devices():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        report = doctor_lib.Report()
        doctor_lib.check_jax_devices(jax, report)
        assert report.facts["jax devices"].count(", ") == len(jax.devices()) - 1
        for device in jax.devices():
            assert f"{device.platform}:{device.id}" in report.facts["jax devices"]
        accelerated = any(d.platform != "cpu" for d in jax.devices())
        assert (report.problems == []) == accelerated
    elif backend == "torch":
        import torch

        report = doctor_lib.Report()
        doctor_lib.check_torch_devices(torch, report)
        available = torch.cuda.is_available()
        assert report.facts["torch.cuda.is_available()"].startswith(str(available))
    else:
        pytest.skip("TensorFlow's GPUs: tests/test_environment_report.py")


def test_the_imports_are_the_backends():
    backend = keras.backend.backend()
    report = doctor_lib.Report()
    modules = doctor_lib.check_imports(report, backend)
    assert report.problems == []
    assert "keras" in modules and doctor_lib.BACKEND_MODULES[backend] in modules
    if backend != "tensorflow":
        assert "tensorflow" not in modules and "autokeras" not in modules


def _fake_jax(*devices):
    return types.SimpleNamespace(devices=lambda: [
        types.SimpleNamespace(platform=platform, id=i, device_kind=kind)
        for i, (platform, kind) in enumerate(devices)
    ])


def test_jax_without_a_gpu_gets_the_fix_for_its_machine():
    cpu_only = _fake_jax(("cpu", "cpu"))
    cases = [
        ("linux", True, ["CPU-only", 'pip install -U "jax[cuda12]"', "jax[tpu]"]),
        ("linux", False, ["install the NVIDIA driver", "jax[cuda12]"]),
        ("win32", True, ["WSL2", "jax[cuda12]"]),
        ("darwin", False, ["jax-metal"]),
    ]
    for platform_name, driver, expected in cases:
        report = doctor_lib.Report()
        doctor_lib.check_jax_devices(
            cpu_only, report, platform_name=platform_name, nvidia_driver=driver
        )
        ((severity, summary, fix),) = _problems(report)
        assert severity == "warning" and "No GPU or TPU is visible to JAX" in summary
        for text in expected:
            assert text in fix, (platform_name, driver, fix)
        assert "tensorflow" not in fix.lower()
        assert report.facts["jax devices"] == "cpu:0 (cpu)"


def test_jax_with_a_gpu_or_tpu_has_no_problem():
    for devices in ([("gpu", "NVIDIA H200")], [("tpu", "TPU v4"), ("tpu", "TPU v4")]):
        report = doctor_lib.Report()
        doctor_lib.check_jax_devices(_fake_jax(*devices), report, "linux", True)
        assert report.problems == []
        assert report.facts["jax devices"].startswith(f"{devices[0][0]}:0 ({devices[0][1]})")


def _fake_torch(available, built_for, mps=False):
    return types.SimpleNamespace(
        version=types.SimpleNamespace(cuda=built_for),
        cuda=types.SimpleNamespace(
            is_available=lambda: available,
            device_count=lambda: 2,
            get_device_name=lambda index: "NVIDIA H200",
        ),
        backends=types.SimpleNamespace(
            mps=types.SimpleNamespace(is_available=lambda: mps)
        ),
    )


def test_torch_without_cuda_gets_the_fix_for_its_machine():
    cases = [
        (_fake_torch(False, None), "linux", True, "CPU-only build"),
        (_fake_torch(False, None), "win32", True, "download.pytorch.org/whl/cu"),
        (_fake_torch(False, "12.6"), "linux", False, "install the NVIDIA driver"),
        (_fake_torch(False, "12.6"), "linux", True, "update the NVIDIA driver"),
        (_fake_torch(False, None, mps=False), "darwin", False, "MPS"),
    ]
    for torch, platform_name, driver, expected in cases:
        report = doctor_lib.Report()
        doctor_lib.check_torch_devices(torch, report, platform_name, driver)
        ((severity, summary, fix),) = _problems(report)
        assert severity == "warning"
        assert "torch.cuda.is_available() is False" in summary
        assert expected in fix, (platform_name, driver, fix)
        assert "tensorflow" not in fix.lower()
        assert report.facts["torch.cuda.is_available()"] == "False"


def test_torch_with_cuda_or_mps_has_no_problem():
    report = doctor_lib.Report()
    doctor_lib.check_torch_devices(_fake_torch(True, "12.6"), report, "linux", True)
    assert report.problems == []
    assert report.facts["torch.cuda.is_available()"] == "True (2 x NVIDIA H200)"
    assert report.facts["torch CUDA build"] == "12.6"
    report = doctor_lib.Report()
    doctor_lib.check_torch_devices(_fake_torch(False, None, mps=True), report, "darwin", False)
    assert report.problems == [] and report.facts["torch MPS"] == "available"


def test_tensorflow_is_required_on_the_tensorflow_backend_only():
    versions = {"keras": "3.15.1", "jax": "0.7.0", "numpy": "2.3.0"}
    for backend in ("jax", "torch"):
        report = doctor_lib.Report()
        doctor_lib.check_versions(versions, report, "linux", backend=backend)
        assert report.problems == []
    report = doctor_lib.Report()
    doctor_lib.check_versions(versions, report, "linux", backend="tensorflow")
    assert [p.summary for p in report.problems] == ["TensorFlow is not installed."]


@pytest.mark.parametrize("backend, errors", [
    ("tensorflow", 0), ("jax", 0), ("numpy", 1), ("openvino", 1),
])
def test_a_backend_without_a_training_step_is_an_error_with_the_fix(backend, errors):
    fake_keras = types.SimpleNamespace(
        backend=types.SimpleNamespace(backend=lambda: backend)
    )
    report = doctor_lib.Report()
    doctor_lib.check_backend(fake_keras, report, backends=("tensorflow", "jax"))
    assert report.facts["keras backend"] == backend
    found = [p for p in report.problems if p.severity == "error"]
    assert len(found) == errors
    if errors:
        assert f"{backend!r} backend" in found[0].summary
        assert "KERAS_BACKEND=jax" in found[0].fix
        assert "tensorflow" not in (found[0].summary + found[0].fix).lower()
    # Where TensorFlow is the one backend left, it is the advice.
    report = doctor_lib.Report()
    doctor_lib.check_backend(fake_keras, report, backends=("tensorflow",))
    if backend != "tensorflow":
        assert "KERAS_BACKEND=tensorflow" in report.problems[0].fix
    assert set(doctor_lib.training_backends()) >= {"tensorflow", "jax"}
