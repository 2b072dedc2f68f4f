"""Experiment `deploy`: the few-labels students as LiteRT files, float to int8.

What a user ships is a `.tflite` file, not the Keras model. This trains
the two students of `compare`'s few-labels block with its arms and
presets (`compare.few_labels_setup`, `compare.few_label_arms`): `scratch_few`
(600 labels) and `tfkd_transfer`, the tfkd recipe (the same 600 labels plus
the teacher's soft targets on 5,400 unlabelled images). Each seed's
student is exported with `tfkd.export.to_tflite` as float32, float16,
dynamic-range and full-integer int8 (calibrated on 200 of its training
images) and every file is run by the LiteRT interpreter: accuracy on the
whole test split, file size, and batch-1 latency (one interpreter thread,
every file timed in turn, repeated: `measure.interleaved_calls`).

Question: how much accuracy does each format cost, per student, and
does int8 need quantization-aware training (it would if it lost more than
a point against float32; the report says which)?

    python -m benchmarks deploy --preset quick   # ~12 min on 2 CPU cores
    python -m benchmarks deploy --preset smoke   # seconds; what tests run

Presets: those of `compare` (quick: teacher 4 epochs on 6,000 images,
few-labels block of 600 labels, 10 epochs, 3 seeds; 10,000 test images)
plus the export options below. Output:
`benchmarks/runs/deploy-<preset>/` with `results.json`, `results.md`
and `deploy_pareto.png`; the `.tflite` files stay in its `models/`
(ignored by git). A rerun resumes after the last finished seed.
"""

import sys
import time

import numpy as np

import tfkd
from benchmarks import cli
from benchmarks import measure
from benchmarks import protocol
from benchmarks import results as results_lib
from benchmarks import stats
from benchmarks.experiments import compare

#: File format -> `tfkd.export.to_tflite` quantization.
FORMATS = {"float32": None, "float16": "float16", "dynamic": "dynamic",
           "int8": "int8"}
#: An int8 file losing more than this (accuracy points, vs float32) calls
#: for quantization-aware training.
QAT_THRESHOLD_POINTS = 1.0
PLOT_NAME = "deploy_pareto.png"

#: What `deploy` adds to each of `compare`'s presets. One interpreter
#: thread: steadier on a shared machine, and what a phone app often gets.
EXPORT_OPTIONS = {
    "smoke": dict(formats=tuple(FORMATS), calibration_examples=32,
                  tflite_latency_calls=10, latency_threads=1),
    "quick": dict(formats=tuple(FORMATS), calibration_examples=200,
                  tflite_latency_calls=100, latency_threads=1),
    "full": dict(formats=tuple(FORMATS), calibration_examples=500,
                 tflite_latency_calls=100, latency_threads=1),
}
PRESETS = {name: preset.replace(**EXPORT_OPTIONS[name])
           for name, preset in compare.PRESETS.items()}


def tflite_path(setup, arm_id, seed, file_format):
    """Where one student's file of one format lives (the run's `models/`)."""
    return setup.store.models / f"{arm_id}__seed{seed}__{file_format}.tflite"


def calibration_images(view):
    """The int8 calibration images: the first labelled training images.

    The same for both students (class-balanced, the view's `x_train`), so
    calibration is no difference between them.
    """
    return view.data.x_train[: view.preset.option("calibration_examples")]


def export_and_evaluate(view, run, seed):
    """`evaluate` of `protocol.run_seeds`: Keras accuracy, then every file's.

    Returns:
        `{"accuracy", "formats": {format: {"accuracy", "size_bytes",
        "convert_seconds"} or {"error"}}}`.
    """
    record = protocol.evaluate_accuracy(view, run, seed)
    data, formats = view.data, {}
    for file_format in view.preset.option("formats"):
        quantization = FORMATS[file_format]
        path = tflite_path(view, run.arm.arm_id, seed, file_format)
        start = time.perf_counter()
        try:
            tfkd.export.to_tflite(
                run.student, path, quantization=quantization,
                representative_data=(calibration_images(view)
                                     if quantization == "int8" else None))
        except RuntimeError as error:  # recorded; the other formats go on
            formats[file_format] = {"error": str(error)}
            continue
        seconds = time.perf_counter() - start
        report = tfkd.export.evaluate_tflite(path, (data.x_test, data.y_test),
                                             latency_repeats=0)
        formats[file_format] = {"accuracy": report["accuracy"],
                                "size_bytes": report["size_bytes"],
                                "runtime": report["runtime"],
                                "convert_seconds": seconds}
    view.log(f"  {run.arm.arm_id} seed {seed}: Keras {record['accuracy']:.4f}, "
             + ", ".join(f"{f} {r['accuracy']:.4f}" for f, r in formats.items()
                         if "accuracy" in r))
    return {**record, "formats": formats}


