"""Hostile backups: `MidEpochBackupAndRestore` refuses what cannot be its own.

Each test starts from a real backup (a run interrupted after 4 of its 6
steps, `tfkd/callbacks/backup_files.py` writing it), damages it the way a
copy from another run, a bad disk or a hostile user could, and checks that
`fit` refuses it with an error naming the directory and the field, before
any weight changes, and that tfkd deletes nothing it did not write.
"""

import json
import os
import shutil
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd.callbacks
from tfkd.callbacks import backup_files
from tfkd.utils import ownership

STATE = backup_files.STATE_FILE
# 24 examples in batches of 8: 3 steps per epoch, 2 epochs.
X = np.random.default_rng(0).normal(size=(24, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(24, 2)).astype("float32")
INTERRUPT_AFTER = 4  # the backup holds epoch 1 after 1 of its 3 batches


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


def make_model():
    """A Dense model with Dropout (one random-seed state), from seed 0."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(2),
        ]
    )
    # Eager: nothing here depends on tracing, and it starts faster.
    model.compile(keras.optimizers.Adam(0.01), "mse", run_eagerly=True)
    return model


def fit(backup, data=None, epochs=2, callbacks=()):
    """Fits a fresh model with a backup every step; returns the model."""
    model = make_model()
    data = (X, Y) if data is None else (data, None)
    model.fit(
        *data,
        batch_size=None if data[1] is None else 8,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[
            tfkd.callbacks.MidEpochBackupAndRestore(backup, save_freq=1),
            *callbacks,
        ],
    )
    return model


@pytest.fixture
def backup(tmp_path):
    """The backup directory of a run interrupted after 4 steps."""
    directory = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(directory, callbacks=[Interrupt(INTERRUPT_AFTER)])
    return directory


def read_state(directory):
    with open(os.path.join(directory, STATE)) as file:
        return json.load(file)


def write_state(directory, state):
    with open(os.path.join(directory, STATE), "w") as file:
        json.dump(state, file)


def edit_state(directory, **changes):
    state = read_state(directory)
    state.update(changes)
    write_state(directory, state)


def weights_of(state):
    return f"state-{state['steps_done']}.weights.h5"


def test_the_backup_this_file_damages(backup):
    # What every test below starts from, and that it resumes as is.
    state = read_state(backup)
    assert (state["epoch"], state["batches_done"]) == (1, 1)
    assert state["steps_done"] == INTERRUPT_AFTER
    assert sorted(os.listdir(backup)) == sorted(
        [ownership.MARKER_FILE, STATE, weights_of(state)]
    )
    fit(backup)
    assert os.listdir(backup) == []  # a finished run removes its backup


# -- values that cannot belong to this run -------------------------------------


def test_batches_done_beyond_an_epoch_is_refused(backup):
    # Found at 1f66263: fit(epochs=5) skipped a million batches without a
    # word and returned, having trained nothing.
    edit_state(backup, batches_done=1000000)
    with pytest.raises(ValueError) as error:
        fit(backup, epochs=5)
    message = str(error.value)
    assert backup in message and "'batches_done'" in message
    assert "from 0 to 3" in message and "1000000" in message


def test_batches_done_beyond_an_epoch_of_unknown_length_is_refused(backup):
    # No `steps` to check against up front: refused when the epoch's
    # batches run out before the skipping ends.
    edit_state(backup, batches_done=5)
    unknown_length = (
        tf.data.Dataset.from_tensor_slices((X, Y))
        .batch(8)
        .filter(lambda x, y: True)
    )
    with pytest.raises(ValueError, match="Expected at most the 3 batches"):
        fit(backup, data=unknown_length)


def test_epoch_beyond_epochs_is_refused(backup):
    edit_state(backup, epoch=7)
    with pytest.raises(ValueError, match=r"'epoch'.*from 0 to 2.*Received: 7"):
        fit(backup)


def test_batches_after_the_last_epoch_are_refused(backup):
    edit_state(backup, epoch=2, batches_done=1)
    with pytest.raises(ValueError, match="'batches_done'.*after the last"):
        fit(backup)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epoch", -1),
        ("epoch", True),  # a bool is no int
        ("epoch", 1.0),
        ("batches_done", False),
        ("batches_done", "1"),
        ("batches_done", None),
        ("steps_done", -4),
        ("steps_done", [4]),
        ("weights_sha256", "not a digest"),
        ("weights_sha256", None),
    ],
)
def test_wrong_types_and_ranges_are_refused(backup, field, value):
    edit_state(backup, **{field: value})
    with pytest.raises(ValueError, match=f"field '{field}'.*Received: "):
        fit(backup)


@pytest.mark.parametrize(
    "field",
    [
        "epoch",
        "batches_done",
        "steps_done",
        "weights",
        "weights_sha256",
        "seed_states",
    ],
)
def test_missing_fields_are_refused(backup, field):
    state = read_state(backup)
    del state[field]
    write_state(backup, state)
    with pytest.raises(ValueError, match=rf"lacks the field\(s\) \['{field}'\]"):
        fit(backup)


@pytest.mark.parametrize("text", ["[1, 2]", '"state"', "{", "NaN"])
def test_a_state_that_is_no_json_object_is_refused(backup, text):
    with open(os.path.join(backup, STATE), "w") as file:
        file.write(text)
    with pytest.raises(ValueError, match="Invalid backup"):
        fit(backup)


# -- the weights file ------------------------------------------------------------


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_weights_outside_the_backup_dir_are_refused(backup, tmp_path, where):
    # Found at 1f66263: "../elsewhere/x.weights.h5" (or an absolute path)
    # was loaded, reading outside the backup directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = read_state(backup)
    shutil.copy(
        os.path.join(backup, weights_of(state)), elsewhere / "x.weights.h5"
    )
    name = (
        "../elsewhere/x.weights.h5"
        if where == "relative"
        else str(elsewhere / "x.weights.h5")
    )
    edit_state(backup, weights=name)
    with pytest.raises(ValueError) as error:
        fit(backup)
    message = str(error.value)
    assert backup in message and "'weights'" in message
    assert "'state-4.weights.h5'" in message and repr(name) in message


def test_weights_of_another_step_are_refused(backup):
    # A plain name inside the directory, but not the file of this state.
    state = read_state(backup)
    os.rename(
        os.path.join(backup, weights_of(state)),
        os.path.join(backup, "state-3.weights.h5"),
    )
    edit_state(backup, weights="state-3.weights.h5")
    with pytest.raises(ValueError, match="field 'weights'"):
        fit(backup)


def test_corrupted_weights_are_refused(backup):
    path = os.path.join(backup, weights_of(read_state(backup)))
    with open(path, "r+b") as file:
        file.seek(-100, os.SEEK_END)
        byte = file.read(1)
        file.seek(-100, os.SEEK_END)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="does not match its SHA-256"):
        fit(backup)


def test_missing_weights_are_refused(backup):
    os.remove(os.path.join(backup, weights_of(read_state(backup))))
    with pytest.raises(ValueError, match="state-4.weights.h5', which is missing"):
        fit(backup)


@pytest.mark.parametrize("name", ["weights", "state"])
def test_links_in_the_backup_dir_are_refused(backup, tmp_path, name):
    # A link would redirect a read (or a later write) outside the
    # directory; it is refused before anything is read, and left alone.
    entry = weights_of(read_state(backup)) if name == "weights" else STATE
    path = os.path.join(backup, entry)
    target = tmp_path / "outside"
    shutil.move(path, target)
    os.symlink(target, path)
    with pytest.raises(ownership.ForeignPathError, match="a symbolic link"):
        fit(backup)
    assert os.path.islink(path) and target.exists()
    # And read_state alone, for a link planted after the directory check.
    variables = tfkd.callbacks.backup_and_restore.seed_states(make_model())
    with pytest.raises(ValueError, match="symbolic link"):
        backup_files.read_state(backup, 2, 3, variables)


def test_a_huge_state_file_is_refused_before_it_is_read(backup):
    path = os.path.join(backup, STATE)
    with open(path, "r+b") as file:
        file.truncate(200 * 1024 * 1024)  # sparse: no disk used
    variables = tfkd.callbacks.backup_and_restore.seed_states(make_model())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="209715200 bytes, more than"):
            backup_files.read_state(backup, 2, 3, variables)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024
    with pytest.raises(ValueError, match="more than the 1048576"):
        fit(backup)


def test_deeply_nested_json_is_refused_without_recursion(backup):
    with open(os.path.join(backup, STATE), "w") as file:
        file.write('{"epoch": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ValueError, match="nests 100001 levels deep"):
        fit(backup)


# -- random-seed states ----------------------------------------------------------


@pytest.mark.parametrize(
    "seed_states",
    [
        {"a": 1},
        [],
        [["seed_generator/state", [1, 2]], ["extra", [3, 4]]],
        [["seed_generator/state"]],
        [[7, [1, 2]]],
        [["seed_generator/state", [1, 2, 3]]],  # the variable has shape (2,)
        [["seed_generator/state", [[1, 2]]]],
        [["seed_generator/state", [True, 2]]],
        [["seed_generator/state", [1.5, 2]]],
        [["seed_generator/state", [2**70, 2]]],
        [["seed_generator/state", "12"]],
    ],
)
def test_malformed_seed_states_are_refused_before_any_change(
    backup, seed_states
):
    edit_state(backup, seed_states=seed_states)
    model = make_model()
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    callback = tfkd.callbacks.MidEpochBackupAndRestore(backup, save_freq=1)
    with pytest.raises(ValueError, match="field 'seed_states"):
        model.fit(
            X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[callback]
        )
    # Checked before anything was loaded or assigned.
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(variable, value)


# -- only tfkd's own files are deleted -------------------------------------------


def test_a_foreign_backup_dir_is_refused_and_left_alone(tmp_path):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    (home / "state-old").write_text("not tfkd's")
    with pytest.raises(ownership.ForeignPathError) as error:
        fit(str(home))
    message = str(error.value)
    assert str(home) in message
    assert "'photos'" in message and "'thesis.tex'" in message
    callback = tfkd.callbacks.MidEpochBackupAndRestore(str(home))
    callback.on_train_end()
    assert sorted(os.listdir(home)) == ["photos", "state-old", "thesis.tex"]
    assert (home / "thesis.tex").read_text() == "years of work"


def test_a_file_as_backup_dir_is_refused(tmp_path):
    path = tmp_path / "notes"
    path.write_text("mine")
    with pytest.raises(ownership.ForeignPathError, match="expected a directory"):
        fit(str(path))
    assert path.read_text() == "mine"


def test_a_link_named_like_a_backup_is_neither_followed_nor_deleted(
    backup, tmp_path
):
    target = tmp_path / "precious.weights.h5"
    target.write_bytes(b"not a backup")
    link = os.path.join(backup, "state-9.weights.h5")
    os.symlink(target, link)
    with pytest.raises(ownership.ForeignPathError) as error:
        fit(backup)
    assert "'state-9.weights.h5' (a symbolic link to" in str(error.value)
    # Planted after the check, during training: cleaning up and writing
    # the next backup leave it (and what it points to) alone.
    directory = os.path.join(backup, "state-8.weights.h5")
    os.mkdir(directory)
    backup_files.remove_old_weights(backup, keep="state-4.weights.h5")
    backup_files.remove_backup(backup)
    assert os.path.islink(link) and os.path.isdir(directory)
    with pytest.raises(ownership.ForeignPathError, match="symbolic link"):
        backup_files.check_weights_target(backup, "state-9.weights.h5")
    assert target.read_bytes() == b"not a backup"


def test_a_backup_of_an_older_tfkd_without_marker_is_used(backup):
    # Made before the marker existed: tfkd's names only, so it is tfkd's.
    os.remove(os.path.join(backup, ownership.MARKER_FILE))
    fit(backup)
    assert os.listdir(backup) == []


def test_stale_temporaries_are_tfkd_s_and_removed(backup):
    # A write killed between its temporary file and the rename.
    stale = os.path.join(backup, ".tmp-k1ll3d_x")
    with open(stale, "w") as file:
        file.write('{"epoch": ')
    fit(backup)
    assert os.listdir(backup) == []


def test_an_empty_existing_dir_is_used_and_left_empty(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    fit(str(directory))
    assert os.listdir(directory) == []
