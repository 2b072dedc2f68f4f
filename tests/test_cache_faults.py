"""Fault injection and races: a cache is complete and right, or refused.

Crashes (`tests/crash_points.py`): a build, a rebuild over an existing
cache, a shard build (which finalizes) and a `finalize` are each killed
just before every one of their write steps in turn (and, for the first two,
with the file being synced torn to half). After each crash,
`TeacherCache.open` must give a complete, verified cache equal to the
reference (the one generation or the other), or a clear refusal
(`FileNotFoundError` / `InvalidCacheError`); and a fresh build or
`finalize` must then succeed and clean the leftovers tfkd can prove are
its own.

Races (real processes): two builders of one path with `overwrite=False`
(exactly one wins; each returned cache reads its own teacher's logits), and
a process rebuilding a cache again and again while others open and read it
(every read matches the generation whose metadata it verified).

Every generation's teacher emits constant logits equal to its generation
number, so any mixture shows.
"""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import crash_points
from tfkd.cache import InvalidCacheError
from tfkd.cache import TeacherCache
from tfkd.cache import fingerprint
from tfkd.cache import format as format_lib

EXAMPLES = 32
CLASSES = 3
_CLEAR_ERRORS = (FileNotFoundError, InvalidCacheError)


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.random((EXAMPLES, 4)).astype("float32")
    y = rng.integers(0, CLASSES, EXAMPLES).astype("int32")
    return x, y


def _pipeline(delay=0.0):
    x, y = _inputs()
    if not delay:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def batches():  # slow enough for two builders to overlap
        for start in range(0, EXAMPLES, 8):
            time.sleep(delay)
            yield x[start:start + 8], y[start:start + 8]

    return tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )


def _teacher(generation):
    """A teacher whose logits are all `generation`."""
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(CLASSES)])
    kernel, _ = teacher.layers[0].get_weights()
    teacher.layers[0].set_weights(
        [np.zeros_like(kernel), np.full(CLASSES, float(generation), np.float32)]
    )
    return teacher


# -- targets run in crashing children (module-level, picklable) -------------


def build(path, generation, overwrite, delay=0.0):
    cache = TeacherCache.build(
        _teacher(generation), _pipeline(delay), path, overwrite=overwrite,
        dtype="float32", verbose=0,
    )
    return float(cache.read()[2][0, 0])


def build_shard(path, generation, index):
    TeacherCache.build(
        _teacher(generation), _pipeline(), path, num_shards=2,
        shard_index=index, dtype="float32", verbose=0,
    )


def finalize(path):
    TeacherCache.finalize(path)


# -- checks -----------------------------------------------------------------


def _generation(path, allowed):
    """The generation of the cache at `path` after checking it whole, or
    `None` if opening it is refused with a clear error."""
    try:
        cache = TeacherCache.open(path)  # checksums too
    except _CLEAR_ERRORS:
        return None
    x, y = _inputs()
    inputs, labels, logits = cache.read()
    order = np.lexsort(inputs.T)
    np.testing.assert_array_equal(inputs[order], x[np.lexsort(x.T)])
    np.testing.assert_array_equal(labels[order], y[np.lexsort(x.T)])
    values = np.unique(logits)
    assert len(values) == 1 and values[0] in allowed, values  # no mixture
    return int(values[0])


def _check_leftovers_cleaned(path):
    """After a successful retry, only leftovers tfkd cannot prove its own
    remain: a partial directory killed while its marker was being written
    (it holds the marker's temporary file only)."""
    for leftover in format_lib.leftover_partials(path):
        entries = os.listdir(leftover)
        assert entries and all(e.startswith(".tmp-") for e in entries), (
            leftover, entries,
        )


def _steps(target, args):
    outcome = crash_points.run(target, args, crash_at=0)
    assert outcome.error is None, outcome.error
    return outcome.steps


