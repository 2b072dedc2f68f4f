"""The `deploy` experiment: smoke preset end to end through `main`, then a resume."""

import json

import pytest

from benchmarks.experiments import compare
from benchmarks.experiments import deploy

pytest.importorskip("ai_edge_litert", reason="needs the `litert` extra")
SMOKE = deploy.PRESETS["smoke"]


@pytest.fixture(scope="module")
def deploy_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("deploy")
    assert deploy.main(["--preset", "smoke", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_presets_are_compares_with_export_options():
    for name, preset in deploy.PRESETS.items():
        assert preset == compare.PRESETS[name].replace(**deploy.EXPORT_OPTIONS[name])
    assert len(deploy.PRESETS["quick"].seeds) >= 3


def test_every_student_and_format_is_exported_run_and_timed(deploy_run):
    output, results = deploy_run
    assert results["experiment"] == "deploy" and results["preset"] == "smoke"
    assert len(results["git"]["commit"]) == 40
    assert set(results["students"]) == set(compare.FEW_LABEL_ARMS)
    assert results["formats"] == list(deploy.FORMATS)
    assert results["test_examples_evaluated"] == SMOKE.test_examples
    for arm_id, student in results["students"].items():
        assert student["status"] == "done", student
        formats = student["formats"]
        assert set(formats) == set(deploy.FORMATS)
        for file_format, entry in formats.items():
            assert entry["status"] == "done", (arm_id, file_format, entry)
            assert 0.0 <= entry["accuracy"]["mean"] <= 1.0
            assert entry["runtime"] == "ai_edge_litert"
            assert 0 < entry["latency_ms"]["p50"] <= entry["latency_ms"]["p95"]
            assert entry["latency_ms"]["calls"] == (
                SMOKE.timing_repeats * SMOKE.option("tflite_latency_calls")
                * len(SMOKE.seeds))
            path = output / "models" / f"{arm_id}__seed0__{file_format}.tflite"
            assert path.stat().st_size == entry["size_bytes"]
        # The float32 file is the Keras model: same predictions.
        assert formats["float32"]["accuracy"]["per_seed"] == pytest.approx(
            student["keras_accuracy"]["per_seed"], abs=2 / SMOKE.test_examples)
        assert formats["int8"]["size_bytes"] < 0.5 * formats["float32"]["size_bytes"]
    assert results["qat"]["needed"] in (True, False)
    assert results["few_labels"]["labelled"] == SMOKE.option("few_labels")


def test_report_and_plot_are_written(deploy_run):
    output, results = deploy_run
    markdown = (output / "results.md").read_text()
    assert "| Student | Format | Accuracy |" in markdown
    for file_format in deploy.FORMATS:
        assert f"| {file_format} |" in markdown
    assert "quantization-aware training" in markdown
    png = output / deploy.PLOT_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_resumes_and_only_times_again(deploy_run):
    output, first = deploy_run
    lines = []
    again = deploy.run("smoke", output=output, log=lines.append)
    assert any("loaded from an earlier run" in line for line in lines)
    assert not any("epoch 1/" in line for line in lines)
    for arm_id, student in again["students"].items():
        assert student["keras_accuracy"] == first["students"][arm_id]["keras_accuracy"]
