"""The `compare` experiment's smoke preset end to end, through `main`."""

import importlib.util
import json

import pytest

import committed

from benchmarks import arms
from benchmarks import schema
from benchmarks.experiments import compare

HAS_AUTOKERAS = importlib.util.find_spec("autokeras") is not None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("compare")
    assert compare.main(["--preset", "smoke", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_every_arm_runs_and_the_schema_holds(smoke_run):
    output, results = smoke_run
    schema.validate(results)
    assert set(results["arms"]) == set(compare.ALL_ARMS)
    assert results["experiment"] == "compare"
    assert len(results["git"]["commit"]) == 40 and results["git"]["clean"] in (True, False)
    not_done = {k: a["error"] for k, a in results["arms"].items() if a["status"] != "done"}
    if HAS_AUTOKERAS:
        assert not not_done, not_done
    else:  # absent, and the report says why
        assert not_done == {"autokeras": arms.AUTOKERAS_MISSING}
        assert results["arms"]["autokeras"]["status"] == "skipped"
    student = results["arms"]["scratch"]["parameters"]
    for arm_id, arm in results["arms"].items():
        if arm["status"] != "done":
            continue
        assert 0.0 <= arm["accuracy"]["mean"] <= 1.0
        assert arm["size_bytes"] > 0 and arm["throughput_per_s"] > 0
        assert arm["latency_ms"]["p50"] > 0
        assert arm["throughput_spread"]["repeats"] == compare.PRESETS["smoke"].timing_repeats
        if arm["role"] == "student":
            assert arm["parameters"] == student, arm_id
    assert results["arms"]["teacher"]["parameters"] > student
    assert "paired_difference_vs_scratch" in results["derived"]["tfkd"]


def test_few_labels_block_pairs_the_recipe_with_scratch_on_the_same_labels(smoke_run):
    output, results = smoke_run
    preset = compare.PRESETS["smoke"]
    arms = results["arms"]
    labelled = preset.option("few_labels")
    unlabelled = preset.train_examples - labelled
    assert arms["teacher"]["trained_on"] == f"{preset.train_examples} labelled"
    assert arms["scratch"]["trained_on"] == f"{preset.train_examples} labelled"
    assert arms["scratch_few"]["trained_on"] == f"{labelled} labelled"
    assert arms["tfkd_transfer"]["trained_on"] == (
        f"{labelled} labelled + {unlabelled} unlabelled")
    few = results["few_labels"]
    assert (few["labelled"], few["unlabelled"]) == (labelled, unlabelled)
    assert few["teacher_examples"] == preset.train_examples and few["alpha"] == 0.0
    assert few["steps"] == preset.option("few_epochs") * -(
        -preset.train_examples // preset.option("few_batch_size"))
    derived = results["derived"]["tfkd_transfer"]
    assert derived["baseline"] == "scratch_few"
    per_seed = [arms[a]["accuracy"]["per_seed"] for a in ("tfkd_transfer", "scratch_few")]
    assert derived["paired_difference_vs_scratch"]["mean"] == pytest.approx(
        per_seed[0][0] - per_seed[1][0])
    assert few["gain"] == derived["paired_difference_vs_scratch"]
    # Both started from the seed's weights: a scratch of the same width.
    assert arms["tfkd_transfer"]["parameters"] == arms["scratch_few"]["parameters"]
    assert results["derived"]["scratch_few"]["kd_gain_over_scratch"] is None
    markdown = (output / "results.md").read_text()
    assert "## Few labels: a transfer set" in markdown and "| Trained on |" in markdown
    assert f"{labelled} labelled + {unlabelled} unlabelled" in markdown


def test_report_and_every_plot_are_written(smoke_run):
    output, results = smoke_run
    markdown = (output / "results.md").read_text()
    assert "Distilled student (tfkd, online)" in markdown
    assert "keras.distillation (default loss)" in markdown
    assert "Paired difference, 95 % CI" in markdown
    assert results["git"]["commit"][:10] in markdown
    if not HAS_AUTOKERAS:
        assert "autokeras is not installed: `pip install 'tfkd[autokeras]'`" in markdown
    pngs = sorted(output.glob("*.png"))
    assert len(pngs) >= 5, pngs
    for png in pngs:
        assert png.name in markdown


def test_a_second_run_resumes_instead_of_retraining(smoke_run):
    output, results = smoke_run
    lines = []
    again = compare.run(preset="smoke", output=output, log=lines.append)
    text = "\n".join(lines)
    assert "loaded from an earlier run" in text and "seed 0: loaded" in text
    if HAS_AUTOKERAS:
        assert "autokeras: loaded from an earlier run" in text
    assert again["arms"]["tfkd"]["accuracy"] == results["arms"]["tfkd"]["accuracy"]


def test_command_line_rejects_unknown_presets_and_arms(tmp_path):
    with pytest.raises(SystemExit):
        compare.main(["--preset", "huge"])
    with pytest.raises(ValueError, match="`arms`.*nonsense"):
        compare.run(preset="smoke", output=tmp_path, arms=["nonsense"])


def test_committed_quick_results_have_the_few_labels_block():
    from benchmarks import report
    from benchmarks import schema

    results = schema.validate(committed.experiment_results("compare-quick"))
    assert results["git"]["clean"] is True
    for arm_id in compare.FEW_LABEL_ARMS:
        assert len(results["arms"][arm_id]["accuracy"]["per_seed"]) >= 3
    gain = results["derived"]["tfkd_transfer"]["paired_difference_vs_scratch"]
    assert results["few_labels"]["gain"] == gain and gain["low"] is not None
    assert "## Few labels: a transfer set" in report.markdown(results)
