"""Tests of tfkd/callbacks: the collapse monitor, checkpoint and backup.

The collapses are real: a Fashion-MNIST student (1024 training images,
784 -> 32 -> 10) distilled with a mistake that makes it predict one class,
and the test checks that the report names that mistake.
"""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
import tfkd.callbacks
from tfkd.callbacks import checkpointing
from tfkd import preflight
from tfkd.callbacks import collapse_diagnosis
from tfkd.callbacks import student_checkpoint
from fault_tolerance_job import TrainingProgress


@pytest.fixture(scope="module")
def fashion():
    """1024 training and 256 validation images, flattened, in [0, 1]."""
    from tfkd import data

    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist_arrays(
        download=False
    )

    def flat(images):
        return (images.reshape(len(images), -1) / 255.0).astype("float32")

    return (
        flat(x_train[:1024]),
        y_train[:1024].astype("int32"),
        flat(x_test[:256]),
        y_test[:256].astype("int32"),
    )


@pytest.fixture(scope="module")
def softmax_teacher_weights(fashion):
    """Weights of a trained teacher that ends in a softmax (as AutoKeras)."""
    x, y, _, _ = fashion
    keras.utils.set_random_seed(0)
    teacher = make_teacher()
    teacher.compile("adam", "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return teacher.get_weights()


def make_teacher(weights=None):
    teacher = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="teacher",
    )
    if weights is not None:
        teacher.set_weights(weights)
    return teacher


def make_student():
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="student",
    )


def distil(fashion, teacher_weights, optimizer, callbacks, epochs=1, **kwargs):
    x, y, _, _ = fashion
    distiller = tfkd.Distiller(
        teacher=make_teacher(teacher_weights), student=make_student(), **kwargs
    )
    distiller.compile(optimizer=optimizer)
    with warnings.catch_warnings():
        # Preflight warns about some of these set-ups too; the tests look
        # at the monitor's own reports.
        warnings.simplefilter("ignore", preflight.DistillationWarning)
        history = distiller.fit(
            x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks
        )
    return distiller, history


def causes(report):
    return [finding.cause for finding in report.findings]


# -- CollapseMonitor: real collapses -------------------------------------------


def test_softmax_teacher_read_as_logits_is_diagnosed(
    fashion, softmax_teacher_weights
):
    # The AutoKeras failure: a softmax teacher declared as logits, alpha=0.
    _, _, x_val, y_val = fashion
    monitor = tfkd.callbacks.CollapseMonitor(
        (x_val, y_val), threshold=0.8, stop_training=True
    )
    _, history = distil(
        fashion,
        softmax_teacher_weights,
        keras.optimizers.Adam(0.05),
        [monitor],
        epochs=3,
        teacher_outputs="logits",
        alpha=0.0,
    )
    assert len(monitor.reports) == 1
    report = monitor.reports[0]
    assert report.top_fraction >= 0.8
    assert sum(report.histogram) == 256
    assert causes(report)[0] == "Teacher probabilities read as logits"
    assert "teacher_outputs='probabilities'" in str(report)
    # stop_training=True: the run ended at the collapsed epoch.
    assert len(history.history["loss"]) == report.epoch + 1


def test_collapse_is_a_warning(fashion, softmax_teacher_weights):
    _, _, x_val, y_val = fashion
    monitor = tfkd.callbacks.CollapseMonitor((x_val, y_val))
    x, y, _, _ = fashion
    distiller = tfkd.Distiller(
        teacher=make_teacher(softmax_teacher_weights),
        student=make_student(),
        teacher_outputs="logits",
        alpha=0.0,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.05))
    with pytest.warns(preflight.DistillationWarning) as record:
        distiller.fit(
            x, y, batch_size=64, epochs=1, verbose=0, callbacks=[monitor]
        )
    messages = [str(w.message) for w in record]
    assert any(m.startswith("Student collapse at epoch 0") for m in messages)


