"""benchmarks.protocol, presets, stats and the launcher: the shared protocol."""

import dataclasses
import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import __main__ as launcher
from benchmarks import presets
from benchmarks import protocol
from benchmarks import stats
from benchmarks import store as store_lib
from benchmarks.experiments import compare

TINY = presets.Preset(name="tiny", train_examples=96, test_examples=64,
                      batch_size=32, teacher_epochs=0, student_epochs=2,
                      teacher_width=4, student_width=2, validation_fraction=0.01)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    store = store_lib.ResultStore(tmp_path_factory.mktemp("protocol"))
    setup = protocol.Setup(TINY, protocol.load_data(TINY), store, log=lambda line: None)
    protocol.train_teacher(setup)  # 0 epochs: an untrained teacher will do
    return setup


def _batch_digest(batch):
    x, y = batch
    labels = y["labels"] if isinstance(y, dict) else y
    return hashlib.sha256(x.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()


def _recording(arm, seen):
    """`arm`, recording the batches of each epoch's dataset before its fit."""
    def fit_epoch(setup, trainer, dataset, epoch, callbacks):
        seen.setdefault(arm.arm_id, []).append([_batch_digest(b) for b in dataset])
        return arm.fit_epoch(setup, trainer, dataset, epoch, callbacks)
    return dataclasses.replace(arm, fit_epoch=fit_epoch)


def test_every_arm_reads_the_same_batches_in_the_same_order(setup):
    seen = {}
    arms = [_recording(compare.STUDENT_ARMS[a], seen)
            for a in ("scratch", "tfkd", "tfkd_cached")]
    runs, failures = protocol.train_arms(setup, arms, seed=3)
    assert not failures and len(runs) == 3
    reference = seen["scratch"]
    assert len(reference) == TINY.student_epochs and len(reference[0]) == 3
    for arm_id, epochs in seen.items():
        assert epochs == reference, arm_id
    assert reference[0] != reference[1]  # a new order each epoch
    # ... and the arms started from the same weights.
    first = [w.numpy() for w in runs[0].student.weights]
    assert all(r.history["loss"] for r in runs) and len(first) > 0


def test_orders_depend_on_seed_and_epoch_only():
    a, b = protocol.epoch_order(0, 1, 50), protocol.epoch_order(0, 1, 50)
    assert (a == b).all() and sorted(a) == list(range(50))
    assert (a != protocol.epoch_order(1, 1, 50)).any()
    assert (a != protocol.epoch_order(0, 2, 50)).any()


def test_teacher_is_reused_by_fingerprint(setup):
    lines = []
    view = protocol.Setup(TINY, setup.data, setup.store, log=lines.append)
    protocol.train_teacher(view)
    assert any("loaded from an earlier run" in line for line in lines)
    other = protocol.teacher_fingerprint(view, 8, None, 0)
    assert other != protocol.teacher_fingerprint(view, 4, None, 0)


def test_sample_std_and_paired_t_interval():
    summary = stats.mean_std([0.80, 0.82, 0.84])
    assert summary["std"] == pytest.approx(0.02)  # ddof=1
    assert stats.mean_std([0.5])["std"] == 0.0
    difference = stats.paired_difference([0.82, 0.83, 0.84], [0.80, 0.80, 0.82])
    sd = np.std([0.02, 0.03, 0.02], ddof=1)
    assert difference["mean"] == pytest.approx(0.07 / 3)
    assert difference["high"] - difference["mean"] == pytest.approx(4.303 * sd / 3 ** 0.5)
    assert stats.paired_difference([0.8], [0.7])["low"] is None
    assert stats.t_quantile_975(30) == 2.042
    assert 1.96 < stats.t_quantile_975(1000) < stats.t_quantile_975(31) < 2.042


def test_presets_keep_experiment_options_apart():
    preset = TINY.replace(widths=(2, 4), seeds=(0, 1))
    assert preset.seeds == (0, 1) and preset.option("widths") == (2, 4)
    assert preset.to_dict()["widths"] == [2, 4] and TINY.options == {}
    with pytest.raises(ValueError, match="`preset`"):
        presets.get_preset({"tiny": TINY}, "huge")
    with pytest.raises(ValueError, match="`seeds`"):
        presets.check_seeds([1, 1])


def test_one_preset_class_for_every_experiment():
    for name in launcher.EXPERIMENTS:
        module = __import__(f"benchmarks.experiments.{name}", fromlist=["PRESETS"])
        assert {"smoke", "quick", "full"} <= set(module.PRESETS), name
        assert all(type(p) is presets.Preset for p in module.PRESETS.values())


#: Experiments whose quick preset trains one seed, and why.
ONE_SEED = {
    "cache_speed": "measures speed only: one seed, interleaved timing repeats",
    "teachers": "one teacher per family; reports it as one seed and ranks "
                "by accuracy only beyond its stated resolution",
}


def test_accuracy_experiments_use_three_seeds_in_quick():
    for name in launcher.EXPERIMENTS:
        module = __import__(f"benchmarks.experiments.{name}", fromlist=["PRESETS"])
        if name not in ONE_SEED:
            assert len(module.PRESETS["quick"].seeds) >= 3, name


def test_launcher_help_needs_no_tensorflow_and_run_means_compare():
    code = ("import sys; from benchmarks import __main__ as m\n"
            "try: m.parse_args(['--help'])\nexcept SystemExit: pass\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True,
                               text=True, cwd=str(__import__("pathlib").Path(
                                   presets.__file__).parents[1]))
    assert completed.returncode == 0, completed.stderr
    assert "compare" in completed.stdout and "cache_speed" in completed.stdout
    assert launcher.parse_args(["run", "--preset", "quick"]) == (
        "compare", ["--preset", "quick"])
    with pytest.raises(SystemExit):
        launcher.parse_args(["nonsense"])


# The few-labels setting: a transfer set of labelled rows and an unlabelled pool.

def test_with_labels_moves_the_other_examples_to_the_pool(setup):
    view = setup.with_labels(20)
    data = view.data
    assert len(data.y_train) == 20 and np.bincount(data.y_train).max() <= 2
    assert len(data.x_pool) == len(setup.data.y_train) - 20 + len(setup.data.x_pool)
    assert view.epoch_size() == len(setup.data.y_train) + len(setup.data.x_pool)
    assert view.teacher is setup.teacher and data.x_teacher is setup.data.x_teacher
    # The view has its own tensors; the setup it came from is unchanged.
    assert view.labelled()[0].shape[0] == 20
    assert setup.labelled()[0].shape[0] == setup.epoch_size() == TINY.train_examples
    assert setup.with_labels(1_000).data.y_train.shape == setup.data.y_train.shape


def test_few_label_arms_read_the_same_rows_and_take_the_same_steps(setup):
    from benchmarks import arms

    view = setup.with_labels(20)
    order = protocol.epoch_order(5, 0, view.epoch_size())
    scratch = list(arms.scratch().epoch_data(view, order))
    distilled = list(arms.distilled("kd", "KD", alpha=0.0, soft_targets="memory")
                     .epoch_data(view, order))
    assert len(scratch) == len(distilled) == math.ceil(view.epoch_size() / TINY.batch_size)
    inputs = view.epoch_inputs().numpy()
    x_kd = np.concatenate([x.numpy() for x, _ in distilled])
    x_scratch = np.concatenate([x.numpy() for x, _ in scratch])
    # The distilled arm reads every row of the transfer set once, in order ...
    np.testing.assert_array_equal(x_kd, inputs[order])
    # ... scratch has the labelled rows where it has them, and cycles through
    # the labelled examples (with their labels) for the pool's rows.
    labelled = order < 20
    np.testing.assert_array_equal(x_scratch[labelled], x_kd[labelled])
    np.testing.assert_array_equal(x_scratch, view.data.x_train[order % 20])
    y_scratch = np.concatenate([y.numpy() for _, y in scratch])
    np.testing.assert_array_equal(y_scratch, view.data.y_train[order % 20])
    logits = np.concatenate([y["teacher_logits"].numpy() for _, y in distilled])
    np.testing.assert_allclose(logits, view.teacher_logits().numpy()[order])


def test_few_label_arms_read_the_pool_unlabelled_online_or_cached(setup):
    from benchmarks import arms

    view = setup.with_labels(20)
    order = protocol.epoch_order(5, 0, view.epoch_size())
    online = list(arms.distilled("online", "online").epoch_data(view, order))
    cached = list(arms.distilled("kd", "KD", soft_targets="memory").epoch_data(view, order))
    x_online = np.concatenate([x.numpy() for x, _ in online])
    np.testing.assert_array_equal(x_online, np.concatenate([x.numpy() for x, _ in cached]))
    y_online = np.concatenate([y.numpy() for _, y in online])
    y_cached = np.concatenate([y["labels"].numpy() for _, y in cached])
    np.testing.assert_array_equal(y_online, y_cached)
    # The pool's rows are unlabelled (-1), the labelled rows keep their labels.
    labelled = order < 20
    np.testing.assert_array_equal(y_online[~labelled], -1)
    np.testing.assert_array_equal(y_online[labelled], view.data.y_train[order[labelled]])
    # Indexed batches (CRD's memory bank) carry each row's index in `order`.
    indexed = list(arms.distilled("crd", "CRD", with_index=True).epoch_data(view, order))
    np.testing.assert_array_equal(
        np.concatenate([y["index"].numpy() for _, y in indexed]), order)
    np.testing.assert_array_equal(
        np.concatenate([y["labels"].numpy() for _, y in indexed]), y_online)
    # With α > 0 and the teacher online, both arms train on the transfer set.
    runs, failures = protocol.train_arms(view.with_preset(TINY.replace(student_epochs=1)), [
        arms.distilled("online", "online", alpha=0.5),
        arms.distilled("cached", "cached", alpha=0.5, soft_targets="memory")], seed=0)
    assert not failures
    assert all(np.isfinite(run.history["loss"]).all() for run in runs)


def test_cosine_schedule_decays_over_the_arm_steps(setup):
    view = setup.with_labels(20).with_preset(TINY.replace(learning_rate_schedule="cosine"))
    steps = protocol.training_steps(view)
    assert steps == TINY.student_epochs * math.ceil(view.epoch_size() / TINY.batch_size)
    schedule = protocol.student_optimizer(view).get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay"
    assert schedule["config"]["decay_steps"] == steps
    assert schedule["config"]["initial_learning_rate"] == TINY.learning_rate
    constant = protocol.student_optimizer(setup).get_config()["learning_rate"]
    assert constant == pytest.approx(TINY.learning_rate)


def test_augmented_scratch_trains_the_student_behind_the_augmentation(setup):
    from benchmarks import arms

    runs, failures = protocol.train_arms(
        setup, [arms.scratch("aug", "aug", augmentation=arms.small_shift)], seed=1,
        epochs=1)
    assert not failures
    run = runs[0]
    assert run.trainer.layers[0].name == "small_shift"
    assert run.trainer.layers[1] is run.student
    before = protocol.initial_weights(setup, 1)
    assert any((a != b.numpy()).any() for a, b in zip(before, run.student.weights))


def test_git_provenance_is_the_state_when_the_run_started(tmp_path):
    import subprocess

    from benchmarks import results as results_lib

    def git(*arguments):
        subprocess.run(["git", *arguments], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
        "--allow-empty", "-m", "first")
    started = results_lib.git_provenance(str(tmp_path))
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
        "--allow-empty", "-m", "made while the run trained")
    (tmp_path / "edited.py").write_text("x = 1\n")
    assert started["clean"] is True and len(started["commit"]) == 40
    assert results_lib.git_provenance(str(tmp_path)) == started
