"""Experiment `cache_speed`: what a teacher cache costs and saves, per epoch.

With the reference CNN teacher (>= 1 M parameters) and student (<= 50 k,
`benchmarks.models`), in one process:

- epoch time of cached distillation (`tfkd.Distiller(teacher=None)` fed
  the logits of a `tfkd.TeacherCache`) / epoch time of the student trained
  alone. Goal <= 1.10.
- epoch time of online tfkd / epoch time of `keras.distillation.Distiller`
  with `LogitsDistillation(T, KL)`, the incumbent. Goal <= 1.0.
- `TeacherCache.build` time / `teacher.predict` time over the same data.
  Goal <= 1.15.
- one epoch streamed from the cache (`TeacherCache.dataset`) / the same
  epoch from memory: what reading the cache from disk costs.
- bytes on disk per example.

The four student arms train through `benchmarks.protocol`: one start,
the same batches, interleaved epoch by epoch; the first epoch (tracing)
is untimed, then every epoch is a repeat. Build/predict and stream/memory
are timed in turn too, one warm-up first. Each ratio is reported three
ways: of the medians; paired (median, min and max over repeats of the
ratio of two measurements taken back to back, which cancels slow drifts
in machine load); and paired in CPU seconds of this process.

    python -m benchmarks cache_speed --preset quick   # ~4 min on 2 CPU cores
    python -m benchmarks cache_speed --preset smoke   # seconds; the tests

Output: `benchmarks/runs/cache_speed-<preset>/` with `results.json` and
`results.md`.
"""

import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import stats

ARMS = {
    "student_alone": arms_lib.scratch("student_alone", "Student alone"),
    "tfkd_cached": arms_lib.distilled("tfkd_cached", "tfkd, cached teacher",
                                      soft_targets="cache"),
    "tfkd_online": arms_lib.distilled("tfkd_online", "tfkd, online teacher"),
    "keras_online": arms_lib.keras_distillation(
        "keras_online", "keras.distillation (KLDivergence)",
        loss=keras.losses.KLDivergence()),
}
GOALS = {"cached_over_student_alone": 1.10, "tfkd_online_over_keras_online": 1.0,
         "build_over_predict": 1.15}

PRESETS = {
    # Exercises every measurement in seconds; its numbers mean nothing.
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=256, test_examples=128, batch_size=64,
        teacher_epochs=0, student_epochs=2, teacher_dense_units=16,
        validation_fraction=0.01, timing_repeats=1),
    "quick": presets_lib.Preset(
        name="quick", train_examples=10_000, test_examples=2_000, batch_size=128,
        teacher_epochs=2, student_epochs=6, teacher_dense_units=512,
        timing_repeats=5),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None, batch_size=128,
        teacher_epochs=5, student_epochs=6, teacher_dense_units=512,
        timing_repeats=5),
}


class Stopwatch:
    """Wall and CPU seconds of a `with` block."""

    def __enter__(self):
        self._started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc_info):
        self.seconds = time.perf_counter() - self._started[0]
        self.cpu_seconds = time.process_time() - self._started[1]


def ratio(numerator, denominator):
    """A ratio of medians and paired, from `{"wall": [...], "cpu": [...]}`."""
    paired = [a / b for a, b in zip(numerator["wall"], denominator["wall"])]
    cpu = [a / b for a, b in zip(numerator["cpu"], denominator["cpu"])]
    return {"of_medians": statistics.median(numerator["wall"])
            / statistics.median(denominator["wall"]),
            "median": statistics.median(paired), "min": min(paired),
            "max": max(paired), "cpu_median": statistics.median(cpu),
            "cpu_min": min(cpu), "cpu_max": max(cpu)}


def time_in_turn(tasks, repeats):
    """Runs each task `repeats + 1` times in turn; the first round untimed.

    Args:
        tasks: Dict name -> callable.
        repeats: Timed rounds.

    Returns:
        Dict name -> `{"wall": [...], "cpu": [...]}`.
    """
    times = {name: {"wall": [], "cpu": []} for name in tasks}
    names = list(tasks)
    for repeat in range(repeats + 1):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            with Stopwatch() as watch:
                tasks[name]()
            if repeat:
                times[name]["wall"].append(watch.seconds)
                times[name]["cpu"].append(watch.cpu_seconds)
    return times


def cache_timings(setup):
    """Build vs predict, and streaming the cache vs memory, in turn."""
    import tfkd

    data, batch_size = setup.data, setup.preset.batch_size
    ordered = tf.data.Dataset.from_tensor_slices(
        (data.x_train, data.y_train)).batch(batch_size)
    path = setup.store.directory / "timing-cache"
    built = {}

    def build():
        built["cache"] = tfkd.TeacherCache.build(setup.teacher, ordered, path,
                                                 overwrite=True, verbose=0)

    times = time_in_turn({"predict": lambda: setup.teacher.predict(ordered, verbose=0),
                          "build": build}, setup.preset.timing_repeats)
    cache = built["cache"]
    order = protocol.epoch_order(0, 0, len(data.y_train))
    times.update(time_in_turn({
        "stream": lambda: [None for _ in cache.dataset(
            batch_size, seed=0, reshuffle_each_iteration=False)],
        "memory": lambda: [None for _ in protocol.labelled_batches(setup, order)],
    }, setup.preset.timing_repeats))
    return times, cache


