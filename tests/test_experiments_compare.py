"""The benchmark's smoke preset end to end, through the same code path."""

import json

import pytest

from benchmarks import __main__ as cli
from benchmarks import presets
from benchmarks import runner
from benchmarks import schema


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("smoke")
    lines = []
    results = runner.run(preset="smoke", output=output, log=lines.append)
    return output, results, lines


def test_every_arm_runs_and_the_schema_holds(smoke_run):
    output, results, _ = smoke_run
    schema.validate(results)
    assert set(results["arms"]) == set(runner.ALL_ARMS)
    failed = {k: a["error"] for k, a in results["arms"].items() if a["status"] != "done"}
    assert not failed, failed
    on_disk = json.loads((output / "results.json").read_text())
    schema.validate(on_disk)
    assert on_disk["arms"]["tfkd"]["accuracy"] == results["arms"]["tfkd"]["accuracy"]
    for arm in results["arms"].values():
        assert 0.0 <= arm["accuracy"]["mean"] <= 1.0
        assert arm["parameters"] > 0 and arm["size_bytes"] > 0
        assert arm["latency_ms"]["p50"] > 0 and arm["throughput_per_s"] > 0
    student = results["arms"]["scratch"]["parameters"]
    assert all(
        results["arms"][arm]["parameters"] == student
        for arm in ("tfkd", "tfkd_cached", "keras_distillation", "keras_distillation_kl")
    )
    assert results["arms"]["teacher"]["parameters"] > student


def test_report_and_every_plot_are_written(smoke_run):
    output, results, _ = smoke_run
    markdown = (output / "results.md").read_text()
    assert "Distilled student (tfkd, online)" in markdown
    pngs = sorted(output.glob("*.png"))
    assert len(pngs) >= 5, pngs
    for png in pngs:
        assert png.stat().st_size > 5_000, png
        assert png.name in markdown


def test_a_second_run_resumes_instead_of_retraining(smoke_run):
    output, results, _ = smoke_run
    lines = []
    again = runner.run(preset="smoke", output=output, log=lines.append)
    text = "\n".join(lines)
    assert "teacher: loaded from an earlier run" in text
    assert "students, seed 0: loaded from an earlier run" in text
    assert "autokeras: loaded from an earlier run" in text
    assert again["arms"]["tfkd"]["accuracy"] == results["arms"]["tfkd"]["accuracy"]


def test_command_line_rejects_unknown_presets_and_arms(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["run", "--preset", "huge"])
    with pytest.raises(ValueError, match="`arms`.*nonsense"):
        runner.run(preset="smoke", output=tmp_path, arms=["nonsense"])
    with pytest.raises(ValueError, match="`preset`"):
        presets.get_preset("huge")
