"""Fault injection: a crash before every write step of a checkpoint or backup.

`tests/crash_points.py` runs a job in a forked child that dies (no
clean-up, like `kill -9`) just before its k-th write step; each test runs
the job once per k, then reads back what the crash left, and requires a
complete, verified result: the old or the new model from
`load_model_verified`, a resumed `fit` that ends bit for bit like an
uninterrupted run after training only the steps the surviving backup had
not, and no file left behind by a finished run. A clear refusal would be
acceptable too; none of these crashes needs one. The torn variants cut the
file being synced to half its length at each `fsync` (what a power cut
could lose) before dying.

Scenarios and their crash points (Keras 3.15; h5py writes `.weights.h5`
from C, so only the Python-level steps around it count):

- (a) `save_model_atomically` over an existing checkpoint;
- (b) `MidEpochBackupAndRestore(save_freq=1)` during a 2-epoch, 4-step fit
  (the marker, every backup save);
- (c) the clean-up at the end of that fit (`on_train_end`).

Each child costs a fork and an eager fit of a tiny Dense model (about
0.3 s on 2 slow cores), not a TensorFlow import.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest

import crash_points
import tfkd.callbacks
from tfkd.callbacks import backup_files
from tfkd.callbacks import checkpointing

pytestmark = pytest.mark.timeout(120)

# 16 examples in batches of 8: 2 steps per epoch, 2 epochs, 4 backups.
EXAMPLES, BATCH_SIZE, EPOCHS = 16, 8, 2
STEPS = EXAMPLES // BATCH_SIZE * EPOCHS


# -- jobs, run in the crashing children ----------------------------------------


def dense_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def save_over(path, seed):
    """Scenario (a): saves a model of `seed` over the checkpoint `path`."""
    checkpointing.save_model_atomically(dense_model(seed), path)


class Progress(keras.callbacks.Callback):
    """The optimizer step this process started from and ended at."""

    def on_train_begin(self, logs=None):
        self.start = int(self.model.optimizer.iterations.numpy())

    def on_train_end(self, logs=None):
        self.end = int(self.model.optimizer.iterations.numpy())


def train(backup_dir, delete_checkpoint=True):
    """Scenarios (b) and (c): a seeded fit backed up after every step.

    Returns:
        A dict: the final weights, and the optimizer steps at the start
        (after any restore) and at the end.
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, 4)).astype("float32")
    y = rng.normal(size=(EXAMPLES, 2)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.2),  # a random-seed state to restore
            keras.layers.Dense(2),
        ]
    )
    # Eager: the backup logic does not depend on tracing, and each child
    # starts training at once.
    model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=True)
    progress = Progress()
    backup = tfkd.callbacks.MidEpochBackupAndRestore(
        backup_dir, save_freq=1, delete_checkpoint=delete_checkpoint
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[backup, progress],
    )
    return {
        "weights": model.get_weights(),
        "start": progress.start,
        "end": progress.end,
    }


# -- (a) an atomic checkpoint saved over an existing one ---------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An existing checkpoint, its directory, and the old and new weights."""
    directory = tmp_path_factory.mktemp("checkpoint")
    save_over(str(directory / "student.keras"), 0)
    kinds = crash_points.step_kinds(
        save_over, (str(directory / "counted.keras"), 1)
    )
    return directory, kinds, dense_model(0).get_weights(), dense_model(
        1
    ).get_weights()


def check_checkpoint_after_crash(tmp_path, checkpoint, crash_at, torn):
    pristine, _, old, new = checkpoint
    directory = tmp_path / f"crash-{crash_at}"
    shutil.copytree(pristine, directory)
    path = str(directory / "student.keras")
    outcome = crash_points.run(save_over, (path, 1), crash_at, torn=torn)
    assert outcome.crashed
    loaded = checkpointing.load_model_verified(path).get_weights()
    assert any(
        all(np.array_equal(a, b) for a, b in zip(loaded, expected))
        for expected in (old, new)
    ), f"crash at step {crash_at}: neither the old nor the new model"
    # The next save cleans up after the crash and verifies.
    save_over(path, 2)
    checkpointing.verify(path)
    left = sorted(n for n in os.listdir(directory) if n != "counted.keras")
    assert [n for n in left if ".tmp.keras" in n] == []


