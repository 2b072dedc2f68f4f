"""The files of a backup directory: which are tfkd's, and reading them back.

A `MidEpochBackupAndRestore` directory holds nothing but

- `training_state.json`, the committed state (epoch, batches done, the
  weights file it names with that file's SHA-256, the random-seed states);
- `state-<step>.weights.h5`, the weights and optimizer state of a backup;
- `.tmp-<random>`, the temporary file of an atomic write killed mid-way;
- tfkd's ownership marker (`tfkd.utils.ownership.MARKER_FILE`).

A directory that holds anything else (a user's home folder passed by
mistake, a symbolic link planted among the backups) is refused before
anything is read or written, and only regular files of exactly these names
are ever deleted.

A backup may come from another run, another machine or a corrupted disk,
so the state is read as untrusted input (`tfkd.utils.untrusted`): capped
in size and depth before it is parsed, every field type- and
range-checked against the run resuming it, the weights file a plain name
of the expected pattern inside the directory, a regular file, with the
recorded digest. A state that cannot belong to this run is refused with a
`ValueError` naming the directory, the field, what was expected and what
was received; it never trains on silently.
"""

import collections
import hashlib
import os
import re
import stat

import numpy as np

from tfkd.utils import ownership
from tfkd.utils import untrusted

#: Name of the committed training state inside a backup directory.
STATE_FILE = "training_state.json"
#: The kind written into the ownership marker of a backup directory.
KIND = "backup"
#: Size cap of `training_state.json`. The state is a few integers plus one
#: `[path, [seed, seed]]` pair (about 100 bytes) per random layer: 1 MiB
#: holds about 10,000 of them, far beyond real models, and parsing 1 MiB of
#: hostile JSON costs at most a few tens of MB (16 MiB could cost GBs).
MAX_STATE_BYTES = 1024 * 1024
#: The state nests 4 deep (object, seed-state list, pair, seed values).
MAX_STATE_DEPTH = 8

