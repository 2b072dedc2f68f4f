"""Packaging: a lean base install, optional extras, no stray packages."""

import configparser
import os
import subprocess
import sys

import pytest
import setuptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    return config


def _requirements(text):
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _name(requirement):
    for separator in "<>=![; ":
        requirement = requirement.split(separator)[0]
    return requirement.lower()


def _printed_words(code):
    """What `code` prints in a fresh interpreter, split into words."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    ).stdout.split()


def test_base_requirements_need_no_optional_packages():
    names = {
        _name(r)
        for r in _requirements(_setup_cfg()["options"]["install_requires"])
    }
    assert names == {"keras", "numpy"}


def test_only_the_autokeras_extra_holds_keras_below_3_13():
    extras = _setup_cfg()["options.extras_require"]
    for extra, text in extras.items():
        for requirement in _requirements(text):
            if _name(requirement) == "keras":
                assert extra == "autokeras", extra
                assert "<3.13" in requirement
    base = _requirements(_setup_cfg()["options"]["install_requires"])
    keras_requirement = next(r for r in base if _name(r) == "keras")
    assert "<3.13" not in keras_requirement


def test_benchmarks_and_tests_are_not_installed_packages():
    include = _requirements(
        _setup_cfg()["options.packages.find"]["include"]
    )
    found = setuptools.find_packages(ROOT, include=include)
    assert "tfkd" in found and "tfkd.terms" in found
    assert not [p for p in found if not p.startswith("tfkd")]


def test_import_tfkd_loads_no_optional_dependency():
    code = (
        "import sys, tfkd\n"
        "loaded = [m for m in ('keras_tuner', 'autokeras', "
        "'tensorflow_datasets', 'ai_edge_litert') if m in sys.modules]\n"
        "print(loaded)\n"
        "tfkd.tuning\n"
        "print('keras_tuner' in sys.modules)\n"
    )
    output = _printed_words(code)
    assert output == ["[]", "True"]


def test_no_aliases_for_module_paths_never_released():
    # 0.1.0 was never released: its module paths are not kept as aliases.
    import importlib

    import tfkd

    assert not hasattr(tfkd, "MOVED_MODULES")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tfkd.feature_losses")


def test_the_litert_runtime_is_an_extra_loaded_only_to_run_a_file():
    extras = _setup_cfg()["options.extras_require"]
    for extra in ("litert", "bench"):
        names = {_name(r) for r in _requirements(extras[extra])}
        assert "ai-edge-litert" in names, extra
    code = (
        "import sys, tfkd\n"
        "tfkd.export.to_tflite\n"
        "print('ai_edge_litert' in sys.modules)\n"
        "tfkd.export.runtime.interpreter_class()\n"
        "print('ai_edge_litert' in sys.modules)\n"
    )
    output = _printed_words(code)
    assert output == ["False", "True"]