def latencies(view, arm_ids, seeds):
    """Batch-1 latency of every file, all timed in turn (`interleaved_calls`).

    Returns:
        Dict `(arm_id, format)` -> every time (ms), pooled over seeds: the
        files of one format differ between seeds only in their weights.
    """
    preset = view.preset
    example = view.data.x_test[:1]
    calls = preset.option("tflite_latency_calls")
    timers, keys = {}, {}
    for arm_id in arm_ids:
        for seed in seeds:
            for file_format in preset.option("formats"):
                path = tflite_path(view, arm_id, seed, file_format)
                if not path.exists():
                    continue
                model = tfkd.export.TFLiteModel(
                    path, num_threads=preset.option("latency_threads"))
                model.time_calls(example, 0, warmup=20)
                name = path.stem
                timers[name] = (lambda m=model: m.time_calls(example, calls))
                keys[name] = (arm_id, file_format)
    view.log(f"latency: {len(timers)} files, {preset.timing_repeats} interleaved "
             f"repeats of {calls} calls")
    pooled = {}
    for name, times in measure.interleaved_calls(timers, preset.timing_repeats).items():
        pooled.setdefault(keys[name], []).extend(times)
    return pooled


def summarize_student(arm_id, records, formats, times):
    """One student's row of results.json: Keras accuracy and every format."""
    keras_accuracy = [r["accuracy"] for r in records]
    summary = {"keras_accuracy": stats.mean_std(keras_accuracy), "formats": {}}
    reference = None
    if all("accuracy" in r["formats"].get("float32", {}) for r in records):
        reference = [r["formats"]["float32"]["accuracy"] for r in records]
    for file_format in formats:
        entries = [r["formats"].get(file_format, {"error": "not run"})
                   for r in records]
        failed = [e["error"] for e in entries if "error" in e]
        if failed:
            summary["formats"][file_format] = {"status": "failed", "error": failed[0]}
            continue
        accuracy = [e["accuracy"] for e in entries]
        size = max(e["size_bytes"] for e in entries)
        pooled = times.get((arm_id, file_format))
        summary["formats"][file_format] = {
            "status": "done", "accuracy": stats.mean_std(accuracy),
            "vs_keras": stats.paired_difference(accuracy, keras_accuracy),
            "vs_float32": (None if reference is None
                           else stats.paired_difference(accuracy, reference)),
            "size_bytes": int(size),
            "latency_ms": None if not pooled else {
                "p50": float(np.percentile(pooled, 50)),
                "p95": float(np.percentile(pooled, 95)), "calls": len(pooled)},
            "runtime": entries[0]["runtime"],
            "convert_seconds": float(np.mean([e["convert_seconds"] for e in entries])),
        }
    float32 = summary["formats"].get("float32", {}).get("size_bytes")
    for entry in summary["formats"].values():
        if float32 and entry.get("size_bytes"):
            entry["size_vs_float32"] = entry["size_bytes"] / float32
    return summary


def qat_verdict(students):
    """Whether int8 lost more than `QAT_THRESHOLD_POINTS` for some student."""
    losses = {}
    for arm_id, student in students.items():
        versus = student["formats"].get("int8", {}).get("vs_float32")
        if versus is not None:
            losses[arm_id] = -100.0 * versus["mean"]
    worst = max(losses.values()) if losses else None
    return {"threshold_points": QAT_THRESHOLD_POINTS,
            "int8_loss_points": losses, "worst_loss_points": worst,
            "needed": worst is not None and worst > QAT_THRESHOLD_POINTS}


