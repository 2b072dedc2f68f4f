"""Measures what the step guard (`tfkd.step_guard`) costs per training step.

Two Distillers with the same teacher, the same student weights and the same
batches, one with the guard (`on_nonfinite="raise"`, the default) and one
without (`on_nonfinite="ignore"`, the step as it was before the guard),
timed in interleaved repeats (ABBA order, so that drift of a shared machine
hits both arms alike). Two timings per repeat and arm:

- `step`: `--steps` calls of Keras's compiled train function on a
  prefetched in-memory dataset (the in-graph guard alone); the time of the
  whole loop divided by `--steps`.
- `fit`: one `fit(..., steps_per_epoch=--steps)` epoch, everything
  included (pre-flight checks, and the guard's callback, which reads the
  guard's state after every batch).

It reports the median over repeats of the ratio guarded / unguarded and
its min-max. Models: the benchmark's student CNN (26.7 k parameters) and a
teacher CNN (width 16, 512-unit head, 1.6 M parameters) on 28x28x1 inputs,
10 classes, batch 128, Adam, `jit_compile` as Keras chooses ("auto",
plain `tf.function` on CPU) or `--jit-compile true` (XLA).
Run:

    PYTHONPATH=. python scripts/nonfinite_guard_cost.py --repeats 7

About 3 minutes on 2 shared CPU cores; `--repeats 2 --steps 5` for a smoke
run. Measured on 2 shared CPU cores (Keras 3.15, TensorFlow 2.21), median
(min-max) of the per-repeat ratio guarded / unguarded of the step time:
1.002 (0.966-1.110) with tf.function (9 repeats of 25 steps, 32.3 vs 32.0
ms/step) and 1.009 (0.977-1.178) with XLA (7 repeats of 25 steps, 35.0 vs
34.7 ms/step); the whole-`fit` ratios, 0.997 (0.68-1.58) and 0.999
(0.67-1.33), are dominated by the machine's noise.
"""

import argparse
import json
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfkd
from benchmarks import models


def build_arms(batch_size, jit_compile="auto", seed=0):
    """`{"guard": distiller, "no_guard": distiller}` with equal weights."""
    keras.utils.set_random_seed(seed)
    teacher = models.teacher_cnn((28, 28, 1), 10, width=16, dense_units=512)
    student = models.student_cnn((28, 28, 1), 10)
    arms = {}
    for name, mode in (("guard", "raise"), ("no_guard", "ignore")):
        arm_student = keras.models.clone_model(student)
        arm_student.set_weights(student.get_weights())
        distiller = tfkd.Distiller(
            teacher=teacher, student=arm_student, on_nonfinite=mode
        )
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile
        )
        arms[name] = distiller
    return arms, student.count_params(), teacher.count_params()


def make_dataset(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((8 * batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=8 * batch_size)
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .batch(batch_size, drop_remainder=True)
        .cache()
        .repeat()
        .prefetch(2)
    )


def time_steps(distiller, iterator, steps):
    """Seconds per step of Keras's compiled train function."""
    distiller.make_train_function()
    start = time.perf_counter()
    for _ in range(steps):
        logs = distiller.train_function(iterator)
    float(logs["loss"])  # waits for the last step
    return (time.perf_counter() - start) / steps


def time_fit(distiller, dataset, steps):
    start = time.perf_counter()
    distiller.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps


def run(repeats=7, steps=20, batch_size=128, jit_compile="auto"):
    """Times both arms; returns a dict of per-repeat times and ratios."""
    arms, student_params, teacher_params = build_arms(batch_size, jit_compile)
    dataset = make_dataset(batch_size)
    iterators = {name: iter(dataset) for name in arms}
    for name, distiller in arms.items():  # trace and compile, untimed
        time_fit(distiller, dataset, 2)
        time_steps(distiller, iterators[name], 2)
    times = {kind: {name: [] for name in arms} for kind in ("step", "fit")}
    for repeat in range(repeats):
        order = ["guard", "no_guard"] if repeat % 2 == 0 else ["no_guard", "guard"]
        for name in order:
            times["step"][name].append(
                time_steps(arms[name], iterators[name], steps)
            )
        for name in reversed(order):
            times["fit"][name].append(time_fit(arms[name], dataset, steps))
    summary = {}
    for kind, arm_times in times.items():
        ratios = [g / n for g, n in zip(arm_times["guard"], arm_times["no_guard"])]
        summary[kind] = {
            "median_ratio": statistics.median(ratios),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "median_ms_guard": 1e3 * statistics.median(arm_times["guard"]),
            "median_ms_no_guard": 1e3 * statistics.median(arm_times["no_guard"]),
            "ratios": ratios,
        }
    return {
        "repeats": repeats,
        "steps_per_repeat": steps,
        "batch_size": batch_size,
        "jit_compile": arms["guard"].jit_compile,
        "student_params": student_params,
        "teacher_params": teacher_params,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "results": summary,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--jit-compile", choices=("auto", "true", "false"), default="auto",
        help="compile the step with XLA ('auto': as Keras chooses)",
    )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    result = run(args.repeats, args.steps, args.batch_size, jit_compile)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")
    for kind, values in result["results"].items():
        print(
            f"{kind}: guard/no-guard median {values['median_ratio']:.3f} "
            f"(min {values['min_ratio']:.3f}, max {values['max_ratio']:.3f}; "
            f"{values['median_ms_guard']:.1f} vs "
            f"{values['median_ms_no_guard']:.1f} ms/step)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
