"""benchmarks/methods.py: the smoke preset through `main`, and its pieces."""

import json

import keras
import pytest

from benchmarks import methods
from benchmarks import models
from tfkd.terms.features import AttentionTransfer, FitNetHint


def test_main_writes_json_and_markdown(tmp_path):
    output = tmp_path / "methods.json"
    assert methods.main(["--preset", "smoke", "--arms", "fitnets", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert list(results["arms"]) == ["scratch", "fitnets"]
    assert results["data"]["train_examples"] == methods.PRESETS["smoke"].train_examples
    scratch, fitnets = results["arms"]["scratch"], results["arms"]["fitnets"]
    assert scratch["epoch_time_vs_scratch"] == 1.0
    assert fitnets["epoch_time_vs_scratch"] > 0
    assert len(fitnets["epoch_seconds"]) == methods.PRESETS["smoke"].student_epochs
    assert "fitnet_loss" in fitnets["history"]
    assert 0.0 <= fitnets["accuracy"] <= 1.0
    # Distillation does not change the exported student.
    assert fitnets["parameters"] == scratch["parameters"]
    table = output.with_suffix(".md").read_text()
    assert "FitNets" in table and "÷ scratch" in table


def test_arm_terms_read_layers_of_matching_resolution():
    teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
    student = models.student_cnn((28, 28, 1), 10, width=2)
    [hint] = methods.extra_losses("fitnets", teacher, student)
    assert isinstance(hint, FitNetHint)
    at_terms = methods.extra_losses("attention", teacher, student)
    assert all(isinstance(t, AttentionTransfer) for t in at_terms)
    for arm_id in methods.ARMS:
        # Building the Distiller checks every layer pair's shapes.
        trainer = methods.build_trainer(arm_id, teacher, student, methods.PRESETS["smoke"])
        assert isinstance(trainer, keras.Model)
        keras.backend.clear_session()
        teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
        student = models.student_cnn((28, 28, 1), 10, width=2)


def test_unknown_arms_and_presets_are_named():
    with pytest.raises(ValueError, match="`arms`.*'boosting'"):
        methods.run(preset="smoke", arms=("boosting",))
    with pytest.raises(ValueError, match="`preset`.*'huge'"):
        methods.run(preset="huge")