def test_healthy_run_does_not_fire(fashion, softmax_teacher_weights):
    _, _, x_val, y_val = fashion
    monitor = tfkd.callbacks.CollapseMonitor((x_val, y_val), threshold=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", preflight.DistillationWarning)
        x, y, _, _ = fashion
        distiller = tfkd.Distiller(
            teacher=make_teacher(softmax_teacher_weights),
            student=make_student(),
        )
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        distiller.fit(
            x, y, batch_size=64, epochs=2, verbose=0, callbacks=[monitor]
        )
    assert monitor.reports == []
    assert monitor.best_epoch == 1


def test_learning_rate_blow_up_is_diagnosed(fashion, softmax_teacher_weights):
    _, _, x_val, y_val = fashion
    monitor = tfkd.callbacks.CollapseMonitor((x_val, y_val), threshold=0.8)
    distil(
        fashion, softmax_teacher_weights, keras.optimizers.SGD(5.0), [monitor]
    )
    (report,) = monitor.reports
    assert causes(report)[0] == "Learning rate too high"
    assert "500 times its Keras default of 0.01" in str(report)
    assert "Teacher probabilities read as logits" not in causes(report)


def test_schedule_blow_up_restores_the_best_weights(
    fashion, softmax_teacher_weights
):
    # A healthy first epoch, then a schedule that jumps to 10: the monitor
    # stops the run and gives back the student of epoch 0.
    _, _, x_val, y_val = fashion
    saved = {}

    class KeepWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved[epoch] = self.model.student.get_weights()

    monitor = tfkd.callbacks.CollapseMonitor(
        (x_val, y_val), stop_training=True, restore_best_weights=True
    )
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, rate: 1e-3 if epoch == 0 else 10.0
    )
    distiller, history = distil(
        fashion,
        softmax_teacher_weights,
        keras.optimizers.Adam(1e-3),
        [schedule, KeepWeights(), monitor],
        epochs=3,
    )
    assert len(history.history["loss"]) == 2
    (report,) = monitor.reports
    assert report.epoch == 1
    assert "grew from 0.001 at the start of training to 10" in str(report)
    assert monitor.restored_epoch == 0
    for restored, kept in zip(distiller.student.get_weights(), saved[0]):
        np.testing.assert_array_equal(restored, kept)


def test_non_finite_loss_is_diagnosed(fashion, softmax_teacher_weights):
    _, _, x_val, y_val = fashion
    monitor = tfkd.callbacks.CollapseMonitor((x_val, y_val))
    # The step guard would stop this run at its first NaN step; the
    # monitor's diagnosis is for runs without it (on_nonfinite="ignore").
    distil(
        fashion, softmax_teacher_weights, keras.optimizers.SGD(1e25), [monitor],
        on_nonfinite="ignore",
    )
    (report,) = monitor.reports
    assert "Non-finite loss" in causes(report)
    assert "student weight(s) with NaN/inf" in str(report)


def test_the_step_guard_stops_the_diverging_run_first(
    fashion, softmax_teacher_weights
):
    monitor = tfkd.callbacks.CollapseMonitor(fashion[2:])
    with pytest.raises(tfkd.NonFiniteLossError, match="epoch 1, batch"):
        distil(
            fashion, softmax_teacher_weights, keras.optimizers.SGD(1e25),
            [monitor],
        )


def test_monitor_reads_a_dataset_once(fashion, softmax_teacher_weights):
    # A reshuffling dataset is materialized once: max_examples from it.
    _, _, x_val, y_val = fashion
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_val, y_val))
        .shuffle(256, seed=0)
        .batch(50)
    )
    monitor = tfkd.callbacks.CollapseMonitor(
        dataset, threshold=0.8, max_examples=100
    )
    distil(
        fashion,
        softmax_teacher_weights,
        keras.optimizers.Adam(0.05),
        [monitor],
        teacher_outputs="logits",
        alpha=0.0,
    )
    (report,) = monitor.reports
    assert sum(report.histogram) == 100


# -- the diagnosis checks on their own -----------------------------------------


def test_teacher_classes_that_do_not_match_the_labels(
    fashion, softmax_teacher_weights
):
    _, _, x_val, y_val = fashion
    distiller = tfkd.Distiller(
        teacher=make_teacher(softmax_teacher_weights),
        student=make_student(),
        teacher_outputs="probabilities",
    )
    shifted = (y_val + 1) % 10  # the labels in another class order
    findings = collapse_diagnosis.diagnose(distiller, x_val, shifted)
    assert [f.cause for f in findings] == [
        "Teacher classes do not match the labels"
    ]
    assert collapse_diagnosis.diagnose(distiller, x_val, y_val) == ()


def test_high_temperature_flattens_the_soft_targets(
    fashion, softmax_teacher_weights
):
    _, _, x_val, y_val = fashion
    distiller = tfkd.Distiller(
        teacher=make_teacher(softmax_teacher_weights),
        student=make_student(),
        teacher_outputs="probabilities",
        temperature=100.0,
    )
    findings = collapse_diagnosis.diagnose(distiller, x_val, y_val)
    assert [f.cause for f in findings] == [
        "Nearly uniform soft targets",
        "Extreme alpha or temperature",
    ]
    assert "temperature=100" in str(findings[1])


def test_report_without_findings_says_what_was_checked():
    report = collapse_diagnosis.CollapseReport(
        epoch=2,
        top_class=3,
        top_fraction=0.9,
        threshold=0.8,
        histogram=(0, 0, 1, 9),
        findings=(),
    )
    text = str(report)
    assert text.startswith("Student collapse at epoch 2: 90.0% of 10")
    assert "No probable cause found" in text


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, "0.8", True])
def test_monitor_threshold_is_validated(threshold):
    with pytest.raises(ValueError, match="argument `threshold`"):
        tfkd.callbacks.CollapseMonitor(
            (np.zeros((2, 3)), np.zeros(2)), threshold=threshold
        )


