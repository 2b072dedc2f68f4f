"""`import tfkd` and its modules without TensorFlow (issue #23).

Each check runs in a subprocess where `import tensorflow` fails (a `None`
entry in `sys.modules`, as if it were not installed), on the current Keras
backend or, where TensorFlow is the backend, on another one
(`conftest.python_on_another_backend`).
`STILL_NEED_TENSORFLOW` lists the modules that cannot import without it
yet; the list only shrinks: a module that starts to import fails this test
until it is taken off the list.
"""

import json
import os
import pathlib
import subprocess

from conftest import python_on_another_backend

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Modules that still import TensorFlow, and why: keras-tuner imports
#: TensorFlow itself.
STILL_NEED_TENSORFLOW = {
    "tfkd.tuning": "keras-tuner imports TensorFlow",
    "tfkd.tuning.budget": "package tfkd.tuning",
    "tfkd.tuning.heatmap": "package tfkd.tuning",
    "tfkd.tuning.hypermodel": "package tfkd.tuning",
    "tfkd.tuning.memory_cache": "package tfkd.tuning",
    "tfkd.tuning.result": "package tfkd.tuning",
    "tfkd.tuning.tuner": "package tfkd.tuning",
}

_PRELUDE = """
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` now fails
"""


def _run(code):
    python, backend = python_on_another_backend()
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [python, "-c", _PRELUDE + code], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _module_names():
    names = []
    for path in sorted((ROOT / "tfkd").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def test_every_module_but_the_listed_ones_imports_without_tensorflow():
    failed = _run(f"""
import importlib, json
failed = {{}}
for name in {_module_names()!r}:
    # From scratch: a submodule a failed package import left behind must
    # not count as imported.
    for loaded in [m for m in sys.modules if m == "tfkd" or m.startswith("tfkd.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ImportError as error:
        failed[name] = str(error)
    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None:
        raise SystemExit(name + " imported TensorFlow")
print(json.dumps(failed))
""")
    assert set(failed) == set(STILL_NEED_TENSORFLOW), failed


def test_import_tfkd_works_and_tensorflow_features_say_what_to_use():
    report = _run("""
import json
import numpy as np
import keras
import tfkd

report = {"version": tfkd.__version__, "kd": tfkd.KnowledgeDistillation().name}
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
try:
    tfkd.export.to_tflite(model, "/nonexistent/model.tflite")
except tfkd.TensorFlowRequiredError as error:
    report["export"] = str(error)
try:
    tfkd.data.load("fashion_mnist")
except tfkd.TensorFlowRequiredError as error:
    report["data"] = str(error)
distiller = tfkd.Distiller(
    teacher=keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]),
    student=model,
)
report["distiller"] = type(distiller).__name__
if keras.backend.backend() in ("jax", "torch"):  # NumPy's cannot train
    distiller.compile(optimizer="sgd")
    history = distiller.fit(
        np.ones((4, 2), "float32"), np.array([0, 1, 2, 0]), verbose=0
    )
    report["distiller"] = sorted(history.history)
print(json.dumps(report))
""")
    assert report["version"] == __import__("tfkd").__version__
    assert 'format="litert"' in report["export"], report
    assert "tfkd[cpu]" in report["export"], report
    assert "load_fashion_mnist_arrays" in report["data"], report
    # The Distiller is there, and trains on JAX and PyTorch (tfkd.jax_step,
    # tfkd.torch_step).
    assert report["distiller"] in (
        "Distiller", ["distillation_loss", "loss", "student_loss"]
    ), report


def test_a_wheel_of_the_checkout_installs_and_imports_without_tensorflow(tmp_path):
    # `pip install .` as a user runs it (a wheel, not the editable install
    # the test environments use): every module of the checkout is in it,
    # and `import tfkd` from it needs no TensorFlow.
    import shutil
    import sys

    source = tmp_path / "source"  # built outside the checkout: no build/ there
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tfkd", source / "tfkd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site-packages"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target),
         str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    python, backend = python_on_another_backend()
    code = _PRELUDE + f"""
import importlib, json, pathlib, tfkd
assert pathlib.Path(tfkd.__file__).is_relative_to({str(target)!r}), tfkd.__file__
failed = []
for name in {_module_names()!r}:
    if name in {sorted(STILL_NEED_TENSORFLOW)!r}:
        continue
    try:
        importlib.import_module(name)
    except ImportError as error:
        failed.append(name + ": " + str(error))
print(json.dumps(failed))
"""
    result = subprocess.run(
        [python, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(target)),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
