"""The `capacity` experiment: smoke preset end to end, then a resuming rerun."""

import json

import pytest

import committed

from benchmarks.experiments import capacity


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("capacity")
    assert capacity.main(["--preset", "smoke", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text())


def test_capacity_smoke_writes_table_and_plot(capacity_run):
    output, results = capacity_run
    assert results["experiment"] == "capacity" and results["git"]["commit"]
    rows = results["rows"]
    assert [row["width"] for row in rows] == [2, 4]
    # student_cnn on 28x28x1, 10 classes: 410 w^2 + 56 w + 10 parameters.
    assert [row["parameters"] for row in rows] == [1762, 6794]
    for row in rows:
        for arm in capacity.ARMS:
            assert 0.0 <= row[arm]["mean"] <= 1.0
        assert row["kd_gain"] == pytest.approx(
            row["distilled"]["mean"] - row["scratch"]["mean"])
        assert row["kd_gain_interval"]["mean"] == pytest.approx(row["kd_gain"])
    assert results["teacher"]["parameters"] > rows[-1]["parameters"]
    markdown = (output / "results.md").read_text()
    assert "| 2 | 1.76 k |" in markdown and "| 4 | 6.79 k |" in markdown
    assert "KD gain" in markdown and f"]({capacity.PLOT_NAME})" in markdown
    assert (output / capacity.PLOT_NAME).stat().st_size > 10_000


def test_capacity_command_line_resumes(capacity_run, capsys):
    output, results = capacity_run
    capacity.main(["--preset", "smoke", "--output", str(output)])
    assert "epoch 1/1" not in capsys.readouterr().out
    again = json.loads((output / "results.json").read_text())
    assert again["rows"] == results["rows"] and again["teacher"] == results["teacher"]


def test_bad_presets_and_overrides_fail_before_training(tmp_path):
    with pytest.raises(SystemExit):
        capacity.main(["--preset", "huge"])
    with pytest.raises(ValueError, match="`preset`"):
        capacity.run(preset="huge", output=tmp_path)
    with pytest.raises(ValueError, match="`widths`"):
        capacity.run(preset="smoke", widths=[0, 4], output=tmp_path)
    with pytest.raises(ValueError, match="`temperature`"):
        capacity.run(preset="smoke", temperature=-1.0, output=tmp_path)


def test_derived_numbers():
    rows = [
        {"width": w, "parameters": p, "kd_gain": g,
         "scratch": {"mean": s}, "distilled": {"mean": s + g}}
        for w, p, s, g in [(2, 1762, 0.70, 0.03), (4, 6794, 0.78, 0.02),
                           (8, 26698, 0.80, 0.005)]
    ]
    derived = capacity.derive({"rows": rows})
    assert derived["scratch"]["smallest_width"] == 8  # 0.78 < 0.80 - 0.01
    assert derived["distilled"]["smallest_width"] == 4  # 0.80 >= 0.805 - 0.01
    assert derived["mean_kd_gain"] == pytest.approx(0.055 / 3)


def test_committed_results_still_render():
    text = capacity.markdown(committed.experiment_results("capacity-quick"))
    assert "## Accuracy by student size" in text
