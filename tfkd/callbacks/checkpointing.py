"""Atomic, verified `.keras` files, so a crash never leaves a broken student.

`keras.Model.save` writes the target file in place: a process killed (or a
disk filled) mid-write leaves a truncated zip where the last good model
was. `save_model_atomically` writes to a temporary file in the same
directory, flushes it to disk and moves it over the target with
`os.replace`, which is atomic on POSIX and Windows, so the path always
holds one complete model, the old or the new.

Next to it, `<path>.sha256.json` records the SHA-256 of the current file
and of the one it replaced. It is committed *before* the model file, so
whatever moment a crash hits, the file on disk matches one of its two
digests; `load_model_verified` refuses anything else (a partial copy to
another machine, a corrupted disk block).
"""

import glob
import json
import os

import keras

from tfkd.utils import files
from tfkd.utils import validation

#: Appended to a model's path to name its checksum file.
CHECKSUM_SUFFIX = ".sha256.json"



def checksum_path(filepath):
    """The checksum file of the model at `filepath`.

    Args:
        filepath: Path of a `.keras` file.

    Returns:
        `filepath` + `CHECKSUM_SUFFIX`.

    Example:

    >>> checksum_path("runs/student.keras")
    'runs/student.keras.sha256.json'
    """
    return os.fspath(filepath) + CHECKSUM_SUFFIX


def _temporary_path(filepath):
    directory, name = os.path.split(os.path.abspath(filepath))
    # Keras only saves to names ending in ".keras".
    return os.path.join(directory, f".{name}.{os.getpid()}.tmp.keras")


def _remove_stale_temporaries(filepath):
    """Deletes temporary files of earlier saves that were killed."""
    directory, name = os.path.split(os.path.abspath(filepath))
    pattern = os.path.join(directory, f".{glob.escape(name)}.*.tmp*")
    for path in glob.glob(pattern):
        try:
            os.remove(path)
        except OSError:
            pass


def _verified_digest_or_none(filepath):
    """The digest of the file at `filepath` if it verifies, else None."""
    try:
        return verify(filepath)
    except (OSError, ValueError):
        return None


def check_keras_path(filepath):
    """Returns `filepath` as a str after checking it ends in `.keras`."""
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise validation.invalid_value(
            "filepath", "a path ending in '.keras'", filepath
        )
    return filepath


def save_model_atomically(model, filepath):
    """Saves `model` to a `.keras` file that is never left half-written.

    Args:
        model: A `keras.Model` (for a Distiller, save `distiller.student`:
            the teacher never changes, so only the student needs saving).
        filepath: Path ending in `.keras`. Its directory is created.

    Returns:
        The SHA-256 hex digest of the saved file.

    Raises:
        ValueError: if `filepath` does not end in `.keras`.

    Example:

    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> digest = save_model_atomically(model, path)
    >>> load_model_verified(path).count_params()
    10
    """
    filepath = check_keras_path(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(filepath)
    temporary = _temporary_path(filepath)
    try:
        model.save(temporary)
        files.fsync_file(temporary)
        digest = files.sha256_of(temporary)
        previous = _verified_digest_or_none(filepath)
        # Commit the checksum first: until the rename below, the file on
        # disk is still the previous one, which `previous_sha256` vouches for.
        files.write_json_atomically(
            checksum_path(filepath),
            {"sha256": digest, "previous_sha256": previous},
        )
        os.replace(temporary, filepath)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    files.fsync_directory(directory)
    return digest


def verify(filepath):
    """Raises unless `filepath` matches its checksum file.

    Args:
        filepath: Path of a model saved by `save_model_atomically`.

    Returns:
        The file's SHA-256 hex digest.

    Raises:
        FileNotFoundError: if the model or its checksum file is missing.
        ValueError: if the file matches neither recorded digest.

    Example:

    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> digest = save_model_atomically(model, path)
    >>> verify(path) == digest
    True
    """
    filepath = os.fspath(filepath)
    record_path = checksum_path(filepath)
    if not os.path.exists(record_path):
        raise FileNotFoundError(
            f"No checksum file {record_path!r} next to {filepath!r}. "
            "Expected a model saved by tfkd.checkpointing."
            "save_model_atomically (or tfkd.callbacks.StudentCheckpoint); "
            "load other files with keras.saving.load_model."
        )
    with open(record_path) as file:
        record = json.load(file)
    digest = files.sha256_of(filepath)
    if digest not in (record.get("sha256"), record.get("previous_sha256")):
        raise ValueError(
            f"Invalid checkpoint {filepath!r}. Expected the SHA-256 recorded "
            f"in {record_path!r} ({record.get('sha256')}). Received: a file "
            f"with SHA-256 {digest} ({os.path.getsize(filepath)} bytes): it "
            "is truncated or corrupted (copied while being written?). Use "
            "an earlier copy."
        )
    return digest


def load_model_verified(filepath, custom_objects=None, compile=True):
    """Loads a `.keras` file after checking it against its checksum file.

    Args:
        filepath: Path of a model saved by `save_model_atomically`.
        custom_objects: Passed to `keras.saving.load_model`. Defaults to
            `None`.
        compile: Passed to `keras.saving.load_model`. Defaults to `True`.

    Returns:
        The `keras.Model`.

    Raises:
        FileNotFoundError: if the model or its checksum file is missing.
        ValueError: if the file does not match its checksum.

    Example:

    >>> student = load_model_verified("runs/student.keras")  # doctest: +SKIP
    """
    verify(filepath)
    return keras.saving.load_model(
        filepath, custom_objects=custom_objects, compile=compile
    )
