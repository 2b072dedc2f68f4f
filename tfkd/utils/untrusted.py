"""Reading files tfkd did not necessarily write: bounded, inside, no links.

A cache, a shard or a backup directory may come from anywhere (a copy, a
download, a shared disk, a colleague), so every file tfkd reads back from
one is untrusted input:

- its name must be a plain file name (no separator, no `..`), so no path
  read from a file can leave the directory it was found in;
- it must be a regular file, not a symbolic link (opened with `O_NOFOLLOW`
  where the platform has it, and checked again on the open descriptor), so
  a link cannot redirect a read to a file elsewhere;
- a JSON file is refused above a size cap before a byte of it is parsed,
  and above a nesting depth before `json` recurses into it; the caps are
  this module's constants (or the caller's), never values read from the
  file they limit.

Every refusal is an `UntrustedFileError` (a `ValueError`) that names the
file and what was wrong; callers re-raise it as their own error type.
"""

import json
import os
import re
import stat

#: Largest JSON file (metadata, backup state) read back, in bytes.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest nesting of arrays and objects accepted in such a file.
MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class UntrustedFileError(ValueError):
    """A file read back from disk is not what tfkd accepts."""


def check_plain_name(name, what="file name"):
    """Checks that `name` names an entry directly inside a directory.

    Args:
        name: The name read from a file (metadata, a backup state).
        what: What the name is, for the message. Defaults to
            `"file name"`.

    Returns:
        `name`.

    Raises:
        UntrustedFileError: if `name` is not a non-empty str without a
            path separator, or is `.` or `..`.

    Example:

    >>> check_plain_name("state-3.weights.h5")
    'state-3.weights.h5'
    >>> check_plain_name("../elsewhere/x.weights.h5")
    Traceback (most recent call last):
    ...
    tfkd.utils.untrusted.UntrustedFileError: Expected a plain file name inside its directory (no path separator, no '..'). Received: file name '../elsewhere/x.weights.h5'.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or any(s in name for s in separators)
        or "\x00" in name
    ):
        raise UntrustedFileError(
            "Expected a plain file name inside its directory (no path "
            f"separator, no '..'). Received: {what} {name!r}."
        )
    return name


def open_regular_file(directory, name):
    """Opens `directory/name` for reading, refusing links and non-files.

    The descriptor is checked with `fstat` after opening, so what was
    checked is what is read (no window between a check and the open).

    Args:
        directory: The directory the file must be in.
        name: A plain file name (see `check_plain_name`).

    Returns:
        A binary file object opened for reading; the caller closes it.

    Raises:
        FileNotFoundError: if there is no such entry.
        UntrustedFileError: for a bad name, a symbolic link, or anything
            other than a regular file.
    """
    check_plain_name(name)
    path = os.path.join(os.fspath(directory), name)
    if os.path.islink(path):
        raise UntrustedFileError(
            f"Refusing to read {path!r}: it is a symbolic link (to "
            f"{os.readlink(path)!r}); tfkd reads only regular files inside "
            "the directory it was given."
        )
    return _open_regular(path, path)


def check_regular_file(directory, name):
    """Checks that `directory/name` is a regular file, not a link.

    Args:
        directory: The directory the file must be in.
        name: A plain file name.

    Returns:
        The file's `os.stat_result` (from `lstat`).

    Raises:
        FileNotFoundError: if there is no such entry.
        UntrustedFileError: for a bad name, a link or a non-file.
    """
    check_plain_name(name)
    path = os.path.join(os.fspath(directory), name)
    status = os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        raise UntrustedFileError(
            f"Refusing to read {path!r}: it is a symbolic link (to "
            f"{os.readlink(path)!r}); tfkd reads only regular files inside "
            "the directory it was given."
        )
    if not stat.S_ISREG(status.st_mode):
        raise UntrustedFileError(
            f"Refusing to read {path!r}: it is not a regular file."
        )
    return status


def check_real_directory(path, what="directory"):
    """Checks that `path` is a directory and not a symbolic link to one.

    Args:
        path: The path (e.g. a shard directory inside a cache).
        what: What it is, for the message. Defaults to `"directory"`.

    Raises:
        FileNotFoundError: if there is no such entry.
        UntrustedFileError: for a link or a non-directory.
    """
    status = os.lstat(os.fspath(path))
    if stat.S_ISLNK(status.st_mode):
        raise UntrustedFileError(
            f"Refusing the {what} {os.fspath(path)!r}: it is a symbolic link "
            f"(to {os.readlink(path)!r}); tfkd follows no links inside the "
            "directories it reads."
        )
    if not stat.S_ISDIR(status.st_mode):
        raise UntrustedFileError(
            f"Refusing the {what} {os.fspath(path)!r}: it is not a directory."
        )


def json_depth(data):
    """The deepest nesting of `[`/`{` in JSON text, strings left out.

    Args:
        data: JSON text as bytes.

    Returns:
        An int (0 for a scalar).

    Example:

    >>> json_depth(b'{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub(b"", data)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def open_regular_file_at(directory_fd, name, path):
    """Opens the entry `name` of an open directory for reading.

    As `open_regular_file`, relative to a directory descriptor rather than
    a path, so every file read from one directory comes from that very
    directory even if its path is renamed or replaced meanwhile.

    Args:
        directory_fd: A descriptor of the directory (`os.open` with
            `O_DIRECTORY`).
        name: A plain file name (see `check_plain_name`).
        path: The file's path, for messages.

    Returns:
        A binary file object opened for reading; the caller closes it.

    Raises:
        FileNotFoundError: if there is no such entry.
        UntrustedFileError: for a bad name, a symbolic link, or anything
            other than a regular file.

    Example:

    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with open(os.path.join(directory, "a.txt"), "w") as f:
    ...     _ = f.write("hi")
    >>> descriptor = os.open(directory, os.O_RDONLY)
    >>> with open_regular_file_at(descriptor, "a.txt", "a.txt") as handle:
    ...     handle.read()
    b'hi'
    >>> os.close(descriptor)
    """
    check_plain_name(name)
    return _open_regular(name, path, directory_fd)


def _open_regular(name, path, directory_fd=None):
    """`os.open` without following a link, then `fstat`: a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(
        os, "O_BINARY", 0
    )
    try:
        descriptor = os.open(name, flags, dir_fd=directory_fd)
    except OSError as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise UntrustedFileError(
            f"Refusing to read {path!r}: {error.strerror} (a symbolic link "
            "or an entry that is not a regular file)."
        ) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UntrustedFileError(
            f"Refusing to read {path!r}: it is not a regular file."
        )
    return os.fdopen(descriptor, "rb")


def read_capped(handle, path, max_bytes):
    """Reads a whole open file, refusing it above `max_bytes`.

    The size is checked with `fstat` before a byte is read, and again
    while reading (a file that grows meanwhile is refused too).

    Args:
        handle: A binary file object at its start.
        path: The file's path, for messages.
        max_bytes: The size cap.

    Returns:
        The file's bytes.

    Raises:
        UntrustedFileError: if the file holds more than `max_bytes`.

    Example:

    >>> import io
    >>> read_capped(io.BytesIO(b"abc"), "x", max_bytes=3)
    b'abc'
    """
    try:
        size = os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a real file
        size = 0
    if size > max_bytes:
        raise UntrustedFileError(
            f"Refusing to parse {path!r}: it holds {size} bytes, more "
            f"than the {max_bytes} this tfkd reads for such a file."
        )
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew after the fstat
        raise UntrustedFileError(
            f"Refusing to parse {path!r}: it holds more than the {max_bytes} "
            "bytes this tfkd reads for such a file."
        )
    return data


def parse_json(data, path, max_depth=MAX_JSON_DEPTH):
    """Parses JSON bytes read with `read_capped`, refusing deep nesting.

    Args:
        data: The file's bytes.
        path: The file's path, for messages.
        max_depth: The nesting cap. Defaults to `MAX_JSON_DEPTH` (64).

    Returns:
        The parsed value.

    Raises:
        UntrustedFileError: for text nested deeper than `max_depth` or that
            is not JSON (NaN and infinities included).

    Example:

    >>> parse_json(b'[1, [2]]', "x")
    [1, [2]]
    >>> parse_json(b'[[[1]]]', "x", max_depth=2)
    Traceback (most recent call last):
    ...
    tfkd.utils.untrusted.UntrustedFileError: Refusing to parse 'x': it nests 3 levels deep, more than the 2 this tfkd reads.
    """
    depth = json_depth(data)
    if depth > max_depth:
        raise UntrustedFileError(
            f"Refusing to parse {path!r}: it nests {depth} levels deep, "
            f"more than the {max_depth} this tfkd reads."
        )

    def refuse_constant(constant):
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise UntrustedFileError(
            f"Refusing {path!r}: it is not valid JSON ({error})."
        ) from None


def read_json(directory, name, max_bytes=MAX_JSON_BYTES,
              max_depth=MAX_JSON_DEPTH):
    """Reads a JSON file from `directory`, bounded before it is parsed.

    Args:
        directory: The directory holding the file.
        name: The file's plain name.
        max_bytes: The size cap. Defaults to `MAX_JSON_BYTES` (16 MiB).
        max_depth: The nesting cap. Defaults to `MAX_JSON_DEPTH` (64).

    Returns:
        The parsed value.

    Raises:
        FileNotFoundError: if the file does not exist.
        UntrustedFileError: for a link or non-file, a file over
            `max_bytes` or nested deeper than `max_depth`, or text that is
            not JSON (NaN and infinities included).

    Example:

    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> with open(os.path.join(directory, "a.json"), "w") as f:
    ...     _ = f.write('{"epoch": 1}')
    >>> read_json(directory, "a.json")
    {'epoch': 1}
    """
    path = os.path.join(os.fspath(directory), name)
    with open_regular_file(directory, name) as handle:
        data = read_capped(handle, path, max_bytes)
    return parse_json(data, path, max_depth)
