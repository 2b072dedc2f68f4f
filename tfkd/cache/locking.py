"""One writer per cache path: an exclusive lock next to the destination.

Every build of `<path>` (and every `finalize` of a sharded cache) holds
`<path>.lock` from before it first looks at `<path>` until after it has
committed, so two builders of one path run one after the other: the second
sees what the first committed and re-checks it (`overwrite=False` then
raises `FileExistsError` instead of silently replacing a cache that
appeared meanwhile). Readers take no lock: they pin what they verified
(`tfkd.cache.reader`).

The lock is `fcntl.flock` on the lock file, so the kernel releases it when
its holder exits, however it exits: a killed builder never leaves a lock
that blocks the next one. The holder removes the file when it is done;
because a waiter may have opened the file just before, a holder checks
after locking that the file it locked is still the one at `<path>.lock`,
and starts again otherwise (the usual unlink-safe `flock` protocol). A lock
file a killed builder left behind is empty and simply reused.

POSIX only (`fcntl`), like the rename-based commit it protects.
"""

import os
import stat

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: `import tfkd` still works
    fcntl = None

#: Suffix of the lock file of a destination.
LOCK_SUFFIX = ".lock"


def lock_path(path):
    """The lock file of destination `path`.

    Example:

    >>> lock_path("cache/fmnist")
    'cache/fmnist.lock'
    """
    return os.fspath(path) + LOCK_SUFFIX


class DestinationLock:
    """Holds the exclusive lock of a destination path while in a `with`.

    Blocks until no other process (or other `DestinationLock` of this
    process) holds it. The destination's parent directory is created if
    missing, as a build of `cache/fmnist` creates `cache/`.

    Args:
        path: The destination a build writes (the cache directory, or a
            shard directory inside a sharded cache).

    Raises:
        OSError: if the lock file cannot be created (say, the parent
            directory is read-only), or is not a regular file.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "cache")
    >>> with DestinationLock(path):
    ...     os.path.exists(lock_path(path))
    True
    >>> os.path.exists(lock_path(path))
    False
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._descriptor = None

    def __enter__(self):
        if fcntl is None:  # pragma: no cover - Windows
            raise OSError(
                "Building a teacher cache needs POSIX file locks (fcntl), "
                "which this platform lacks; build it on Linux or macOS (or "
                "WSL2)."
            )
        name = lock_path(self.path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        while True:
            descriptor = os.open(name, flags, 0o644)
            try:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    raise OSError(f"The lock file {name!r} is not a regular file.")
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                # The previous holder may have removed the file between our
                # open and our lock: then we hold a lock on a file nobody
                # else will ever lock, and must lock the current one.
                try:
                    current = os.stat(name, follow_symlinks=False)
                except FileNotFoundError:
                    current = None
                locked = os.fstat(descriptor)
            except BaseException:
                os.close(descriptor)
                raise
            if current is not None and (current.st_dev, current.st_ino) == (
                locked.st_dev,
                locked.st_ino,
            ):
                self._descriptor = descriptor
                return self
            os.close(descriptor)

    def __exit__(self, *exc_info):
        descriptor, self._descriptor = self._descriptor, None
        try:
            # Removed while still locked, so no one can lock it afterwards
            # believing it is the live lock (they re-check and retry).
            os.unlink(lock_path(self.path))
        except FileNotFoundError:
            pass
        finally:
            os.close(descriptor)
        return False