def run(preset="quick", dataset=None, output=None, fresh=False, seeds=None,
        verbose=0, log=print):
    """Trains the two students, exports every format, measures the files.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `None` (the preset's).
        output: Output directory. Defaults to
            `benchmarks/runs/deploy-<preset>`.
        fresh: Ignore finished pieces of an earlier run. Defaults to
            `False` (resume).
        seeds: Seeds instead of the preset's. Defaults to `None`.
        verbose: Keras verbosity of the teacher's training. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).
    """
    started = time.perf_counter()
    setup = protocol.start("deploy", PRESETS, preset, seeds=seeds, dataset=dataset,
                           output=output, fresh=fresh, log=log, verbose=verbose)
    _, teacher = protocol.train_teacher(setup)  # (model, record)
    view = compare.few_labels_setup(setup)
    arms = compare.few_label_arms(view.preset)
    per_seed = protocol.run_seeds(view, [arms[a] for a in compare.FEW_LABEL_ARMS],
                                  evaluate=export_and_evaluate)
    failed = {a: r for a, r in per_seed.items()
              if not all(protocol.is_done(x) for x in r)}
    done = [a for a in compare.FEW_LABEL_ARMS if a not in failed]
    times = latencies(view, done, view.preset.seeds)
    formats = list(view.preset.option("formats"))
    students = {}
    for arm_id in compare.FEW_LABEL_ARMS:
        entry = {"label": compare.LABELS[arm_id],
                 "trained_on": f"{len(view.data.y_train):,} labelled" + (
                     f" + {len(view.data.x_pool):,} unlabelled"
                     if arm_id == "tfkd_transfer" else "")}
        if arm_id in failed:
            errors = [r.get("error") for r in failed[arm_id] if r] or ["not run"]
            students[arm_id] = {**entry, "status": "failed", "error": errors[0]}
            continue
        students[arm_id] = {**entry, "status": "done", **summarize_student(
            arm_id, per_seed[arm_id], formats, times)}
    keras_records = {a: {"status": "done", "accuracy_per_seed":
                         students[a]["keras_accuracy"]["per_seed"]} for a in done}
    results = results_lib.skeleton("deploy", view.preset)
    results.update(
        dataset=setup.data.name,
        num_examples=setup.data.num_examples,
        test_examples_evaluated=int(len(setup.data.y_test)),
        teacher={k: teacher[k] for k in ("accuracy", "parameters", "fingerprint")},
        few_labels=compare.few_labels_summary(view, keras_records),
        formats=formats,
        latency={"batch": 1, "num_threads": view.preset.option("latency_threads"),
                 "repeats": view.preset.timing_repeats,
                 "calls_per_repeat": view.preset.option("tflite_latency_calls"),
                 "pooled_over_seeds": True},
        calibration_examples=int(len(calibration_images(view))),
        students=students, qat=qat_verdict(
            {a: s for a, s in students.items() if s["status"] == "done"}),
        wall_seconds=time.perf_counter() - started)
    plot_path = plot_pareto(results, setup.store.directory / PLOT_NAME)
    results_lib.write(results, markdown(results, [plot_path]), setup.store.directory)
    log(f"deploy: wrote {setup.store.directory / 'results.md'}")
    return results


def _kb(size):
    return f"{size / 1024:.1f}"


