"""The `methods` experiment: the smoke preset through `main`, and its pieces."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from benchmarks import models
from benchmarks import protocol
from benchmarks.experiments import methods
from tfkd.terms import base
from tfkd.terms import methods as registry
from tfkd.terms.features import AttentionTransfer, FitNetHint

ROOT = pathlib.Path(__file__).resolve().parents[1]


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


class FakeSetup:  # what make_trainer reads
    preset = methods.PRESETS["smoke"]
    over_pool = False  # all examples labelled (see Setup.with_labels)

    @staticmethod
    def epoch_size():  # the rows CRD's memory bank holds
        return 256

    @staticmethod
    def tensor(name, make):  # where precomputed arms keep their targets; not run here
        return None


def test_arm_terms_read_layers_of_matching_resolution():
    teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
    student = models.student_cnn((28, 28, 1), 10, width=2)
    [hint] = methods.extra_losses("fitnets", teacher, student)
    assert isinstance(hint, FitNetHint)
    at_terms = methods.extra_losses("attention", teacher, student)
    assert all(isinstance(t, AttentionTransfer) for t in at_terms)

    for arm_id in methods.arm_ids():
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


def test_every_method_is_an_arm_with_a_unique_id_and_terms_that_build():
    ids = [method.id for method in registry.registered()]
    assert len(ids) == len(set(ids))
    assert methods.arm_ids() == ("scratch", *ids)
    # Every term module's methods, and the Distiller's own two.
    assert {"logit_kd", "logit_std", "fitnets", "attention", "rkd", "dkd", "dist",
            "sp", "pkt", "crd"} <= set(ids)
    teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
    student = models.student_cnn((28, 28, 1), 10, width=2)
    layers = methods.reference_layers(teacher, student, num_data=256)
    for method in registry.registered():
        terms = method.terms(layers)
        assert all(isinstance(t, base.DistillationTerm) for t in terms), method.id
        assert (method.build is None) == (not terms), method.id
        assert method.needs_example_indices == any(
            getattr(t, "needs_example_indices", False) for t in terms), method.id
        assert methods.label(method.id) == method.label
        # A fresh list of fresh terms each time: a term belongs to one Distiller.
        assert not set(map(id, terms)) & set(map(id, method.terms(layers)))


@pytest.fixture
def cosine_method():
    """A method registered as a new term module would, then removed."""
    def build(layers):
        return [_CosineHint(layers.teacher_embedding, layers.student_embedding,
                            weight=2.0)]
    method = registry.register(registry.Method(
        "cosine_hint", "CE + cosine hint (a test)", build=build, replaces_kl=True))
    yield method
    registry.unregister("cosine_hint")


class _CosineHint(base.DistillationTerm):
    default_name = "cosine_loss"

    def build(self, teacher_shape, student_shape):
        self.connector = keras.layers.Dense(teacher_shape[-1])
        self.connector.build(student_shape)

    def per_example_loss(self, teacher, student, labels):
        t = keras.ops.normalize(teacher)
        s = keras.ops.normalize(self.connector(student))
        return 1.0 - keras.ops.sum(t * s, axis=-1)


def test_a_registered_method_is_an_arm_with_no_edit_here(cosine_method):
    assert "cosine_hint" in methods.arm_ids()
    assert methods.check_arms(("cosine_hint",)) == ("scratch", "cosine_hint")
    assert methods.label("cosine_hint") == "CE + cosine hint (a test)"
    FakeSetup.teacher = models.teacher_cnn((28, 28, 1), 10, width=4)
    trainer = methods.make_arm("cosine_hint").make_trainer(
        FakeSetup, models.student_cnn((28, 28, 1), 10, width=2))
    [term] = trainer.extra_losses
    assert isinstance(term, _CosineHint) and term.weight == 2.0
    assert trainer.alpha == 1.0  # it replaces the KL: CE + term
    keras.backend.clear_session()


def test_the_registry_refuses_a_taken_id_and_a_term_that_needs_undeclared_indices():
    with pytest.raises(ValueError, match="`id`.*'crd'"):
        registry.register(registry.Method("crd", "Another CRD"))
    sneaky = registry.Method("sneaky", "CRD without its indices",
                             build=registry.get("crd").build)
    layers = registry.ReferenceLayers(teacher_embedding="a", student_embedding="b",
                                      num_data=8)
    with pytest.raises(ValueError, match="`needs_example_indices`.*'crd_loss'"):
        sneaky.terms(layers)
    with pytest.raises(ValueError, match="`id`"):
        registry.Method("Bad Id", "x")
    with pytest.raises(ValueError, match="`method_id`.*'boosting'"):
        registry.get("boosting")


def test_the_committed_quick_results_still_render(tmp_path):
    # They were run before some methods were registered (no `wttm` arm):
    # the report reads the labels the results carry, not the registry.
    results = json.loads((ROOT / "benchmarks/results/methods-quick/results.json").read_text())
    table = methods.markdown(results)
    assert "Logit KD + CRD (Tian et al., 2020)" in table
    assert table.count("\n| ") == len(results["arms"]) + 1  # header + one row per arm
    methods.write_report(results, tmp_path)
    assert (tmp_path / methods.PLOT_NAME).stat().st_size > 0


def _run_methods_in_a_fresh_process(output, teacher, arms):
    """`python -m benchmarks methods` on the smoke preset, seed 0.

    A process per run: a second run in one process trains another teacher
    and other students (the seeds do not reset every TensorFlow random
    state), so only runs in fresh processes can be compared value for value.
    """
    command = [sys.executable, "-m", "benchmarks", "methods", "--preset", "smoke",
               "--seeds", "0", "--arms", ",".join(arms), "--teacher", teacher,
               "--output", str(output)]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads((output / "results.json").read_text())


def test_a_precomputed_teacher_trains_the_arms_as_an_online_one(tmp_path):
    """Only where the teacher's outputs are computed differs, not what they are."""
    arms = ("crd", "fitnets")
    precomputed = _run_methods_in_a_fresh_process(tmp_path / "a", "precomputed", arms)
    online = _run_methods_in_a_fresh_process(tmp_path / "b", "online", arms)
    assert precomputed["teacher"]["outputs"] == "precomputed"
    # One teacher pass per set of layers: FitNets' conv, CRD's dense + index
    # (layer names depend on what Keras built before).
    passes = sorted(precomputed["teacher"]["pass_seconds"])
    assert len(passes) == 2 and all(name.startswith("logits,") for name in passes)
    assert [name.endswith(",index") for name in passes] == [False, True], passes
    assert online["teacher"] == {**precomputed["teacher"], "outputs": "online",
                                 "pass_seconds": {}}
    for arm in arms:
        for name, values in online["arms"][arm]["history"].items():
            np.testing.assert_allclose(
                precomputed["arms"][arm]["history"][name], values, rtol=1e-5,
                err_msg=f"{arm} {name}")
        assert precomputed["arms"][arm]["accuracy"] == online["arms"][arm]["accuracy"]
    assert "Teacher precomputed" in (tmp_path / "a" / "results.md").read_text()
    assert "Teacher online" in (tmp_path / "b" / "results.md").read_text()


def test_a_rerun_with_the_other_teacher_mode_resumes_nothing(tmp_path):
    for mode in methods.TEACHER_MODES:
        methods.run(preset="smoke", arms=("fitnets",), seeds=(0,), output=tmp_path,
                    teacher=mode, log=lambda line: None)
    stored = sorted(path.name for path in (tmp_path / "partial").glob("*fitnets*"))
    assert stored == ["teacher-online__fitnets__seed0.json",
                      "teacher-precomputed__fitnets__seed0.json"]


def test_the_teacher_mode_is_checked_and_named():
    with pytest.raises(ValueError, match="teacher"):
        methods.run(preset="smoke", arms=("crd",), teacher="offline")