_WEIGHTS_NAME = re.compile(r"state-(0|[1-9][0-9]*)\.weights\.h5", re.ASCII)
# `files.write_json_atomically` writes through `tempfile` with this prefix.
_TEMPORARY_NAME = re.compile(r"\.tmp-[A-Za-z0-9_]+", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HASH_CHUNK_BYTES = 1 << 20

#: A validated `training_state.json`.
State = collections.namedtuple(
    "State", "epoch batches_done steps_done weights seed_states"
)


def weights_name(step):
    """The name of the weights file of the backup after `step` steps.

    Args:
        step: The number of training steps done, an int >= 0.

    Returns:
        A str.

    Example:

    >>> weights_name(12)
    'state-12.weights.h5'
    """
    return f"state-{step}.weights.h5"


def is_own_name(name):
    """Whether `name` is one of the names tfkd writes in a backup directory.

    Args:
        name: An entry name.

    Returns:
        A bool.

    Example:

    >>> [is_own_name(n) for n in ("state-3.weights.h5", ".tmp-ab12cd_9",
    ...                           "state-03.weights.h5", "thesis.tex")]
    [True, True, False, False]
    """
    return (
        name in (STATE_FILE, ownership.MARKER_FILE)
        or _WEIGHTS_NAME.fullmatch(name) is not None
        or _TEMPORARY_NAME.fullmatch(name) is not None
    )


def _foreign_entries(directory):
    """Entries of `directory` tfkd did not write, each with what it is."""
    found = []
    for name in sorted(os.listdir(directory)):
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not is_own_name(name):
            found.append(repr(name))
        elif stat.S_ISLNK(mode):
            target = os.readlink(os.path.join(directory, name))
            found.append(f"{name!r} (a symbolic link to {target!r})")
        elif not stat.S_ISREG(mode):
            found.append(f"{name!r} (not a regular file)")
    return found


def check_backup_dir(directory):
    """Raises unless `directory` is absent, empty, or holds only a backup.

    A directory of tfkd's entries without the marker (made by an older
    tfkd) is accepted too: the names are checked, not the marker, and only
    names checked here are ever deleted. `directory` itself may be a
    symbolic link (the user's own choice of path); links inside it are
    refused.

    Args:
        directory: The `backup_dir` of a `MidEpochBackupAndRestore`.

    Raises:
        ForeignPathError: naming the directory and the entries tfkd did not
            write (or what stands at the path when it is no directory).

    Example:

    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> check_backup_dir(directory)  # empty: fine
    >>> open(os.path.join(directory, "notes.txt"), "w").close()
    >>> check_backup_dir(directory)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tfkd.utils.ownership.ForeignPathError: Refusing to use '...' as a backup directory: it holds entries tfkd did not write: ['notes.txt']...
    """
    directory = os.fspath(directory)
    if not os.path.lexists(directory):
        return
    if not os.path.isdir(directory):
        found = ownership.describe(directory)
        raise ownership.ForeignPathError(
            f"Refusing to use {directory!r} as a backup directory: expected "
            f"a directory. Received: {found}."
        )
    foreign = _foreign_entries(directory)
    if foreign:
        raise ownership.ForeignPathError(
            f"Refusing to use {directory!r} as a backup directory: it holds "
            f"entries tfkd did not write: [{', '.join(foreign)}]. Expected an "
            "absent or empty directory, or one holding only a backup "
            f"({STATE_FILE}, state-<step>.weights.h5). tfkd deletes its "
            "backups when training ends and touches no other file; choose "
            "another directory, or move those entries away yourself."
        )


def mark_backup_dir(directory):
    """Creates `directory` if needed and writes tfkd's marker into it.

    Args:
        directory: A directory `check_backup_dir` accepted.
    """
    os.makedirs(directory, exist_ok=True)
    if ownership.marked_kind(directory) != KIND:
        ownership.mark(directory, KIND)


def check_weights_target(directory, name):
    """Raises if `directory/name` is a link or no regular file.

    `save_weights` would write through a symbolic link planted at the name
    of the next backup (after `check_backup_dir` ran) to a file elsewhere.

    Args:
        directory: The backup directory.
        name: The weights file about to be written.

    Returns:
        The file's path.

    Raises:
        ForeignPathError: naming the path and what stands there.
    """
    path = os.path.join(directory, name)
    if os.path.lexists(path) and (
        os.path.islink(path) or not os.path.isfile(path)
    ):
        raise ownership.ForeignPathError(
            f"Refusing to write the backup {path!r}: expected no entry or "
            f"a backup file there. Received: {ownership.describe(path)}, "
            "which tfkd did not write."
        )
    return path


def _remove_if_own_file(directory, name):
    """Deletes `directory/name` if it is a regular file (never a link)."""
    path = os.path.join(directory, name)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        os.remove(path)


def remove_old_weights(directory, keep):
    """Deletes the weights files and temporaries other than `keep`.

    Only regular files of tfkd's exact names go: a link or a directory of
    such a name (planted after `check_backup_dir`) stays.

    Args:
        directory: The backup directory.
        keep: The name of the weights file the state now names.
    """
    for name in os.listdir(directory):
        own = _WEIGHTS_NAME.fullmatch(name) or _TEMPORARY_NAME.fullmatch(name)
        if own and name != keep:
            _remove_if_own_file(directory, name)


def remove_backup(directory):
    """Deletes a finished run's backup: tfkd's regular files, nothing else.

    The state goes first: once it is gone, a crash in the middle leaves
    weights no state names, and the next `fit` starts afresh (as after a
    finished run) instead of resuming from a half-deleted backup.

    Args:
        directory: The backup directory (absent is fine).
    """
    if not os.path.isdir(directory):
        return
    _remove_if_own_file(directory, STATE_FILE)
    remove_old_weights(directory, keep=None)
    _remove_if_own_file(directory, ownership.MARKER_FILE)


def _sha256_of_regular_file(directory, name):
    """The digest of `directory/name`, read through a checked descriptor."""
    digest = hashlib.sha256()
    with untrusted.open_regular_file(directory, name) as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_weights(directory, name):
    """The SHA-256 of the weights file `name` just written in `directory`.

    Args:
        directory: The backup directory.
        name: The weights file's name.

    Returns:
        The hex digest.
    """
    return _sha256_of_regular_file(directory, name)


class _Refusal:
    """Builds the errors of one backup directory's state."""

    def __init__(self, directory):
        self.where = f"Invalid backup in {os.fspath(directory)!r}"

    def field(self, field, expected, received):
        return ValueError(
            f"{self.where}: field {field!r} of {STATE_FILE}. Expected "
            f"{expected}. Received: {received!r}. The backup cannot belong "
            "to this run; move the directory away to start afresh."
        )

    def file(self, detail):
        return ValueError(f"{self.where}: {detail}")


def _int_field(state, field, low, high, meaning, refusal):
    value = state[field]
    # bool is an int subclass: `true` in JSON is no step count.
    if type(value) is not int or value < low or (
        high is not None and value > high
    ):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise refusal.field(field, f"an int {bound} ({meaning})", value)
    return value


def _leaves_are(value, kinds, depth=0):
    """Whether the nested lists `value` hold only numbers of `kinds`."""
    if isinstance(value, list):
        return depth < MAX_STATE_DEPTH and all(
            _leaves_are(item, kinds, depth + 1) for item in value
        )
    return type(value) in kinds


def _seed_state_values(saved, variables, refusal):
    """Checks the saved seed states against `variables`; the arrays."""
    if not isinstance(saved, list) or len(saved) != len(variables):
        raise refusal.field(
            "seed_states",
            f"{len(variables)} random-seed state(s), a list of [path, "
            "value] pairs, one per random layer of the model in order "
            "(was the backup made by another model?)",
            f"{len(saved)} entries" if isinstance(saved, list) else saved,
        )
    values = []
    for index, (entry, variable) in enumerate(zip(saved, variables)):
        field = f"seed_states[{index}]"
        if (
            not isinstance(entry, list)
            or len(entry) != 2
            or not isinstance(entry[0], str)
        ):
            raise refusal.field(field, "a [path, value] pair", entry)
        shape = tuple(variable.shape)
        dtype = np.dtype(variable.dtype)
        kinds = (int,) if dtype.kind in "iu" else (int, float)
        try:
            if not _leaves_are(entry[1], kinds):
                raise ValueError
            value = np.asarray(entry[1], dtype=dtype)
        except (ValueError, OverflowError, TypeError):
            value = None
        if value is None or value.shape != shape:
            raise refusal.field(
                field,
                f"a value of shape {shape} and dtype {dtype.name} for "
                f"{variable.path!r}",
                entry[1],
            )
        values.append(value)
    return values


def read_state(directory, epochs, steps, seed_variables):
    """Reads and checks `training_state.json` against the run resuming it.

    Args:
        directory: The backup directory (checked by `check_backup_dir`).
        epochs: The `epochs` of the resuming `fit`.
        steps: Its batches per epoch, or `None` when unknown.
        seed_variables: The model's random-seed state variables
            (`backup_and_restore.seed_states`), in order.

    Returns:
        A `State` whose `weights` is the weights file's path and whose
        `seed_states` are NumPy arrays in the variables' order, or `None`
        when there is no state (nothing to resume).

    Raises:
        ValueError: for a state that is not JSON, too large or too deep, a
            link, a missing or mistyped field, values that cannot belong to
            this run, or a weights file that is missing, a link or does not
            match its recorded digest.
    """
    directory = os.fspath(directory)
    if not os.path.lexists(os.path.join(directory, STATE_FILE)):
        return None
    refusal = _Refusal(directory)
    try:
        state = untrusted.read_json(
            directory,
            STATE_FILE,
            max_bytes=MAX_STATE_BYTES,
            max_depth=MAX_STATE_DEPTH,
        )
    except untrusted.UntrustedFileError as error:
        raise refusal.file(str(error)) from None
    fields = (
        "epoch",
        "batches_done",
        "steps_done",
        "weights",
        "weights_sha256",
        "seed_states",
    )
    if not isinstance(state, dict):
        raise refusal.file(
            f"expected {STATE_FILE} to hold a JSON object with the fields "
            f"{list(fields)}. Received: a {type(state).__name__}."
        )
    missing = [field for field in fields if field not in state]
    if missing:
        raise refusal.file(
            f"{STATE_FILE} lacks the field(s) {missing}. Expected the "
            f"fields {list(fields)} (a backup made by this tfkd)."
        )
    epoch = _int_field(
        state, "epoch", 0, epochs, f"fit(epochs={epochs})", refusal
    )
    # In the last epoch's backup, or `steps` batches beyond any epoch.
    most = 0 if epoch == epochs else steps
    batches_done = _int_field(
        state,
        "batches_done",
        0,
        most,
        "after the last epoch" if epoch == epochs
        else "the batches of one epoch" if steps is not None
        else "batches of the epoch",
        refusal,
    )
    steps_done = _int_field(
        state, "steps_done", 0, None, "training steps", refusal
    )
    name = weights_name(steps_done)
    if state["weights"] != name:
        raise refusal.field(
            "weights",
            f"{name!r}, the file of step {steps_done} inside the backup "
            "directory",
            state["weights"],
        )
    recorded = state["weights_sha256"]
    if not isinstance(recorded, str) or not _SHA256.fullmatch(recorded):
        raise refusal.field(
            "weights_sha256", "64 lowercase hex digits", recorded
        )
    seed_values = _seed_state_values(
        state["seed_states"], seed_variables, refusal
    )
    try:
        digest = _sha256_of_regular_file(directory, name)
    except FileNotFoundError:
        raise refusal.file(
            f"{STATE_FILE} names the weights file {name!r}, which is missing."
        ) from None
    except untrusted.UntrustedFileError as error:
        raise refusal.file(str(error)) from None
    if digest != recorded:
        raise refusal.file(
            f"the weights file {name!r} does not match its SHA-256 in "
            f"{STATE_FILE}. Expected: {recorded}. Received: a file with "
            f"SHA-256 {digest}: it is truncated or corrupted."
        )
    return State(
        epoch, batches_done, steps_done, os.path.join(directory, name),
        seed_values,
    )
