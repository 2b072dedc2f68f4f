"""Fault tolerance: kill a distillation mid-epoch, resume, get the same student.

The runs happen in subprocesses (tests/fault_tolerance_job.py) that SIGKILL
themselves after a number of training steps, like a preempted machine;
the test then starts the same command again and compares the final
student with an uninterrupted run of the same seed, bit for bit (the
README's promise): both runs use deterministic ops on the same machine.
A restore that did nothing would also end equal to the reference (a fresh
run of the same seed), so the tests check as well that the resumed
process started from the backup's step and epoch and trained only the
steps left (the job's `TrainingProgress` callback).

What was found with Keras 3.12.4:
- `keras.callbacks.BackupAndRestore(save_freq="epoch")` round-trips a
  `tfkd.Distiller` (teacher, student and optimizer state) and resumes a
  run killed mid-epoch exactly when the student has no random layers
  (tested here).
- It does not save the `SeedGenerator` states, so a student with
  `Dropout` resumes with other masks (max weight difference 1e-2 after 3
  epochs); and with `save_freq=N` it restarts the interrupted epoch from
  its first batch on weights that have seen part of it (also 1e-2).
  `tfkd.callbacks.MidEpochBackupAndRestore` fixes both (tested here, with
  Dropout and backups every 5 steps).
- `StudentCheckpoint` files survive the kill and verify (tested here).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfkd.callbacks import checkpointing
from tfkd.utils import files
from tfkd import data

JOB = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "fault_tolerance_job.py"
)
# 16 steps per epoch, 3 epochs: step 24 is the middle of the second epoch.
STEPS_PER_EPOCH, EPOCHS = 16, 3
KILL_AFTER_STEPS = 24
# Each subprocess imports TensorFlow and trains for a few seconds.
RUN_TIMEOUT = 240

pytestmark = pytest.mark.timeout(2 * RUN_TIMEOUT + 60)


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    """A small trained teacher, saved once for every run."""
    keras.utils.set_random_seed(0)
    (x, y), _ = data.load_fashion_mnist_arrays(download=False)
    x = (x[:512].reshape(512, -1) / 255.0).astype("float32")
    teacher = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    teacher.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    teacher.fit(x, y[:512], epochs=2, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("teacher") / "teacher.keras")
    teacher.save(path)
    return path


def start(teacher, out, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, JOB, "--teacher", teacher, "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process):
    """Waits for `process`; kills it if the test fails or times out."""
    try:
        _, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def run_killed_then_resumed(teacher, scenarios):
    """Runs each scenario killed mid-epoch, then the same command again.

    The scenarios run side by side (both cores), each in its own
    directory. The resumed process also runs the uninterrupted reference
    afterwards (from scratch, same seed), saving a TensorFlow start-up.

    Args:
        teacher: Path of the teacher.
        scenarios: Dict of directory -> job arguments.

    Returns:
        Dict of directory -> `(reference, resumed)` loaded `.npz` files.
    """
    processes = []
    try:
        killed = {
            directory: start(
                teacher,
                directory / "resumed.npz",
                *args,
                "--kill-after-steps",
                str(KILL_AFTER_STEPS),
            )
            for directory, args in scenarios.items()
        }
        processes += killed.values()
        for directory, process in killed.items():
            code, stderr = finish(process)
            assert code == -9, f"expected SIGKILL, got {code}: {stderr}"
            assert not (directory / "resumed.npz").exists()
        resumed = {
            directory: start(
                teacher,
                directory / "resumed.npz",
                *args,
                "--reference-out",
                str(directory / "reference.npz"),
            )
            for directory, args in scenarios.items()
        }
        processes += resumed.values()
        for process in resumed.values():
            code, stderr = finish(process)
            assert code == 0, stderr
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return {
        directory: (
            np.load(directory / "reference.npz"),
            np.load(directory / "resumed.npz"),
        )
        for directory in scenarios
    }


KERAS_EPOCH = "keras_epoch"
TFKD_STEPS = "tfkd_steps"


@pytest.fixture(scope="module")
def runs(teacher_path, tmp_path_factory):
    """Both scenarios, killed after 24 steps and resumed."""
    keras_dir = tmp_path_factory.mktemp(KERAS_EPOCH)
    tfkd_dir = tmp_path_factory.mktemp(TFKD_STEPS)
    results = run_killed_then_resumed(
        teacher_path,
        {
            # Keras's own callback, backing up at the end of each epoch.
            keras_dir: [
                "--backup",
                "keras-epoch",
                "--backup-dir",
                str(keras_dir / "backup"),
            ],
            # Ours, every 5 steps, with a Dropout student and the atomic
            # student checkpoint.
            tfkd_dir: [
                "--dropout",
                "--backup",
                "tfkd-steps",
                "--backup-dir",
                str(tfkd_dir / "backup"),
                "--save-freq",
                "5",
                "--checkpoint",
                str(tfkd_dir / "student.keras"),
            ],
        },
    )
    return {
        KERAS_EPOCH: (keras_dir, *results[keras_dir]),
        TFKD_STEPS: (tfkd_dir, *results[tfkd_dir]),
    }


def assert_same_student(reference, resumed):
    names = [name for name in reference.files if name.startswith("arr_")]
    assert names
    for name in names:
        np.testing.assert_array_equal(resumed[name], reference[name])
    # The last epoch ran whole in both processes.
    assert float(resumed["last_loss"]) == float(reference["last_loss"])


def assert_resumed_from(resumed, step):
    """The resumed process restored step `step` and trained only the rest."""
    assert int(resumed["start_step"]) == step
    assert int(resumed["end_step"]) == STEPS_PER_EPOCH * EPOCHS
    assert list(resumed["epochs"]) == list(
        range(step // STEPS_PER_EPOCH, EPOCHS)
    )


def test_keras_backup_and_restore_resumes_a_killed_distillation(runs):
    # Killed in the middle of epoch 2 of 3: the epoch-end backup of epoch
    # 1 is restored and epoch 2 runs again from its start.
    _, reference, resumed = runs[KERAS_EPOCH]
    assert_same_student(reference, resumed)
    assert_resumed_from(resumed, STEPS_PER_EPOCH)  # 32 steps trained
    assert int(resumed["epochs_run"]) == 2  # epochs 2 and 3 after the restart


def test_mid_epoch_backup_resumes_at_the_batch_it_reached(runs):
    # Backups every 5 steps: the last one before the kill is after step
    # 20 (batch 4 of epoch 2); the restart skips those 4 batches. The
    # student has Dropout, whose seed state must be restored too.
    directory, reference, resumed = runs[TFKD_STEPS]
    assert_same_student(reference, resumed)
    # Restarted at step 20 in epoch 2: trained 28 steps, not 32 (the
    # whole epoch again) nor 48 (from scratch).
    assert_resumed_from(resumed, 20)
    # A finished run removes its backups.
    backup = directory / "backup"
    assert not [n for n in os.listdir(backup) if n.startswith("state-")]


def test_student_checkpoint_survives_the_kill(runs):
    # The atomic student checkpoint of the last epoch verifies, loads, and
    # holds the final student.
    directory, reference, _ = runs[TFKD_STEPS]
    student = checkpointing.load_model_verified(
        str(directory / "student.keras")
    )
    for index, weight in enumerate(student.get_weights()):
        np.testing.assert_array_equal(weight, reference[f"arr_{index}"])


# -- atomic checkpoints --------------------------------------------------------


def small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def test_atomic_save_round_trips_and_verifies(tmp_path):
    path = str(tmp_path / "deep" / "student.keras")
    model = small_model(0)
    digest = checkpointing.save_model_atomically(model, path)
    assert checkpointing.verify(path) == digest == files.sha256_of(path)
    loaded = checkpointing.load_model_verified(path)
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(loaded(x), model(x))
    assert sorted(os.listdir(os.path.dirname(path))) == [
        "student.keras",
        "student.keras.sha256.json",
    ]


def test_truncated_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "student.keras")
    checkpointing.save_model_atomically(small_model(0), path)
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpointing.load_model_verified(path)


def test_flipped_byte_is_refused(tmp_path):
    path = str(tmp_path / "student.keras")
    checkpointing.save_model_atomically(small_model(0), path)
    with open(path, "r+b") as file:
        file.seek(100)
        byte = file.read(1)
        file.seek(100)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="Invalid checkpoint"):
        checkpointing.verify(path)


def test_crash_between_checksum_and_rename_keeps_the_old_model(
    tmp_path, monkeypatch
):
    # The checksum file is committed before the model file; a crash in
    # between leaves the previous model, which must still verify and load.
    path = str(tmp_path / "student.keras")
    old = small_model(0)
    checkpointing.save_model_atomically(old, path)

    real_replace = os.replace

    def replace(source, target):
        if os.fspath(target) == path:
            raise OSError("simulated crash before the model rename")
        return real_replace(source, target)

    monkeypatch.setattr(checkpointing.os, "replace", replace)
    with pytest.raises(OSError, match="simulated crash"):
        checkpointing.save_model_atomically(small_model(1), path)
    monkeypatch.undo()

    loaded = checkpointing.load_model_verified(path)
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(loaded(x), old(x))
    # No temporary file is left behind, and the next save works.
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]
    checkpointing.save_model_atomically(small_model(2), path)
    checkpointing.verify(path)


def test_stale_temporary_files_are_removed(tmp_path):
    path = str(tmp_path / "student.keras")
    stale = tmp_path / ".student.keras.12345.tmp.keras"
    stale.write_bytes(b"half a zip")
    checkpointing.save_model_atomically(small_model(0), path)
    assert not stale.exists()


def test_missing_checksum_file(tmp_path):
    path = str(tmp_path / "student.keras")
    small_model(0).save(path)
    with pytest.raises(FileNotFoundError, match="No checksum file"):
        checkpointing.load_model_verified(path)


def test_save_needs_a_keras_path(tmp_path):
    with pytest.raises(ValueError, match="a path ending in '.keras'"):
        checkpointing.save_model_atomically(
            small_model(0), str(tmp_path / "student.h5")
        )
