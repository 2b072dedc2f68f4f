"""The `transfer` and `capacity` experiments: smoke presets end to end.

The same code path as `quick` and `full`, on 192-256 Fashion-MNIST images
and 1 epoch; then a rerun through each command line, which must resume
instead of retraining.
"""

import argparse
import json

import pytest

from benchmarks.experiments import capacity
from benchmarks.experiments import transfer


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("capacity")
    lines = []
    results = capacity.run(preset="smoke", output=output, log=lines.append)
    return output, results, lines


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("transfer")
    lines = []
    results = transfer.run(preset="smoke", output=output, log=lines.append)
    return output, results, lines


def _png_ok(path):
    return path.exists() and path.stat().st_size > 10_000


def test_capacity_smoke_writes_table_and_plot(capacity_run):
    output, results, _ = capacity_run
    on_disk = json.loads((output / "results.json").read_text())
    assert on_disk["experiment"] == "capacity" and on_disk["rows"] == results["rows"]
    rows = results["rows"]
    assert [row["width"] for row in rows] == [2, 4]
    # student_cnn on 28x28x1, 10 classes: 410 w^2 + 56 w + 10 parameters.
    assert [row["parameters"] for row in rows] == [1762, 6794]
    for row in rows:
        for arm in capacity.ARMS:
            assert 0.0 <= row[arm]["mean"] <= 1.0
        assert row["kd_gain"] == pytest.approx(
            row["distilled"]["mean"] - row["scratch"]["mean"]
        )
    assert results["teacher"]["parameters"] > rows[-1]["parameters"]
    markdown = (output / "results.md").read_text()
    assert "| 2 | 1.76 k |" in markdown and "| 4 | 6.79 k |" in markdown
    assert "KD gain" in markdown and "![" in markdown
    assert _png_ok(output / capacity.PLOT_NAME)


def test_capacity_command_line_resumes(capacity_run):
    output, results, _ = capacity_run
    capacity.main(["--preset", "smoke", "--output", str(output)])
    again = json.loads((output / "results.json").read_text())
    # Loaded from the store, not retrained: identical accuracies.
    assert again["rows"] == results["rows"]
    assert again["teacher"] == results["teacher"]


def test_transfer_smoke_compares_the_three_settings(transfer_run):
    output, results, lines = transfer_run
    on_disk = json.loads((output / "results.json").read_text())
    assert on_disk["experiment"] == "transfer"
    arms = results["arms"]
    assert list(arms) == list(transfer.ARMS)
    source, target = results["sides"]["source"], results["sides"]["target"]
    # Offline default: one dataset, two student sizes and data budgets.
    assert (source["student_width"], target["student_width"]) == (2, 4)
    assert (source["train_examples"], target["train_examples"]) == (192, 256)
    assert (arms["defaults"]["temperature"], arms["defaults"]["alpha"]) == (4.0, 0.1)
    for arm, side in (("transferred", "source"), ("tuned", "target")):
        search = results["sides"][side]["search"]
        assert search["trials"] == 2 and search["completed_trials"] == 2
        assert arms[arm]["temperature"] == search["temperature"]
        assert arms[arm]["alpha"] == search["alpha"]
        assert 1.0 <= search["temperature"] <= 20.0 and 0.0 <= search["alpha"] <= 1.0
        tuning_json = json.loads((output / search["tuning_json"]).read_text())
        assert tuning_json["best"]["temperature"] == search["temperature"]
    for arm in transfer.ARMS:
        assert 0.0 <= arms[arm]["accuracy"]["mean"] <= 1.0
    assert sum("trial 2/2" in line for line in lines) == 2  # one per side
    markdown = (output / "results.md").read_text()
    for arm in transfer.ARMS:
        assert transfer.LABELS[arm] in markdown
    for name in (transfer.PLOT_NAME, *transfer.HEATMAP_NAMES.values()):
        assert _png_ok(output / name), name
        assert f"({name})" in markdown


def test_transfer_command_line_resumes_without_new_trials(transfer_run, capsys):
    output, results, _ = transfer_run
    transfer.main(["--preset", "smoke", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "tuning: trial" not in printed
    assert "teacher_source: loaded from an earlier run" in printed
    again = json.loads((output / "results.json").read_text())
    assert again["arms"] == results["arms"]


def test_a_dataset_that_needs_a_download_fails_clearly_before_training(tmp_path):
    # No network here: tensorflow-datasets cannot fetch MNIST.
    with pytest.raises(RuntimeError, match="Could not load the dataset 'mnist'.*internet"):
        transfer.run(preset="smoke", source="mnist", target="cifar10",
                     output=tmp_path, log=lambda line: None)
    assert not list((tmp_path / "models").iterdir())


def test_bad_presets_and_overrides_fail_before_training(tmp_path):
    for module in (capacity, transfer):
        parser = module.add_arguments(argparse.ArgumentParser())
        with pytest.raises(SystemExit):
            parser.parse_args(["--preset", "huge"])
        with pytest.raises(ValueError, match="`preset`"):
            module.run(preset="huge", output=tmp_path)
    with pytest.raises(ValueError, match="`widths`"):
        capacity.run(preset="smoke", widths=[0, 4], output=tmp_path)
    with pytest.raises(ValueError, match="`temperature`"):
        capacity.run(preset="smoke", temperature=-1.0, output=tmp_path)


def test_default_output_names_the_datasets_only_when_not_offline():
    assert transfer.common.default_output(
        "transfer", "quick", ["fashion_mnist", "fashion_mnist"]
    ).name == "transfer-quick"
    assert transfer.common.default_output(
        "transfer", "quick", ["mnist", "cifar10"]
    ).name == "transfer-mnist-cifar10-quick"


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
    arms = {arm: {"accuracy": {"mean": m}} for arm, m in
            zip(transfer.ARMS, (0.80, 0.82, 0.83, 0.85))}
    assert transfer.derive({"arms": arms}) == pytest.approx({
        "transferred_minus_defaults": 0.01, "tuned_minus_defaults": 0.03,
        "tuned_minus_transferred": 0.02, "defaults_minus_scratch": 0.02,
    })
