"""The `methods` experiment: the smoke preset through `main`, and its pieces."""

import json

import keras
import pytest

from benchmarks import models
from benchmarks import protocol
from benchmarks.experiments import methods
from tfkd.terms.features import AttentionTransfer, FitNetHint


def test_main_writes_json_and_markdown(tmp_path):
    assert methods.main(["--preset", "smoke", "--arms", "fitnets",
                         "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["arms"]) == ["scratch", "fitnets"]
    # The few-labels regime: `labels` labelled, the other images a pool.
    smoke = methods.PRESETS["smoke"]
    assert results["data"]["train"] == smoke.option("labels")
    assert results["data"]["pool"] == smoke.train_examples - smoke.option("labels")
    scratch, fitnets = results["arms"]["scratch"], results["arms"]["fitnets"]
    assert scratch["epoch_time_vs_scratch"] == 1.0
    assert fitnets["epoch_time_vs_scratch"] > 0
    # Each seed's first (tracing) epoch is not timed.
    assert fitnets["epoch_time"]["repeats"] == len(smoke.seeds) * (smoke.student_epochs - 1)
    assert "fitnet_loss" in fitnets["history"]
    assert 0.0 <= fitnets["accuracy"]["mean"] <= 1.0
    assert fitnets["parameters"] == scratch["parameters"]
    table = (tmp_path / "results.md").read_text()
    assert "FitNets" in table and "÷ scratch" in table
    assert (tmp_path / methods.PLOT_NAME).stat().st_size > 0 and methods.PLOT_NAME in table


def test_arm_terms_read_layers_of_matching_resolution():
    teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
    student = models.student_cnn((28, 28, 1), 10, width=2)
    [hint] = methods.extra_losses("fitnets", teacher, student)
    assert isinstance(hint, FitNetHint)
    at_terms = methods.extra_losses("attention", teacher, student)
    assert all(isinstance(t, AttentionTransfer) for t in at_terms)

    class FakeSetup:  # what make_trainer reads
        preset = methods.PRESETS["smoke"]
        over_pool = False  # all examples labelled (see Setup.with_labels)

        @staticmethod
        def epoch_size():  # the rows CRD's memory bank holds
            return 256

    for arm_id in methods.ARM_IDS:
        FakeSetup.teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
        student = models.student_cnn((28, 28, 1), 10, width=2)
        # Building the Distiller checks every layer pair's shapes.
        trainer = methods.make_arm(arm_id).make_trainer(FakeSetup, student)
        assert isinstance(trainer, keras.Model)
        assert isinstance(methods.make_arm(arm_id), protocol.Arm)
        keras.backend.clear_session()


def test_unknown_arms_and_presets_are_named():
    with pytest.raises(ValueError, match="`arms`.*'boosting'"):
        methods.run(preset="smoke", arms=("boosting",))
    with pytest.raises(ValueError, match="`preset`.*'huge'"):
        methods.run(preset="huge")


def test_crd_arm_reads_each_row_index_and_trains(tmp_path):
    results = methods.run(preset="smoke", arms=("crd",), seeds=(0,), output=tmp_path,
                          log=lambda line: None)
    crd = results["arms"]["crd"]
    assert "failure" not in crd and 0.0 <= crd["accuracy"]["mean"] <= 1.0
    assert any(key.startswith("crd") for key in crd["history"]), sorted(crd["history"])