def disk(cache):
    """Bytes on disk, per example and per array, of a `TeacherCache`."""
    return {"bytes": cache.nbytes, "bytes_per_example": cache.nbytes / cache.num_examples,
            "arrays": {name: int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
                       for name, spec in cache.metadata["arrays"].items()}}


def run(preset="quick", dataset=None, output=None, fresh=False, seeds=None,
        verbose=0, log=print):
    """Runs the measurements; writes and returns the results dict.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: Dataset name. Defaults to `None` (the preset's).
        output: Output directory. Defaults to
            `benchmarks/runs/cache_speed-<preset>`.
        fresh: Retrain the teacher. Defaults to `False`.
        seeds: Seeds instead of the preset's (the first is used).
        verbose: Keras verbosity of the teacher. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        A dict with the configuration, the raw times, the ratios, the
        bytes per example and the students' test accuracies.
    """
    from benchmarks import results as results_lib

    setup = protocol.start("cache_speed", PRESETS, preset, seeds=seeds,
                           dataset=dataset, output=output, fresh=fresh, log=log,
                           verbose=verbose)
    preset, seed, output = setup.preset, setup.preset.seeds[0], setup.store.directory
    _, teacher = protocol.train_teacher(setup)
    times, cache = cache_timings(setup)
    runs, failures = protocol.train_arms(
        setup, list(ARMS.values()), seed, epochs=preset.timing_repeats + 1)
    epochs = {run.arm.arm_id: {"wall": run.epoch_seconds[1:],
                               "cpu": run.epoch_cpu_seconds[1:]} for run in runs}
    results = results_lib.skeleton("cache_speed", preset)
    results.update(
        dataset=setup.data.name, failures=failures,
        models={"teacher_parameters": teacher["parameters"],
                "student_parameters": int(setup.build_student().count_params()),
                "teacher_test_accuracy": teacher["accuracy"],
                "student_test_accuracy_after_epochs": {
                    run.arm.arm_id: protocol.evaluate_accuracy(setup, run, seed)["accuracy"]
                    for run in runs},
                "student_epochs": preset.timing_repeats + 1},
        epoch_seconds={k: stats.spread(v["wall"]) for k, v in epochs.items()},
        epoch_cpu_seconds={k: stats.spread(v["cpu"]) for k, v in epochs.items()},
        **{f"{k}_seconds": stats.spread(v["wall"]) for k, v in times.items()},
        ratios={"cached_over_student_alone": ratio(epochs["tfkd_cached"], epochs["student_alone"]),
                "tfkd_online_over_keras_online": ratio(epochs["tfkd_online"], epochs["keras_online"]),
                "build_over_predict": ratio(times["build"], times["predict"]),
                "stream_over_memory": ratio(times["stream"], times["memory"])},
        goals=GOALS, disk=disk(cache))
    results_lib.write(results, markdown(results), output)
    log(f"cache_speed: wrote {output}/results.md")
    return results


def markdown(results):
    """The ratios, goals, sizes and epoch times as Markdown."""
    from benchmarks import results as results_lib

    lines = results_lib.header("teacher cache speed", results) + [
        "| ratio | wall, paired median (min–max) | wall, of medians | "
        "CPU, paired median (min–max) | goal |", "|---|---|---|---|---|"]
    for name, value in results["ratios"].items():
        goal = results["goals"].get(name)
        lines.append(
            f"| {name.replace('_', ' ')} | {value['median']:.3f} "
            f"({value['min']:.3f}–{value['max']:.3f}) | {value['of_medians']:.3f} "
            f"| {value['cpu_median']:.3f} ({value['cpu_min']:.3f}–"
            f"{value['cpu_max']:.3f}) | {'—' if goal is None else f'≤ {goal}'} |")
    arrays = ", ".join(f"{k} {v}" for k, v in results["disk"]["arrays"].items())
    lines += ["", f"Bytes on disk per example: {results['disk']['bytes_per_example']:.1f} "
              f"({arrays} bytes in all; metadata included in the per-example figure).",
              "", "| arm | epoch wall s, median (min–max) | epoch CPU s, median "
              "| test accuracy |", "|---|---|---|---|"]
    accuracies = results["models"]["student_test_accuracy_after_epochs"]
    for name, summary in results["epoch_seconds"].items():
        lines.append(
            f"| {name} | {summary['median']:.3f} ({summary['min']:.3f}–"
            f"{summary['max']:.3f}) | {results['epoch_cpu_seconds'][name]['median']:.3f} "
            f"| {accuracies[name]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None, prog=None):
    """Parses the command line, runs the measurements; returns 0."""
    run(**vars(cli.parser(sys.modules[__name__], "cache_speed", prog).parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