def markdown(results, plot_files=(PLOT_NAME,)):
    """The Markdown report of a `deploy` results dict."""
    lines = results_lib.header("the distilled student deployed (LiteRT)", results)
    latency, few = results["latency"], results["few_labels"]
    seeds = len(results["config"]["seeds"])
    lines += [
        f"Students of `compare`'s few-labels block, {results_lib.plural(seeds, 'seed')}: "
        f"{few['labelled']:,} labels (+ {few['unlabelled']:,} unlabelled images "
        f"for the tfkd recipe, teacher at {100 * results['teacher']['accuracy']:.2f} %), "
        f"{few['epochs']} epochs. Each student exported by `tfkd.export.to_tflite` "
        f"(int8 calibrated on {results['calibration_examples']} training images) "
        f"and run by the LiteRT interpreter on {results['test_examples_evaluated']:,} "
        "test images. Accuracy: mean ± sample std over seeds; Δ: paired "
        "difference with the same seed's float32 file, 95 % t-interval. Latency: "
        f"batch 1, {latency['num_threads']} interpreter thread, every file timed "
        f"in turn, {latency['repeats']} × {latency['calls_per_repeat']} calls per "
        "file, pooled over seeds.", "",
        "| Student | Format | Accuracy | Δ vs float32 | Size (KB) | × float32 "
        "| p50 (ms) | p95 (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for student in results["students"].values():
        if student["status"] != "done":
            lines.append(f"| {student['label']} | — | failed: {student['error']} "
                         "| | | | | |")
            continue
        lines.append(f"| {student['label']} | Keras (TF) | "
                     f"{stats.format_accuracy(student['keras_accuracy'])} | | | | | |")
        for file_format, entry in student["formats"].items():
            if entry["status"] != "done":
                lines.append(f"| | {file_format} | failed: {entry['error'][:120]} "
                             "| | | | | |")
                continue
            timing = entry["latency_ms"] or {}
            lines.append(
                f"| | {file_format} | {stats.format_accuracy(entry['accuracy'])} | "
                + (stats.format_interval(entry["vs_float32"])
                   if file_format != "float32" else "—")
                + f" | {_kb(entry['size_bytes'])} | {entry['size_vs_float32']:.2f} | "
                + " | ".join(f"{timing[p]:.3f}" if p in timing else "—"
                             for p in ("p50", "p95")) + " |")
    qat = results["qat"]
    lines += [""]
    if qat["worst_loss_points"] is None:
        lines.append("Quantization-aware training: no int8 result to judge.")
    elif qat["needed"]:
        lines.append(
            f"**int8 loses {qat['worst_loss_points']:.2f} points** against float32 "
            f"for a student, more than {qat['threshold_points']:.0f}: "
            "quantization-aware training is worth trying (not implemented).")
    else:
        lines.append(
            f"int8's largest mean loss against float32 is "
            f"{max(qat['worst_loss_points'], 0.0):.2f} points (threshold "
            f"{qat['threshold_points']:.0f}): post-training quantization "
            "suffices, no quantization-aware training needed.")
    gain = few.get("gain")
    if gain is not None:
        lines += ["", "The recipe's gain over scratch (Keras models): "
                  f"{stats.format_interval(gain)}."]
    lines += ["", *results_lib.image_links(
        plot_files, {PLOT_NAME: "Accuracy vs batch-1 latency and vs file size"})]
    return "\n".join(lines) + "\n"


MARKERS = {"float32": "o", "float16": "s", "dynamic": "^", "int8": "D"}


def plot_pareto(results, path):
    """Accuracy vs p50 latency and vs file size, every student and format.

    One point per (student, format), ± std over seeds; the dashed step
    line is the Pareto front over all points (`plots.pareto_front`).
    """
    from tfkd.utils import figures
    from benchmarks import plots

    colors = {"scratch_few": results_lib.SCRATCH_COLOR,
              "tfkd_transfer": results_lib.DISTILLED_COLOR}
    points = []
    for arm_id, student in results["students"].items():
        if student["status"] != "done":
            continue
        for file_format, entry in student["formats"].items():
            if entry["status"] != "done":
                continue
            points.append((arm_id, student["label"], file_format,
                           (entry["latency_ms"] or {}).get("p50"),
                           entry["size_bytes"] / 1024,
                           100 * entry["accuracy"]["mean"],
                           100 * entry["accuracy"]["std"]))
    figure = figures.new_figure((11, 5.0), purpose="the deploy plot")
    panels = figure.subplots(1, 2, sharey=True)
    for axes, (index, label, log_x) in zip(panels, (
            (3, "Batch-1 latency, p50 (ms), 1 thread", False),
            (4, "File size (KB, log scale)", True))):
        shown = [p for p in points if p[index] is not None]
        for point in shown:
            axes.errorbar(point[index], point[5], yerr=point[6],
                          fmt=MARKERS.get(point[2], "o"), color=colors.get(point[0]),
                          markersize=7, capsize=3, zorder=3)
        if shown:
            front = plots.pareto_front([p[index] for p in shown], [p[5] for p in shown])
            xs = [shown[i][index] for i in front] + [max(p[index] for p in shown)]
            ys = [shown[i][5] for i in front] + [shown[front[-1]][5]]
            axes.step(xs, ys, where="post", color="#555555", linestyle="--",
                      linewidth=1, zorder=2)
        if log_x:
            axes.set_xscale("log")
        axes.set_xlabel(label)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("Test accuracy (%), LiteRT interpreter")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[a], marker="o", linestyle="",
                      label=results["students"][a]["label"])
               for a in colors if a in results["students"]]
    handles += [Line2D([], [], color="#444444", marker=m, linestyle="", label=f)
                for f, m in MARKERS.items() if f in results["formats"]]
    handles.append(Line2D([], [], color="#555555", linestyle="--",
                          label="Pareto front"))
    figure.legend(handles=handles, fontsize=8, loc="outside lower center",
                  ncols=len(handles))
    figure.suptitle(f"Deployed students (LiteRT): {results['dataset']}, preset "
                    f"{results['preset']}")
    return figures.save_figure(figure, path)


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    parser = cli.parser(sys.modules[__name__], "deploy", prog)
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
