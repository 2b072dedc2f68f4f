"""Files that a crash never leaves torn, and their digests.

Every text and JSON file tfkd and its benchmarks write for later reading
(reports, resumable partial results, tuning results, checksum files) goes
through `write_text_atomically`: the content is written to a temporary file
in the same directory, flushed to disk and moved over the target with
`os.replace`, which is atomic on POSIX and Windows. The target therefore
holds the old content or the new, never half of one.
"""

import hashlib
import json
import os
import tempfile

_CHUNK_BYTES = 1 << 20


def write_text_atomically(path, text):
    """Writes `text` (UTF-8) to `path`, atomically.

    The directory is created if needed. The file is readable by everyone
    (mode 0644), like any other output; the temporary file is removed if
    anything fails.

    Args:
        path: Target path (str or path-like).
        text: The whole content, a str.

    Returns:
        `path`, as a str.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a", "note.txt")
    >>> write_text_atomically(path, "hello\\n") == path
    True
    >>> open(path).read()
    'hello\\n'
    """
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path, data):
    """Writes `data` (bytes) to `path`, atomically.

    As `write_text_atomically`, for binary files (e.g. a `.tflite` model).

    Args:
        path: Target path (str or path-like).
        data: The whole content, a bytes-like object.

    Returns:
        `path`, as a str.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "blob.bin")
    >>> write_bytes_atomically(path, b"\\x00\\x01") == path
    True
    >>> open(path, "rb").read()
    b'\\x00\\x01'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "wb", dir=directory, prefix=".tmp-", delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates the file private (0600).
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.remove(handle.name)
        raise
    return path


def write_json_atomically(path, data, indent=1, sort_keys=False):
    """Writes `data` as JSON to `path`, atomically (`write_text_atomically`).

    NaN and infinities are refused (they are not JSON, and other readers
    choke on them); the file ends with a newline.

    Args:
        path: Target path.
        data: A JSON-serializable object.
        indent: Indentation, as for `json.dumps`. Defaults to `1`.
        sort_keys: Whether to sort object keys. Defaults to `False`.

    Returns:
        `path`, as a str.

    Raises:
        ValueError: if `data` holds NaN or an infinity.
    """
    text = json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=False)
    return write_text_atomically(path, text + "\n")


def read_versioned_json(path, schema_version, what, hint=""):
    """Reads a JSON object whose `"schema_version"` must be `schema_version`.

    Args:
        path: Path of the file.
        schema_version: The version this code reads.
        what: What the file is, for messages (e.g. `"tuning.json"`).
        hint: A sentence appended to the version error, saying what to do.
            Defaults to `""`.

    Returns:
        The parsed dict.

    Raises:
        ValueError: if the file is not JSON, or holds another version (or
            none); the message names the file.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != schema_version:
        raise ValueError(
            f"{path} has schema_version {version!r}; this tfkd reads {what} "
            f"schema_version {schema_version}." + (f" {hint}" if hint else "")
        )
    return data


def sha256_of(path):
    """The SHA-256 hex digest of a file, read in 1 MiB chunks.

    Args:
        path: Path of the file.

    Returns:
        The digest as 64 hex characters.

    Raises:
        FileNotFoundError: if the file does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path):
    """Flushes an already written file's content to disk.

    Args:
        path: Path of an existing file.
    """
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def fsync_directory(directory):
    """Makes renames inside `directory` durable (a no-op on Windows).

    Args:
        directory: Path of the directory whose entries changed.
    """
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
