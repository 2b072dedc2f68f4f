"""What a cache build may replace or delete: only what tfkd made.

Every directory the cache code creates carries tfkd's ownership marker
(`tfkd.utils.ownership`): a build's partial directory (and so the cache it
is renamed to, and every shard directory) is marked `"teacher-cache"`, a
sharded cache's root `"sharded-teacher-cache"`. A rebuild
(`overwrite=True`, `open(..., on_stale="rebuild")`) replaces `<path>`
only when it is:

- absent, or an empty directory (nothing can be lost);
- a directory marked as a cache holding nothing but a cache's entries
  (`metadata.json`, the array files);
- a marked sharded root holding nothing but shard directories (each
  replaceable in turn), their partial, replaced and lock entries and the
  top-level `metadata.json`;
- a cache written by a tfkd from before the marker: a directory whose
  metadata is valid (`format` `tfkd.TeacherCache`, every field checked)
  and that holds no entry besides the ones its metadata names.

Anything else (a user's `data/` folder, a cache someone added files to,
a symbolic link) is a `ForeignPathError` naming the path and what was
found there, and nothing is touched.

Leftovers of builds that were killed (`<path>.partial-<pid>-<token>`,
`<path>.replaced-<pid>-<token>`) are removed by the next build of the same
path, under its lock (`tfkd.cache.locking`), and only when they are
provably tfkd's: marked (or, for a replaced cache, verifiably a cache),
holding only a cache's entries, and their builder's process has exited.
An empty leftover directory is removed too. Anything else stays, and is
named by `TeacherCache.open`'s error.
"""

import os
import secrets

from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.cache import reader
from tfkd.utils import files
from tfkd.utils import ownership

#: Marker kind of a cache directory (and shard directory, and partial).
CACHE_KIND = "teacher-cache"
#: Marker kind of a sharded cache's root directory.
SHARDED_KIND = "sharded-teacher-cache"
#: The entries a finished cache directory holds.
CACHE_ENTRIES = (
    format_lib.METADATA_FILE,
    *(format_lib.array_file(name) for name in sorted(
        set().union(*format_lib.ARRAYS_BY_STORAGE.values())
    )),
)
# A partial directory may also hold the temporary file of its marker.
_PARTIAL_ENTRIES = CACHE_ENTRIES + (".tmp-*",)
_SHARD = "shard-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
#: The entries a sharded cache's root holds.
SHARDED_ENTRIES = (
    format_lib.METADATA_FILE,
    ".tmp-*",  # of an interrupted `finalize`
    _SHARD,
    _SHARD + format_lib.PARTIAL_INFIX + "*",
    _SHARD + format_lib.REPLACED_INFIX + "*",
    _SHARD + ".lock",
)


def make_partial(path):
    """Creates and marks the partial directory a build of `path` writes.

    Args:
        path: The destination.

    Returns:
        The partial directory's path.
    """
    partial = format_lib.partial_directory(path, secrets.token_hex(4))
    os.mkdir(partial)
    ownership.mark(partial, CACHE_KIND)
    return partial


def make_root(path):
    """Creates (or adopts) and marks the root of a sharded cache.

    An absent or empty directory becomes a root; a root tfkd made is kept.

    Args:
        path: The sharded cache's directory.

    Raises:
        ForeignPathError: if `path` holds anything else.
    """
    if ownership.marked_kind(path) == SHARDED_KIND:
        ownership.check_replaceable(
            path, SHARDED_KIND, SHARDED_ENTRIES, "sharded teacher cache"
        )
        return
    if os.path.lexists(path) and not _is_empty_directory(path):
        raise _foreign(path, "sharded teacher cache")
    os.makedirs(path, exist_ok=True)
    ownership.mark(path, SHARDED_KIND)


def _is_empty_directory(path):
    return (
        os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    )


def _foreign(path, what, detail=""):
    return ownership.ForeignPathError(
        f"Refusing to replace {os.fspath(path)!r}: it is not a {what} made "
        f"by tfkd (found {ownership.describe(path)}).{detail} tfkd replaces "
        "or deletes only directories it made itself (marked with "
        f"{ownership.MARKER_FILE}, or verifiably a cache); choose another "
        "path, or move what is there away yourself."
    )


def _legacy_problem(path):
    """Why an unmarked `path` is not verifiably a cache; `None` if it is."""
    try:
        metadata = reader.read_metadata(path)
    except (OSError, errors.InvalidCacheError) as error:
        return f" Its metadata does not describe a valid teacher cache ({error})."
    if metadata.get("layout") == format_lib.LAYOUT_SHARDED:
        named = {entry["directory"] for entry in metadata["shards"]}
    else:
        named = {spec["file"] for spec in metadata["arrays"].values()}
    unexpected = sorted(
        set(os.listdir(path)) - named - {format_lib.METADATA_FILE}
    )
    if unexpected:
        return f" It holds entries its metadata does not name: {unexpected}."
    if metadata.get("layout") == format_lib.LAYOUT_SHARDED:
        for name in sorted(named):
            problem = replaceable_problem(os.path.join(path, name))
            if problem is not None:
                return f" Its shard {name!r} is not replaceable:{problem}"
    return None