def test_monitor_needs_validation_data():
    with pytest.raises(TypeError, match="argument `validation_data`"):
        tfkd.callbacks.CollapseMonitor(None)
    with pytest.raises(ValueError, match="argument `max_examples`"):
        tfkd.callbacks.CollapseMonitor(
            (np.zeros((2, 3)), np.zeros(2)), max_examples=0
        )


# -- StudentCheckpoint ---------------------------------------------------------


def tiny_distiller():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    y = np.argmax(x[:, :3], axis=-1)
    return distiller, x, y


def test_student_checkpoint_saves_the_student_each_epoch(tmp_path):
    distiller, x, y = tiny_distiller()
    pattern = str(tmp_path / "student-{epoch:02d}.keras")
    checkpoint = tfkd.callbacks.StudentCheckpoint(pattern)
    distiller.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint])
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".keras")) == [
        "student-01.keras",
        "student-02.keras",
    ]
    assert checkpoint.last_saved == str(tmp_path / "student-02.keras")
    student = checkpointing.load_model_verified(checkpoint.last_saved)
    assert not isinstance(student, tfkd.Distiller)  # the student alone
    np.testing.assert_allclose(student(x), distiller(x), atol=1e-6)


def test_student_checkpoint_saves_only_improvements(tmp_path):
    distiller, x, y = tiny_distiller()
    pattern = str(tmp_path / "best-{epoch}.keras")
    checkpoint = tfkd.callbacks.StudentCheckpoint(pattern, monitor="loss")
    # No learning after the first epoch: epoch 2 (weights trained in epoch
    # 1) improves on epoch 1's running mean, epoch 3 repeats epoch 2.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, rate: 0.1 if epoch == 0 else 0.0
    )
    distiller.fit(x, y, epochs=3, verbose=0, callbacks=[schedule, checkpoint])
    saved = sorted(p for p in os.listdir(tmp_path) if p.endswith(".keras"))
    assert saved == ["best-1.keras", "best-2.keras"]
    checkpointing.verify(str(tmp_path / "best-2.keras"))


def test_student_checkpoint_arguments():
    with pytest.raises(ValueError, match="a path ending in '.keras'"):
        tfkd.callbacks.StudentCheckpoint("student.h5")
    with pytest.raises(ValueError, match="argument `mode`"):
        tfkd.callbacks.StudentCheckpoint("student.keras", mode="largest")


# -- checksum files, read back as untrusted input ------------------------------


@pytest.fixture
def saved_student(tmp_path):
    """A student saved by `save_model_atomically`; its path."""
    distiller, _, _ = tiny_distiller()
    path = str(tmp_path / "student.keras")
    checkpointing.save_model_atomically(distiller.student, path)
    return path


@pytest.mark.parametrize(
    "record, message",
    [
        ({"previous_sha256": None}, "field 'sha256'.*no such field"),
        ({"sha256": 5, "previous_sha256": None}, "field 'sha256'.*5"),
        ({"sha256": "0" * 64}, "field 'previous_sha256'.*no such field"),
        ({"sha256": "0" * 64, "previous_sha256": "x"}, "'previous_sha256'"),
        ([], "Expected a JSON object.*Received: a list"),
        ("NaN", "not valid JSON"),
    ],
)
def test_a_garbled_checksum_file_is_refused(saved_student, record, message):
    # Before: a KeyError, an AttributeError ('list' has no 'get') or a
    # digest mismatch blamed on the model.
    with open(checkpointing.checksum_path(saved_student), "w") as file:
        file.write(record if isinstance(record, str) else json.dumps(record))
    with pytest.raises(ValueError, match="Invalid checksum file.*" + message):
        checkpointing.load_model_verified(saved_student)


def test_a_huge_checksum_file_is_refused_unread(saved_student):
    with open(checkpointing.checksum_path(saved_student), "r+b") as file:
        file.truncate(200 * 1024 * 1024)  # sparse
    with pytest.raises(ValueError, match="more than the 4096"):
        checkpointing.verify(saved_student)


