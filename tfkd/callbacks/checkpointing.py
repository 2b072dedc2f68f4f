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

The checksum file is read back as untrusted input: it must be a regular
file (not a link), at most `_RECORD_MAX_BYTES`, a JSON object whose two
fields are digests, or it is refused with a `ValueError` naming it. The
model path itself may be a symbolic link (a user's `latest.keras` pointing
at a run's student): it is the user's own choice of path, and the checksum
file is looked up next to the file the link resolves to, where
`save_model_atomically` wrote it. The checksum guards against accidents
(truncation, corruption, a copy taken mid-write), not against someone who
can write the directory: such a person could rewrite the checksum too.
"""

import os
import re
import stat

import keras

from tfkd.utils import files
from tfkd.utils import ownership
from tfkd.utils import untrusted
from tfkd.utils import validation

#: Appended to a model's path to name its checksum file.
CHECKSUM_SUFFIX = ".sha256.json"
#: A checksum file is two digests, under 200 bytes.
_RECORD_MAX_BYTES = 4096
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


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
    """Deletes temporary files of earlier saves that were killed.

    Only regular files of exactly the names `_temporary_path` makes
    (`.<name>.<pid>.tmp.keras`) go: the directory may be a user's, and a
    link of such a name is not followed or removed.
    """
    directory, name = os.path.split(os.path.abspath(filepath))
    own = re.compile(rf"\.{re.escape(name)}\.[0-9]+\.tmp\.keras", re.ASCII)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        try:
            if own.fullmatch(entry) and stat.S_ISREG(os.lstat(path).st_mode):
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
    if os.path.lexists(temporary):
        # Left by the cleanup above: a link or a directory, which
        # `model.save` would write through or fail on.
        raise ownership.ForeignPathError(
            f"Refusing to save {filepath!r} through the temporary file "
            f"{temporary!r}: expected no entry there. Received: "
            f"{ownership.describe(temporary)}, which tfkd did not write."
        )
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
        if os.path.lexists(temporary) and not os.path.islink(temporary):
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
        ValueError: if the file matches neither recorded digest, or the
            checksum file is invalid (see `read_checksums`).

    Example:

    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> digest = save_model_atomically(model, path)
    >>> verify(path) == digest
    True
    """
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"No model file {filepath!r}.")
    # Next to the file a link resolves to: where the save put it.
    real = os.path.realpath(filepath)
    sha256, previous = read_checksums(real)
    digest = files.sha256_of(real)
    if digest not in (sha256, previous):
        raise ValueError(
            f"Invalid checkpoint {filepath!r}. Expected the SHA-256 recorded "
            f"in {checksum_path(real)!r} ({sha256}). Received: a file "
            f"with SHA-256 {digest} ({os.path.getsize(real)} bytes): it "
            "is truncated or corrupted (copied while being written?). Use "
            "an earlier copy."
        )
    return digest


def read_checksums(filepath):
    """Reads the checksum file of the model at `filepath`, as untrusted.

    Args:
        filepath: Path of a model saved by `save_model_atomically`.

    Returns:
        `(sha256, previous_sha256)`: the digest of the current file and of
        the one it replaced (`None` for a first save).

    Raises:
        FileNotFoundError: if the checksum file is missing.
        ValueError: if it is a link or no regular file, too large, not
            JSON, or lacks a field or holds a field that is no digest.

    Example:

    >>> import keras, os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> digest = save_model_atomically(model, path)
    >>> read_checksums(path) == (digest, None)
    True
    """
    record_path = checksum_path(filepath)
    directory, name = os.path.split(os.path.abspath(record_path))
    try:
        record = untrusted.read_json(
            directory, name, max_bytes=_RECORD_MAX_BYTES, max_depth=1
        )
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No checksum file {record_path!r} next to {filepath!r}. "
            "Expected a model saved by tfkd.checkpointing."
            "save_model_atomically (or tfkd.callbacks.StudentCheckpoint); "
            "load other files with keras.saving.load_model."
        ) from None
    except untrusted.UntrustedFileError as error:
        raise ValueError(
            f"Invalid checksum file {record_path!r}: {error}"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(
            f"Invalid checksum file {record_path!r}. Expected a JSON object "
            "with the fields 'sha256' and 'previous_sha256'. Received: a "
            f"{type(record).__name__}."
        )
    digests = []
    for field, nullable in (("sha256", False), ("previous_sha256", True)):
        value = record.get(field)
        if (nullable and field in record and value is None) or (
            isinstance(value, str) and _SHA256.fullmatch(value)
        ):
            digests.append(value)
            continue
        expected = "64 lowercase hex digits" + (" or null" if nullable else "")
        received = repr(value) if field in record else "no such field"
        raise ValueError(
            f"Invalid checksum file {record_path!r}: field {field!r}. "
            f"Expected {expected}. Received: {received}."
        )
    return tuple(digests)


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
    # Loaded by path again (Keras's public loader takes no file object): a
    # file swapped in between is outside what the checksum guards against.
    return keras.saving.load_model(
        filepath, custom_objects=custom_objects, compile=compile
    )
