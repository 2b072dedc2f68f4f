"""Marking the directories tfkd makes, so it replaces or deletes only those.

tfkd replaces a directory (a stale cache, an old backup) only when it can
show that tfkd made it: the directory holds a small marker file,
`.tfkd-owner.json`, written when tfkd created it and naming what it is
(`{"owner": "tfkd", "kind": "teacher-cache"}`), and nothing but the
entries that kind of directory holds. A user's `data/` folder that
happens to be passed as a cache path has no marker, so it is never
removed: the error names the path and what was found there.
"""

import fnmatch
import os
import shutil
import stat

from tfkd.utils import files
from tfkd.utils import untrusted

#: Name of the marker file inside every directory tfkd makes.
MARKER_FILE = ".tfkd-owner.json"
#: A marker is tiny; anything larger is not one.
_MARKER_MAX_BYTES = 4096
#: How many entries an error lists.
_SHOWN_ENTRIES = 6


class ForeignPathError(FileExistsError):
    """A path tfkd was asked to replace or delete is not tfkd's own."""


def mark(directory, kind):
    """Writes the marker that says tfkd made `directory`, as a `kind`.

    Args:
        directory: An existing directory tfkd just created.
        kind: What it is, e.g. `"teacher-cache"` or `"backup"`.

    Example:

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> mark(directory, "backup")
    >>> marked_kind(directory)
    'backup'
    """
    files.write_json_atomically(
        os.path.join(os.fspath(directory), MARKER_FILE),
        {"owner": "tfkd", "kind": kind},
    )


def marked_kind(directory):
    """The kind in `directory`'s marker, or `None` without a valid one.

    A link, a non-directory, a marker that is a link, too large or not the
    expected JSON all read as "no marker".

    Args:
        directory: The directory to look at.

    Returns:
        A str, or `None`.
    """
    directory = os.fspath(directory)
    try:
        untrusted.check_real_directory(directory)
        marker = untrusted.read_json(
            directory, MARKER_FILE, max_bytes=_MARKER_MAX_BYTES, max_depth=2
        )
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("owner") != "tfkd":
        return None
    kind = marker.get("kind")
    return kind if isinstance(kind, str) else None


def describe(path):
    """A short description of what is at `path`, for error messages.

    Args:
        path: Any path.

    Returns:
        A str such as `"a directory holding ['photos', 'thesis.tex']"`.
    """
    path = os.fspath(path)
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return "nothing"
    if stat.S_ISLNK(status.st_mode):
        return f"a symbolic link to {os.readlink(path)!r}"
    if not stat.S_ISDIR(status.st_mode):
        return f"a file of {status.st_size} bytes"
    entries = sorted(os.listdir(path))
    shown = entries[:_SHOWN_ENTRIES]
    more = f" and {len(entries) - len(shown)} more" if len(entries) > len(shown) else ""
    return f"a directory holding {shown}{more}" if entries else "an empty directory"


def unexpected_entries(directory, allowed):
    """The entries of `directory` matching none of the `allowed` patterns.

    Args:
        directory: An existing directory.
        allowed: `fnmatch` patterns of the entries its kind holds (the
            marker is always allowed).

    Returns:
        A sorted list of names.
    """
    patterns = (MARKER_FILE, *allowed)
    return sorted(
        name
        for name in os.listdir(os.fspath(directory))
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns)
    )


def is_owned(path, kind, allowed):
    """Whether `path` is a directory tfkd made as a `kind`, holding only
    entries matching `allowed`.

    Args:
        path: The directory.
        kind: The kind its marker must name.
        allowed: `fnmatch` patterns of the entries it may hold.

    Returns:
        A bool.
    """
    return marked_kind(path) == kind and not unexpected_entries(path, allowed)


def check_replaceable(path, kind, allowed, what):
    """Raises unless `path` is absent or a directory tfkd made as `kind`.

    Args:
        path: The path about to be replaced or deleted.
        kind: The kind its marker must name.
        allowed: `fnmatch` patterns of the entries it may hold.
        what: What tfkd would make there, for the message (e.g.
            `"teacher cache"`).

    Raises:
        ForeignPathError: naming `path` and what was found there.
    """
    path = os.fspath(path)
    if not os.path.lexists(path) or is_owned(path, kind, allowed):
        return
    found = describe(path)
    reason = ""
    if marked_kind(path) == kind:
        reason = (
            " It carries tfkd's marker but also holds entries tfkd did not "
            f"write: {unexpected_entries(path, allowed)}."
        )
    raise ForeignPathError(
        f"Refusing to replace {path!r}: it is not a {what} made by tfkd "
        f"(found {found}).{reason} tfkd replaces or deletes only directories "
        "it made itself; choose another path, or move what is there away "
        "yourself."
    )


def remove_owned(path, kind, allowed, what):
    """Deletes `path` after `check_replaceable` shows it is tfkd's.

    Args:
        path: The directory to delete (absent is fine).
        kind: The kind its marker must name.
        allowed: `fnmatch` patterns of the entries it may hold.
        what: What it is, for the message.

    Raises:
        ForeignPathError: if it is not tfkd's (nothing is deleted).
    """
    check_replaceable(path, kind, allowed, what)
    if os.path.lexists(path):
        # rmtree never follows links inside the tree it removes.
        shutil.rmtree(path)
