"""The `transfer` experiment: smoke preset end to end, then a resuming rerun."""

import json

import pytest

import committed

from benchmarks import results as results_lib
from benchmarks.experiments import transfer


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("transfer")
    lines = []
    results = transfer.run(preset="smoke", output=output, log=lines.append)
    return output, results, lines


def test_transfer_smoke_compares_the_three_settings(transfer_run):
    output, results, lines = transfer_run
    assert json.loads((output / "results.json").read_text())["experiment"] == "transfer"
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
        assert (arms[arm]["temperature"], arms[arm]["alpha"]) == (
            search["temperature"], search["alpha"])
        tuning_json = json.loads((output / search["tuning_json"]).read_text())
        assert tuning_json["best"]["temperature"] == search["temperature"]
    for arm in transfer.ARMS:
        assert 0.0 <= arms[arm]["accuracy"]["mean"] <= 1.0
    assert sum("trial 2/2" in line for line in lines) == 2  # one per side
    markdown = (output / "results.md").read_text()
    for arm in transfer.ARMS:
        assert transfer.LABELS[arm] in markdown
    for name in (transfer.PLOT_NAME, *transfer.HEATMAP_NAMES.values()):
        assert (output / name).stat().st_size > 10_000, name
        assert f"({name})" in markdown


def test_transfer_command_line_resumes_without_new_trials(transfer_run, capsys):
    output, results, _ = transfer_run
    assert transfer.main(["--preset", "smoke", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "tuning: trial" not in printed
    assert "loaded from an earlier run" in printed
    again = json.loads((output / "results.json").read_text())
    assert again["arms"] == json.loads(json.dumps(results["arms"]))


def test_a_dataset_that_needs_a_download_fails_clearly_before_training(tmp_path):
    # No network here: tensorflow-datasets cannot fetch MNIST.
    with pytest.raises(RuntimeError, match="Could not load the dataset 'mnist'.*internet"):
        transfer.run(preset="smoke", source="mnist", target="cifar10",
                     output=tmp_path, log=lambda line: None)
    assert not list((tmp_path / "models").iterdir())


def test_default_output_names_the_datasets_only_when_not_offline():
    assert results_lib.default_output(
        "transfer", "quick", ["fashion_mnist", "fashion_mnist"]).name == "transfer-quick"
    assert results_lib.default_output(
        "transfer", "quick", ["mnist", "cifar10"]).name == "transfer-mnist-cifar10-quick"


def test_derived_numbers_and_committed_results_render():
    arms = {arm: {"accuracy": {"mean": m}} for arm, m in
            zip(transfer.ARMS, (0.80, 0.82, 0.83, 0.85))}
    assert transfer.derive({"arms": arms}) == pytest.approx({
        "transferred_minus_defaults": 0.01, "tuned_minus_defaults": 0.03,
        "tuned_minus_transferred": 0.02, "defaults_minus_scratch": 0.02,
    })
    results = committed.experiment_results("transfer-quick")
    assert "## On the target task" in transfer.markdown(results)