def test_a_crash_at_every_step_of_a_checkpoint_save(tmp_path, checkpoint):
    kinds = checkpoint[1]
    assert len(kinds) >= 5, kinds  # temporary, fsync, checksum, rename
    for crash_at in range(1, len(kinds) + 1):
        check_checkpoint_after_crash(tmp_path, checkpoint, crash_at, False)


def test_a_torn_crash_at_every_fsync_of_a_checkpoint_save(
    tmp_path, checkpoint
):
    fsyncs = [k + 1 for k, kind in enumerate(checkpoint[1]) if kind == "fsync"]
    assert len(fsyncs) >= 2, checkpoint[1]  # the model and the checksum
    for crash_at in fsyncs:
        check_checkpoint_after_crash(tmp_path, checkpoint, crash_at, True)


# -- (b), (c) a backed-up fit ------------------------------------------------


@pytest.fixture(scope="module")
def backed_up_fit(tmp_path_factory):
    """The uninterrupted run; the kinds of the steps of its saves and of
    its clean-up."""
    directory = tmp_path_factory.mktemp("reference")
    reference = crash_points.run(train, (str(directory / "backup"),))
    assert reference.error is None, reference.error
    assert (reference.result["start"], reference.result["end"]) == (0, STEPS)
    kept = crash_points.step_kinds(train, (str(directory / "kept"), False))
    everything = crash_points.step_kinds(train, (str(directory / "all"),))
    assert everything[: len(kept)] == kept
    return reference.result["weights"], kept, everything[len(kept):]


def check_resume_after_crash(tmp_path, reference, crash_at, torn):
    backup = str(tmp_path / f"crash-{crash_at}-{torn}" / "backup")
    outcome = crash_points.run(train, (backup,), crash_at, torn=torn)
    assert outcome.crashed
    # Where the resumed run must start: the step of the committed state.
    state_path = os.path.join(backup, backup_files.STATE_FILE)
    start = 0
    if os.path.exists(state_path):
        with open(state_path) as file:
            start = json.load(file)["steps_done"]
    resumed = crash_points.run(train, (backup,))
    assert resumed.error is None, f"crash at step {crash_at}: {resumed.error}"
    result = resumed.result
    assert (result["start"], result["end"]) == (start, STEPS), crash_at
    for a, b in zip(result["weights"], reference):
        np.testing.assert_array_equal(a, b, err_msg=f"crash at {crash_at}")
    assert os.listdir(backup) == []


@pytest.mark.parametrize("part", range(3))
def test_a_crash_at_every_step_of_the_backups(tmp_path, backed_up_fit, part):
    # Every third step per test, to keep each under 30 s.
    reference, saves, _ = backed_up_fit
    assert saves.count("replace") == 1 + STEPS  # the marker, each state
    for crash_at in range(1 + part, len(saves) + 1, 3):
        check_resume_after_crash(tmp_path, reference, crash_at, False)


def test_a_torn_crash_at_every_fsync_of_the_backups(tmp_path, backed_up_fit):
    reference, saves, _ = backed_up_fit
    fsyncs = [k + 1 for k, kind in enumerate(saves) if kind == "fsync"]
    for crash_at in fsyncs:
        check_resume_after_crash(tmp_path, reference, crash_at, True)


def test_a_crash_at_every_step_of_the_clean_up(tmp_path, backed_up_fit):
    reference, saves, clean_up = backed_up_fit
    # The state, the last weights and the marker.
    assert clean_up == ["remove"] * 3
    for step in range(1, len(clean_up) + 1):
        check_resume_after_crash(tmp_path, reference, len(saves) + step, False)