def _crash_every_step(tmp_path, target, make_args, prepare, after, torn=False):
    """Runs `target` crashing at each write step in a fresh directory.

    Returns:
        The number of crash points.
    """
    reference = tmp_path / f"reference-{'torn' if torn else 'crash'}"
    reference.mkdir()
    prepare(str(reference / "cache"))
    steps = _steps(target, make_args(str(reference / "cache")))
    for step in range(1, steps + 1):
        directory = tmp_path / f"{'torn' if torn else 'crash'}-{step}"
        directory.mkdir()
        path = str(directory / "cache")
        prepare(path)
        outcome = crash_points.run(target, make_args(path), crash_at=step, torn=torn)
        assert outcome.error is None, (step, outcome.error)
        after(path, step)
    return steps


def _none(path):
    pass


def _existing(path):
    build(path, 1, overwrite=False)


def test_a_build_killed_at_any_write_step_leaves_nothing_or_the_whole_cache(tmp_path):
    def after(path, step):
        found = _generation(path, {1})
        if found is None:
            build(path, 1, overwrite=False)  # the retry is not blocked
        assert _generation(path, {1}) == 1
        _check_leftovers_cleaned(path)

    steps = _crash_every_step(
        tmp_path, build, lambda p: (p, 1, False), _none, after
    )
    torn = _crash_every_step(
        tmp_path, build, lambda p: (p, 1, False), _none, after, torn=True
    )
    assert steps == torn >= 10
    print(f"build: {steps} crash points (and {torn} torn)")


def test_a_rebuild_killed_at_any_write_step_keeps_one_generation(tmp_path):
    def after(path, step):
        found = _generation(path, {1, 2})
        if found is None:
            # Only between the two renames: the old cache is then a
            # `.replaced-*` leftover, which the error names.
            with pytest.raises(FileNotFoundError, match="leftovers"):
                TeacherCache.open(path)
        build(path, 2, overwrite=True)
        assert _generation(path, {2}) == 2
        _check_leftovers_cleaned(path)

    steps = _crash_every_step(
        tmp_path, build, lambda p: (p, 2, True), _existing, after
    )
    torn = _crash_every_step(
        tmp_path, build, lambda p: (p, 2, True), _existing, after, torn=True
    )
    assert steps == torn >= 15
    print(f"rebuild: {steps} crash points (and {torn} torn)")


def _first_shard(path):
    assert TeacherCache.build(
        _teacher(1), _pipeline(), path, num_shards=2, shard_index=0,
        dtype="float32", verbose=0,
    ) is None


def _finish_shards(path):
    try:
        build_shard(path, 1, 1)
    except FileExistsError:
        TeacherCache.finalize(path)


def test_a_shard_build_killed_at_any_write_step_finishes_on_retry(tmp_path):
    def after(path, step):
        found = _generation(path, {1})
        if found is None:
            _finish_shards(path)
        assert _generation(path, {1}) == 1
        _check_leftovers_cleaned(os.path.join(path, "shard-00001-of-00002"))

    steps = _crash_every_step(
        tmp_path, build_shard, lambda p: (p, 1, 1), _first_shard, after
    )
    assert steps >= 15
    print(f"shard build + finalize: {steps} crash points")


def _unfinalized(path):
    _first_shard(path)
    build_shard(path, 1, 1)
    os.remove(os.path.join(path, format_lib.METADATA_FILE))


def test_a_finalize_killed_at_any_write_step_finishes_on_retry(tmp_path):
    def after(path, step):
        if _generation(path, {1}) is None:
            with pytest.raises(InvalidCacheError, match="finalize"):
                TeacherCache.open(path)
            TeacherCache.finalize(path)
        assert _generation(path, {1}) == 1
        assert not [n for n in os.listdir(path) if n.startswith(".tmp-")]

    steps = _crash_every_step(tmp_path, finalize, lambda p: (p,), _unfinalized, after)
    torn = _crash_every_step(
        tmp_path, finalize, lambda p: (p,), _unfinalized, after, torn=True
    )
    assert steps == torn >= 3
    print(f"finalize: {steps} crash points (and {torn} torn)")


# -- races between real processes ----------------------------------------------


