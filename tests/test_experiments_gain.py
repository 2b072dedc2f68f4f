"""The `gain` experiment: smoke preset end to end through `main`, then a resume."""

import json
import math
import statistics

import pytest

import committed

from benchmarks import stats
from benchmarks.experiments import gain

SMOKE = gain.PRESETS["smoke"]


@pytest.fixture(scope="module")
def gain_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("gain")
    assert gain.main(["--preset", "smoke", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_results_record_commit_teachers_and_every_axis(gain_run):
    _, results = gain_run
    assert results["experiment"] == "gain" and results["preset"] == "smoke"
    assert len(results["git"]["commit"]) == 40 and results["git"]["clean"] in (True, False)
    assert list(results["axes"]) == list(gain.AXES)
    options = SMOKE.options
    values = {name: [row["value"] for row in axis["rows"]]
              for name, axis in results["axes"].items()}
    assert values == {
        "labels": list(options["fractions"]), "patience": list(options["epochs"]),
        "gap": list(options["teacher_epochs_axis"]), "capacity": list(options["widths"]),
        "temperature": list(options["temperatures"])}
    # One teacher per teacher length, the longer one the better here.
    teachers = results["teachers"]
    assert set(teachers) == {str(e) for e in options["teacher_epochs_axis"]}
    assert [row["teacher_accuracy"] for row in results["axes"]["gap"]["rows"]] == [
        teachers[str(e)]["accuracy"] for e in options["teacher_epochs_axis"]]
    assert results["scratch_augmentation"]["used"] is True
    assert results["scratch_augmentation"]["augmented_minus_plain"]["seeds"] == 2


def test_every_point_reports_seeds_std_and_paired_gain(gain_run):
    _, results = gain_run
    seeds = len(SMOKE.seeds)
    for name, axis in results["axes"].items():
        for row in axis["rows"]:
            scratch, distilled, difference = row["scratch"], row["distilled"], row["gain"]
            assert len(scratch["per_seed"]) == len(distilled["per_seed"]) == seeds
            for summary in (scratch, distilled):
                assert summary["mean"] == pytest.approx(statistics.mean(summary["per_seed"]))
                assert summary["std"] == pytest.approx(statistics.stdev(summary["per_seed"]))
            differences = [d - s for d, s in zip(distilled["per_seed"], scratch["per_seed"])]
            half = (stats.t_quantile_975(seeds - 1) * statistics.stdev(differences)
                    / math.sqrt(seeds))
            assert difference["mean"] == pytest.approx(statistics.mean(differences)), name
            assert difference["high"] == pytest.approx(difference["mean"] + half), name
            assert difference["seeds"] == seeds


def test_students_see_the_labelled_share_and_the_same_number_of_steps(gain_run):
    _, results = gain_run
    pool = results["num_examples"]["train"]
    assert pool == SMOKE.train_examples
    labels = results["axes"]["labels"]["rows"]
    assert [(r["labelled"], r["unlabelled"]) for r in labels] == [(20, 180), (200, 0)]
    points = {p["id"]: p for p in results["points"]}
    for point in points.values():
        # Scratch and distilled share one count of steps: a pass over the pool.
        assert point["steps"] == point["epochs"] * math.ceil(pool / SMOKE.batch_size)
        assert set(point["arms"]) >= {point["baseline"], gain.DISTILLED}
    reference = points[results["reference"]["id"]]
    assert reference["reference"] and set(reference["arms"]) == {
        gain.SCRATCH, gain.SCRATCH_AUGMENTED, gain.DISTILLED, "distilled_t4",
        "distilled_teacher0"}
    # The gap and T axes are arms of the reference point, paired with its scratch.
    for name in ("gap", "temperature"):
        assert {row["point"] for row in results["axes"][name]["rows"]} == {reference["id"]}
    assert [p["width"] for p in points.values() if p["labelled"] == 20
            and p["epochs"] == 1] == [4, 2]


def test_report_and_plot(gain_run):
    output, results = gain_run
    markdown = (output / "results.md").read_text()
    for title, _ in gain.AXES.values():
        assert f"## {title}" in markdown
    assert "| 10 % | 20 labelled + 180 unlabelled |" in markdown
    assert "| 100 % | 200 labelled |" in markdown
    assert "with their labels" in markdown and "without labels" in markdown
    assert results["git"]["commit"][:10] in markdown
    assert f"]({gain.PLOT_NAME})" in markdown
    assert (output / gain.PLOT_NAME).stat().st_size > 20_000


def test_a_rerun_resumes(gain_run, capsys):
    output, results = gain_run
    gain.main(["--preset", "smoke", "--output", str(output)])
    text = capsys.readouterr().out
    assert "epoch 1/" not in text and "loaded from an earlier run" in text
    again = json.loads((output / "results.json").read_text())
    assert again["axes"] == results["axes"]


def test_bad_presets_and_seeds_fail_before_training(tmp_path):
    with pytest.raises(SystemExit):
        gain.main(["--preset", "huge"])
    with pytest.raises(SystemExit):
        gain.main(["--preset", "smoke", "--seeds", "1,1"])
    with pytest.raises(ValueError, match="`preset`"):
        gain.run(preset="huge", output=tmp_path)


def test_plan_shares_the_reference_point():
    reference, axes = gain.plan(gain.PRESETS["quick"])
    assert reference == (0.1, 10, 8)
    for name, rows in axes.items():
        assert sum(point == reference for _, point, _ in rows) >= 1, name
    assert len(gain.PRESETS["quick"].seeds) >= 3
    assert gain.labelled_count(0.001, 6000) == 10 and gain.labelled_count(1.0, 6000) == 6000


def test_committed_quick_results_render_with_three_seeds():
    results = committed.experiment_results("gain-quick")
    assert results["git"]["clean"] is True and len(results["config"]["seeds"]) >= 3
    text = gain.markdown(results)
    assert "## Labels: labelled share of the pool" in text
    for axis in results["axes"].values():
        assert all(row["gain"]["low"] is not None for row in axis["rows"])