def replaceable_problem(path):
    """Why tfkd may not replace `path`, or `None` if it may.

    Args:
        path: A path a build would replace.

    Returns:
        `None`, or a sentence saying what is wrong.
    """
    path = os.fspath(path)
    if not os.path.lexists(path) or _is_empty_directory(path):
        return None
    kind = ownership.marked_kind(path)
    if kind == CACHE_KIND:
        extra = ownership.unexpected_entries(path, CACHE_ENTRIES)
        return None if not extra else (
            f" It carries tfkd's marker but also holds entries a cache does "
            f"not: {extra}."
        )
    if kind == SHARDED_KIND:
        extra = ownership.unexpected_entries(path, SHARDED_ENTRIES)
        if extra:
            return (
                " It carries tfkd's marker but also holds entries a sharded "
                f"cache does not: {extra}."
            )
        for name in sorted(os.listdir(path)):
            inner = os.path.join(path, name)
            if os.path.isdir(inner) or os.path.islink(inner):
                problem = replaceable_problem(inner)
                if problem is not None:
                    return f" Its entry {name!r} is not tfkd's:{problem}"
        return None
    if kind is not None or os.path.islink(path) or not os.path.isdir(path):
        return ""
    return _legacy_problem(path)


def check_replaceable(path, what="teacher cache"):
    """Raises unless tfkd may replace or delete `path` (see module doc).

    Args:
        path: The path a build would replace.
        what: What tfkd would make there, for the message. Defaults to
            `"teacher cache"`.

    Raises:
        ForeignPathError: naming `path` and what was found there.
    """
    problem = replaceable_problem(path)
    if problem is not None:
        raise _foreign(path, what, problem)


def remove(path, what="teacher cache"):
    """Deletes `path` after `check_replaceable` (absent is fine).

    The directory is first renamed to `<path>.replaced-<pid>-<token>`, so
    `path` is at once free and a crash during the removal leaves a
    leftover the next build cleans, never a half-deleted cache at `path`.

    Raises:
        ForeignPathError: if it is not tfkd's (nothing is deleted).
    """
    check_replaceable(path, what)
    if not os.path.lexists(path):
        return
    moved = format_lib.replaced_directory(path, secrets.token_hex(4))
    os.rename(path, moved)
    remove_tree(moved)


def remove_tree(path):
    """Deletes a directory tfkd made, its marker last.

    Unlike `shutil.rmtree`, the marker goes last (in every subdirectory
    too), so a removal cut short leaves a directory that is still marked,
    which the next build recognises and finishes removing. Links are
    unlinked, never followed.

    Args:
        path: A directory `check_replaceable` accepted.
    """
    for name in sorted(os.listdir(path)):
        if name == ownership.MARKER_FILE:
            continue
        inner = os.path.join(path, name)
        if os.path.isdir(inner) and not os.path.islink(inner):
            remove_tree(inner)
        else:
            os.unlink(inner)
    marker = os.path.join(path, ownership.MARKER_FILE)
    if os.path.lexists(marker):
        os.unlink(marker)
    os.rmdir(path)


def _process_alive(pid):
    if pid is None:
        return False
    if pid == os.getpid():
        return False  # under our lock, our own leftovers are dead builds
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(path):
    """Removes the leftovers of killed builds of `path`; call under its lock.

    Args:
        path: The destination whose `<path>.partial-*` and
            `<path>.replaced-*` siblings are examined.

    Returns:
        The leftovers kept (not provably tfkd's, or their builder alive).
    """
    kept = []
    for leftover in format_lib.leftover_partials(path):
        if _process_alive(format_lib.builder_pid(leftover)):
            kept.append(leftover)
            continue
        if _is_empty_directory(leftover):
            os.rmdir(leftover)
            continue
        partial = format_lib.PARTIAL_INFIX in os.path.basename(leftover)
        if partial:
            owned = ownership.is_owned(leftover, CACHE_KIND, _PARTIAL_ENTRIES)
        else:
            owned = replaceable_problem(leftover) is None
        if owned:
            remove_tree(leftover)
        else:
            kept.append(leftover)
    return kept


def commit(partial, path):
    """Moves a finished partial directory to `path`; call under its lock.

    Replacing needs two renames (`path` to `<path>.replaced-*`, the partial
    to `path`), so for an instant `path` does not exist; it never holds a
    mixture. The old directory is checked to be tfkd's first.

    Args:
        partial: The finished, marked partial directory.
        path: The destination.

    Raises:
        ForeignPathError: if `path` holds something tfkd may not replace
            (the partial is left for the caller to remove).
    """
    check_replaceable(path)
    replaced = None
    if os.path.lexists(path):
        replaced = format_lib.replaced_directory(path, secrets.token_hex(4))
        os.rename(path, replaced)
    os.rename(partial, path)
    files.fsync_directory(os.path.dirname(os.path.abspath(path)))
    if replaced is not None:
        remove_tree(replaced)