def race_builder(path, generation, barrier):
    """Builds (slowly) with overwrite=False; reads its cache once both
    builders are done."""
    barrier.wait()
    try:
        cache = TeacherCache.build(
            _teacher(generation), _pipeline(delay=0.05), path,
            dtype="float32", verbose=0,
        )
    except FileExistsError as error:
        barrier.wait()
        return ("lost", type(error).__name__)
    barrier.wait()  # the other builder has finished (or failed) by now
    return ("won", float(np.unique(cache.read()[2])[0]))


def _run_together(target, argument_lists, timeout=120):
    """Runs `target(*args)` for each `args` in concurrent children."""
    context = crash_points.context()
    pipes, processes = [], []
    for args in argument_lists:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_send, args=(sender, target, args))
        process.start()
        sender.close()
        pipes.append(receiver)
        processes.append(process)
    results = []
    for receiver, process in zip(pipes, processes):
        process.join(timeout)
        assert process.exitcode == 0, process.exitcode
        results.append(receiver.recv())
    return results


def _send(connection, target, args):
    try:
        connection.send(("ok", target(*args)))
    except BaseException as error:  # reported to the test
        connection.send(("error", f"{type(error).__name__}: {error}"))
    connection.close()


def test_two_builders_of_one_path_one_wins_and_each_reads_its_own(tmp_path):
    context = crash_points.context()
    for round_ in range(3):
        path = str(tmp_path / f"race-{round_}")
        barrier = context.Barrier(2)
        results = _run_together(
            race_builder, [(path, 1, barrier), (path, 2, barrier)]
        )
        assert all(status == "ok" for status, _ in results), results
        outcomes = [value for _, value in results]
        winners = [(g, o) for g, o in zip((1, 2), outcomes) if o[0] == "won"]
        assert len(winners) == 1, outcomes
        generation, (_, read) = winners[0]
        assert read == generation  # the winner reads its own logits
        assert ("lost", "FileExistsError") in outcomes
        assert _generation(path, {1, 2}) == generation


def rebuilder(path, generations, seconds):
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        build(path, generations[done % len(generations)], overwrite=True)
        done += 1
    return done


def reader(path, generation_of, seconds, checksums):
    """Opens and reads in a loop; counts reads that do not match the
    generation whose metadata they verified, and raw errors."""
    deadline = time.monotonic() + seconds
    reads = mismatches = refused = 0
    raw = []
    while time.monotonic() < deadline:
        try:
            cache = TeacherCache.open(path, checksums=checksums)
            expected = generation_of[cache.metadata["teacher"]["fingerprint"]]
            for _ in range(2):  # again after a rebuild may have happened
                logits = cache.read()[2]
                reads += 1
                mismatches += int(not np.all(logits == expected))
        except _CLEAR_ERRORS:
            refused += 1
        except Exception as error:  # a raw error is a failure
            raw.append(f"{type(error).__name__}: {error}")
    return reads, mismatches, refused, raw[:5]


def test_readers_never_see_a_mixture_while_a_cache_is_rebuilt(tmp_path):
    path = str(tmp_path / "cache")
    generations = [1, 2, 3]
    build(path, 1, overwrite=False)
    generation_of = {
        fingerprint.teacher_fingerprint(_teacher(g)): g for g in generations
    }
    seconds = 8.0
    results = _run_together(
        _dispatch,
        [
            ("rebuild", (path, generations, seconds)),
            ("read", (path, generation_of, seconds, False)),
            ("read", (path, generation_of, seconds, True)),
        ],
    )
    assert all(status == "ok" for status, _ in results), results
    rebuilds = results[0][1]
    reads = [value for _, value in results[1:]]
    total = sum(r[0] for r in reads)
    print(f"{rebuilds} rebuilds, {total} reads, refused {[r[2] for r in reads]}")
    assert rebuilds >= 3 and total >= 20, (rebuilds, reads)
    assert [r[1] for r in reads] == [0, 0], reads  # no mismatch
    assert [r[3] for r in reads] == [[], []], reads  # no raw error


def _dispatch(role, args):
    return {"rebuild": rebuilder, "read": reader}[role](*args)
