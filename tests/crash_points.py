"""Deterministic crash points for the fault-injection tests.

`run(target, args, crash_at=k)` runs `target(*args)` in a child process
that dies (`os._exit`, no cleanup, no `finally`, like a `kill -9`) just
before its k-th write step: creating a directory or opening a file for
writing, an `fsync`, a rename or replace, a removal. With `crash_at=0` it
runs to the end and reports how many write steps there were, so a test can
crash a job once at each of them in turn (no random sleeps). With
`torn=True` a crash at an `fsync` first cuts the file being synced to half
its length: the bytes a power cut could lose. `step_kinds` lists what
each step is, so a test can run the torn crashes at the fsyncs only.

Children are forked from a `multiprocessing` fork server that imported
TensorFlow and Keras once, so each crash costs a fork and the job itself,
not a TensorFlow import. `target` must be a module-level function of an
importable module (a test module is).
"""

import builtins
import collections
import multiprocessing
import os
import shutil

#: Exit status of a child killed at its crash point.
CRASH_EXIT = 86

Outcome = collections.namedtuple("Outcome", "crashed steps result error")

# The kinds of the write steps taken so far, in the child (`step_kinds`).
_KINDS = []

_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["tensorflow", "keras", "tfkd"])
    return _CONTEXT


def context():
    """The `multiprocessing` context whose fork server preloaded TensorFlow.

    For tests that run several children at once (races), not through `run`.
    """
    return _context()


def _is_write_mode(mode):
    return any(c in mode for c in "wax+")


def _install(crash_at, torn, steps):
    """Wraps the write steps of `os`, `shutil` and `open` with a counter."""

    def step(kind, descriptor=None):
        steps[0] += 1
        _KINDS.append(kind)
        if steps[0] == crash_at:
            if torn and descriptor is not None:
                try:
                    size = os.fstat(descriptor).st_size
                    os.ftruncate(descriptor, size // 2)
                except OSError:
                    pass  # a directory has no bytes a power cut could lose
            os._exit(CRASH_EXIT)

    def counted(name, function, descriptor_argument=False):
        def wrapper(*args, **kwargs):
            step(name, args[0] if descriptor_argument else None)
            return function(*args, **kwargs)

        return wrapper

    for name in ("mkdir", "rename", "replace", "remove", "unlink", "rmdir"):
        setattr(os, name, counted(name, getattr(os, name)))
    os.fsync = counted("fsync", os.fsync, descriptor_argument=True)
    shutil.rmtree = counted("rmtree", shutil.rmtree)

    original_open, original_os_open = builtins.open, os.open

    def open_(file, mode="r", *args, **kwargs):
        if _is_write_mode(mode):
            step("open")
        return original_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            step("open")
        return original_os_open(path, flags, *args, **kwargs)

    builtins.open = open_
    os.open = os_open


def _child(connection, target, args, crash_at, torn):
    steps = [0]
    _install(crash_at, torn, steps)
    try:
        result = target(*args)
    except BaseException as error:  # reported to the test, not swallowed
        connection.send((steps[0], None, f"{type(error).__name__}: {error}"))
    else:
        connection.send((steps[0], result, None))
    connection.close()


def _record_kinds(target, args):
    target(*args)
    return list(_KINDS)


def step_kinds(target, args=(), timeout=300):
    """The kinds of `target(*args)`'s write steps, in order.

    Args:
        target: A module-level function.
        args: Its positional arguments (picklable).
        timeout: Seconds to wait for the child. Defaults to 300.

    Returns:
        A list with one of `"mkdir"`, `"open"`, `"fsync"`, `"rename"`,
        `"replace"`, `"remove"`, `"unlink"`, `"rmdir"`, `"rmtree"` per
        step: `kinds[k - 1]` is what `crash_at=k` dies before (a torn
        crash differs from a plain one only at an `"fsync"`).

    Raises:
        RuntimeError: if `target` raised.
    """
    outcome = run(_record_kinds, (target, args), timeout=timeout)
    if outcome.error is not None:
        raise RuntimeError(f"{target.__name__} failed: {outcome.error}")
    return outcome.result


def run(target, args=(), crash_at=0, torn=False, timeout=300):
    """Runs `target(*args)` in a child that dies before write step `crash_at`.

    Args:
        target: A module-level function.
        args: Its positional arguments (picklable).
        crash_at: The write step (1-based) to die before; 0 never dies.
            Defaults to 0.
        torn: Whether a crash at an `fsync` first halves the file.
            Defaults to False.
        timeout: Seconds to wait for the child. Defaults to 300.

    Returns:
        `Outcome(crashed, steps, result, error)`: whether the child died at
        its crash point, how many write steps it took (when it finished),
        what `target` returned and the error it raised (as text), if any.
    """
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child, args=(sender, target, args, crash_at, torn)
    )
    process.start()
    sender.close()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        raise TimeoutError(f"{target.__name__} did not finish in {timeout} s")
    if process.exitcode == CRASH_EXIT:
        return Outcome(True, crash_at, None, None)
    if process.exitcode != 0 or not receiver.poll():
        raise RuntimeError(
            f"{target.__name__} died with exit code {process.exitcode}"
        )
    steps, result, error = receiver.recv()
    return Outcome(False, steps, result, error)