def test_a_linked_checksum_file_is_refused(saved_student, tmp_path):
    record = checkpointing.checksum_path(saved_student)
    os.rename(record, tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", record)
    with pytest.raises(ValueError, match="symbolic link"):
        checkpointing.verify(saved_student)


def test_a_linked_model_verifies_against_the_file_it_names(saved_student):
    # A user's own `latest.keras` link: the checksum file is the one
    # the save wrote, next to the real file.
    latest = os.path.join(os.path.dirname(saved_student), "latest.keras")
    os.symlink(saved_student, latest)
    assert checkpointing.verify(latest) == checkpointing.verify(saved_student)
    checkpointing.load_model_verified(latest)


def test_only_tfkd_s_own_temporaries_are_removed(saved_student, tmp_path):
    directory = os.path.dirname(saved_student)
    stale = os.path.join(directory, ".student.keras.12345.tmp.keras")
    notes = os.path.join(directory, ".student.keras.notes.tmp.txt")
    outside = tmp_path / "outside.keras"
    outside.write_bytes(b"mine")
    link = os.path.join(directory, ".student.keras.999.tmp.keras")
    for path in (stale, notes):
        with open(path, "w") as file:
            file.write("x")
    os.symlink(outside, link)
    distiller, _, _ = tiny_distiller()
    checkpointing.save_model_atomically(distiller.student, saved_student)
    assert not os.path.exists(stale)
    assert os.path.exists(notes) and os.path.islink(link)
    # A link at the very name this process would write through is refused.
    own = os.path.join(directory, f".student.keras.{os.getpid()}.tmp.keras")
    os.symlink(outside, own)
    with pytest.raises(FileExistsError, match="expected no entry there"):
        checkpointing.save_model_atomically(distiller.student, saved_student)
    assert outside.read_bytes() == b"mine" and os.path.islink(own)
    checkpointing.verify(saved_student)


WORKERS = {"worker": ["a:1", "b:1"]}
WITH_CHIEF = {"chief": ["c:1"], "worker": ["a:1"]}


@pytest.mark.parametrize(
    "cluster, task_type, index, chief",
    [
        (None, None, None, True),
        (WORKERS, "worker", 0, True),
        (WORKERS, "worker", 1, False),
        (WITH_CHIEF, "worker", 0, False),
        (WITH_CHIEF, "chief", 0, True),
    ],
)
def test_only_the_chief_writes(monkeypatch, cluster, task_type, index, chief):
    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        task = {"type": task_type, "index": index}
        config = {"cluster": cluster, "task": task}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert student_checkpoint.is_chief() is chief


# -- MidEpochBackupAndRestore, in one process --------------------------------


class Interrupt(keras.callbacks.Callback):
    """Raises after `steps` training steps, like a crash."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            raise RuntimeError("interrupted")


def seeded_run(callbacks, steps_per_execution=1):
    """2 epochs of 8 batches with a Dropout student, from seed 0.

    Returns the student's weights.
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = np.argmax(x[:, :3], axis=-1)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(3),
        ]
    )
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        steps_per_execution=steps_per_execution,
    )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    distiller.fit(dataset, epochs=2, verbose=0, callbacks=callbacks)
    return student.get_weights()


def test_mid_epoch_backup_resumes_at_the_batch(tmp_path):
    # Two batches per step: the skipping must advance by whole steps. (The
    # one-batch case, killed for real, is in test_fault_tolerance.py.)
    steps_per_execution = 2
    reference = seeded_run([], steps_per_execution)
    backup = str(tmp_path / "backup")

    def callback():
        return tfkd.callbacks.MidEpochBackupAndRestore(backup, save_freq=4)

    # 13 steps: the last backup holds epoch 1 after 4 of its 8 batches.
    with pytest.raises(RuntimeError, match="interrupted"):
        seeded_run(
            [callback(), Interrupt(13 // steps_per_execution)],
            steps_per_execution,
        )
    state = json.load(open(os.path.join(backup, "training_state.json")))
    assert (state["epoch"], state["batches_done"]) == (1, 4)
    progress = TrainingProgress()
    resumed = seeded_run([callback(), progress], steps_per_execution)
    # Bit for bit, as the README promises. Equal weights alone would also
    # come from a restore that did nothing (a fresh run of the same seed):
    # the resumed run must start at the backup's step 12 in epoch 1 and
    # train the 4 batches left, not 8 (the epoch again) or 16.
    for a, b in zip(resumed, reference):
        np.testing.assert_array_equal(a, b)
    assert (progress.start_step, progress.end_step) == (12, 16)
    assert progress.epochs == [1]
    assert os.listdir(backup) == []  # removed at the end of a finished run


def test_mid_epoch_backup_refuses_another_models_backup(tmp_path):
    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        seeded_run(
            [
                tfkd.callbacks.MidEpochBackupAndRestore(backup, save_freq=4),
                Interrupt(6),
            ]
        )
    state_path = os.path.join(backup, "training_state.json")
    state = json.load(open(state_path))
    state["seed_states"] = []
    json.dump(state, open(state_path, "w"))
    with pytest.raises(ValueError, match="Expected 1 random-seed state"):
        seeded_run([tfkd.callbacks.MidEpochBackupAndRestore(backup)])
