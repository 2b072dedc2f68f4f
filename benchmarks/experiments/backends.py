"""Experiment `backends`: one KD setting on every installed Keras backend.

The reference CNN teacher and student (`benchmarks.models`), the student
trained alone ("scratch") and with online logit KD (`tfkd.Distiller`, T and
α of the preset), on TensorFlow, JAX and PyTorch: each backend whose
module imports in this interpreter. Keras fixes its backend at import, so
each (backend, seed) trains in a worker process of its own
(`benchmarks.backend_worker`, `KERAS_BACKEND` set). One worker trains the
teacher and draws each seed's initial student weights (`.weights.h5`, the
same bytes everywhere); every backend starts from those and reads the
same batches (each epoch's order, `benchmarks.orders.epoch_order`, written
for the workers). Within a worker, scratch and KD alternate epoch by epoch;
across backends, the workers of a seed run one after the other in an
order that rotates with the seed.

Reported per backend: the epoch time of scratch and of KD (median over
seeds and epochs, each seed's first, compiling, epoch excluded; min and
max), KD ÷ scratch (paired per epoch), each backend ÷ TensorFlow (paired
per seed and epoch), and test accuracy (mean, sample std, paired
difference to TensorFlow with its 95 % t-interval). A backend that is not
installed, or whose worker failed, is listed with the reason.

    python -m benchmarks backends --preset quick   # ~3 min per backend, 2 CPU cores
    python -m benchmarks backends --preset smoke   # seconds per backend; the tests

Run it in an environment with every backend (`make env-backends`:
TensorFlow, JAX and PyTorch). Output: `benchmarks/runs/backends-<preset>/`
with `results.json`, `results.md` and `backends.png`.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from benchmarks import cli
from benchmarks import orders
from benchmarks import presets as presets_lib
from benchmarks import stats

#: Every Keras backend, in the order the first seed runs them; the first
#: one installed trains the teacher. TensorFlow is the reference.
BACKENDS = ("tensorflow", "jax", "torch")
REFERENCE = "tensorflow"
ARMS = ("scratch", "kd")
DATASET_OPTION = False  # Fashion-MNIST, read offline by every worker

PRESETS = {
    # Every step in seconds per backend; its numbers mean nothing.
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=256, test_examples=128, batch_size=64,
        teacher_epochs=1, student_epochs=2, teacher_dense_units=16,
        teacher_examples=256),
    "quick": presets_lib.Preset(
        name="quick", train_examples=6_000, test_examples=2_000, batch_size=128,
        teacher_epochs=2, student_epochs=6, teacher_dense_units=512,
        teacher_examples=10_000, seeds=(0, 1, 2)),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None, batch_size=128,
        teacher_epochs=5, student_epochs=11, teacher_dense_units=512,
        seeds=(0, 1, 2)),
}


def installed_backends():
    """`(installed, skipped)`: backend names, and name -> why it is not."""
    installed, skipped = [], {}
    for name in BACKENDS:
        if importlib.util.find_spec(name) is None:
            skipped[name] = f"not installed (no module {name!r} in {sys.executable})"
        else:
            installed.append(name)
    return installed, skipped


def write_data(preset, path):
    """Fashion-MNIST's arrays for the workers, uint8, in one `.npz`.

    The teacher's examples are the first `teacher_examples` of a
    class-balanced draw (seed 0), the students' the first `train_examples`
    of those; the test examples are the test split's first.
    """
    import tfkd

    (x, y), (x_test, y_test) = tfkd.data.load_fashion_mnist_arrays(download=False)
    teacher = tfkd.data.balanced_subset(y, preset.teacher_examples or len(y), seed=0)
    teacher = np.random.default_rng(0).permutation(teacher)
    students = teacher[:preset.train_examples] if preset.train_examples else teacher
    np.savez(path, x_teacher=x[teacher], y_teacher=y[teacher], x_train=x[students],
             y_train=y[students], x_test=x_test[:preset.test_examples],
             y_test=y_test[:preset.test_examples])
    return len(students)


def run_worker(backend, spec, directory, log=print):
    """Runs one `benchmarks.backend_worker` job; returns its record."""
    directory = pathlib.Path(directory)
    name = f"{spec['job']}-{backend}" + (f"-seed{spec['seed']}" if "seed" in spec else "")
    spec = dict(spec, out=str(directory / f"{name}.json"))
    spec_path = directory / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(
                   [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, "-m", "benchmarks.backend_worker",
                           str(spec_path)], env=env, cwd=root,
                          capture_output=True, text=True)
    try:
        return json.loads(pathlib.Path(spec["out"]).read_text())
    except (OSError, json.JSONDecodeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"status": "failed", "error": f"worker exited {done.returncode}: {tail}"}


def _spec(preset, job, **fields):
    return dict(job=job, batch_size=preset.batch_size, num_classes=10,
                teacher_width=preset.teacher_width,
                teacher_dense_units=preset.teacher_dense_units,
                student_width=preset.student_width, temperature=preset.temperature,
                alpha=preset.alpha, learning_rate=preset.learning_rate,
                teacher_epochs=preset.teacher_epochs, **fields)


def run(preset="quick", output=None, fresh=False, seeds=None, verbose=0, log=print):
    """Trains every installed backend; writes and returns the results dict.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        output: Output directory. Defaults to
            `benchmarks/runs/backends-<preset>`.
        fresh: Start over instead of resuming finished workers. Defaults
            to `False`.
        seeds: Seeds instead of the preset's.
        verbose: Unused (the workers train silently). Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (see the module docstring).
    """
    from benchmarks import results as results_lib
    from benchmarks import store as store_lib

    preset = presets_lib.get_preset(PRESETS, preset)
    if seeds is not None:
        preset = preset.replace(seeds=presets_lib.check_seeds(seeds))
    output = pathlib.Path(output or results_lib.default_output("backends", preset.name))
    store = store_lib.ResultStore(output, fresh=fresh)
    results_lib.git_provenance()  # the code this run starts from
    installed, skipped = installed_backends()
    log(f"backends: {', '.join(installed) or 'none'} installed"
        + "".join(f"; {name} skipped: {why}" for name, why in skipped.items()))
    if not installed:
        raise RuntimeError("No Keras backend is installed here.")
    work = store.models
    data = work / "data.npz"
    examples = write_data(preset, data)
    students = {str(s): str(work / f"student-seed{s}.weights.h5") for s in preset.seeds}
    teacher = store.load("teacher")
    if not (teacher and teacher.get("status") == "done"
            and (work / "teacher.weights.h5").exists()
            and all(pathlib.Path(p).exists() for p in students.values())):
        log(f"teacher and initial students on {installed[0]}")
        teacher = run_worker(installed[0], _spec(
            preset, "prepare", data=str(data), teacher=str(work / "teacher.weights.h5"),
            students=students), store.partial, log)
        if teacher["status"] != "done":
            raise RuntimeError(f"The teacher could not be trained: {teacher['error']}")
        store.save("teacher", teacher)
    for index, seed in enumerate(preset.seeds):
        order_path = work / f"orders-seed{seed}.npy"
        np.save(order_path, np.stack([orders.epoch_order(seed, epoch, examples)
                                      for epoch in range(preset.student_epochs)]))
        shift = index % len(installed)
        for backend in installed[shift:] + installed[:shift]:
            key = f"{backend}__seed{seed}"
            record = store.load(key)
            if record and record.get("status") == "done":
                continue
            log(f"seed {seed}: {backend}")
            record = run_worker(backend, _spec(
                preset, "train", data=str(data), orders=str(order_path), seed=seed,
                teacher=str(work / "teacher.weights.h5"), student_init=students[str(seed)]),
                store.partial, log)
            store.save(key, record)
            if record["status"] != "done":
                log(f"  {backend}: FAILED {record['error']}")
    records = {b: [store.load(f"{b}__seed{s}") for s in preset.seeds] for b in installed}
    results = results_lib.skeleton("backends", preset)
    results.update(dataset="fashion_mnist", examples={"train": examples,
                                                     "test": preset.test_examples},
                   teacher={k: teacher[k] for k in teacher if k != "status"},
                   **summarize(records, skipped))
    plot_files = plot(results, output)
    results["plots"] = [path.name for path in plot_files]
    results_lib.write(results, markdown(results), output)
    log(f"backends: wrote {output}/results.md")
    return results


def _first_epochs_dropped(record, arm):
    return record["epoch_seconds_raw"][arm][1:]


def summarize(records, skipped):
    """Per backend: epoch times, ratios and accuracy; the backends skipped.

    Args:
        records: Backend -> its per-seed worker records.
        skipped: Backend -> why it was not installed.

    Returns:
        `{"backends_ran", "backends_skipped", "per_backend"}`.
    """
    skipped = dict(skipped)
    ran = {}
    for backend, seeds in records.items():
        failed = [r for r in seeds if not (r and r.get("status") == "done")]
        if failed:
            skipped[backend] = (failed[0] or {}).get("error", "no record")
        else:
            ran[backend] = seeds
    per_backend = {}
    reference = ran.get(REFERENCE)
    for backend, seeds in ran.items():
        times = {arm: [t for r in seeds for t in _first_epochs_dropped(r, arm)]
                 for arm in ARMS}
        summary = {
            "versions": seeds[0]["versions"],
            "epoch_seconds": {arm: stats.spread(times[arm]) for arm in ARMS},
            "kd_over_scratch": stats.spread(
                [k / s for k, s in zip(times["kd"], times["scratch"])]),
            "accuracy": {arm: stats.mean_std([r["accuracy"][arm] for r in seeds])
                         for arm in ARMS},
            "loss": {arm: [r["loss"][arm] for r in seeds] for arm in ARMS},
        }
        if reference is not None:
            ref_times = {arm: [t for r in reference for t in _first_epochs_dropped(r, arm)]
                         for arm in ARMS}
            summary["over_tensorflow"] = {
                arm: stats.spread([a / b for a, b in zip(times[arm], ref_times[arm])])
                for arm in ARMS}
            summary["accuracy_vs_tensorflow"] = {
                arm: stats.paired_difference([r["accuracy"][arm] for r in seeds],
                                             [r["accuracy"][arm] for r in reference])
                for arm in ARMS}
        per_backend[backend] = summary
    return {"backends_ran": list(ran), "backends_skipped": skipped,
            "per_backend": per_backend}


def _seconds(spread):
    return f"{spread['median']:.3f} ({spread['min']:.3f}–{spread['max']:.3f})"


def markdown(results):
    """The per-backend table, the ratios and what was skipped, as Markdown."""
    from benchmarks import results as results_lib

    config = results["config"]
    lines = results_lib.header("every Keras backend", results) + [
        f"Reference CNN student, alone (scratch) and with online logit KD "
        f"(T = {config['temperature']}, α = {config['alpha']}), "
        f"{results['examples']['train']} Fashion-MNIST images, batch "
        f"{config['batch_size']}, {config['student_epochs']} epochs, "
        f"{len(config['seeds'])} seed(s); teacher test accuracy "
        f"{100 * results['teacher']['teacher_accuracy']:.2f} %. Epoch seconds: "
        "median (min–max) over seeds and epochs, each seed's first epoch "
        "excluded.", "",
        "| backend | scratch epoch s | KD epoch s | KD ÷ scratch | scratch ÷ TF "
        "| KD ÷ TF | scratch accuracy | KD accuracy | KD vs TF (pp, 95 % CI) |",
        "|---|---|---|---|---|---|---|---|---|"]
    for backend, s in results["per_backend"].items():
        versus = s.get("over_tensorflow") or {}
        ratio = {arm: f"{versus[arm]['median']:.2f}" if arm in versus else "—"
                 for arm in ARMS}
        difference = (s.get("accuracy_vs_tensorflow") or {}).get("kd")
        lines.append(
            f"| {backend} {s['versions'].get(backend, '')} "
            f"| {_seconds(s['epoch_seconds']['scratch'])} "
            f"| {_seconds(s['epoch_seconds']['kd'])} "
            f"| {s['kd_over_scratch']['median']:.2f} | {ratio['scratch']} | {ratio['kd']} "
            f"| {stats.format_accuracy(s['accuracy']['scratch'])} "
            f"| {stats.format_accuracy(s['accuracy']['kd'])} "
            f"| {stats.format_interval(difference) if backend != REFERENCE else '—'} |")
    lines += ["", "Ran: " + (", ".join(results["backends_ran"]) or "none") + "."]
    for backend, why in results["backends_skipped"].items():
        lines.append(f"Skipped {backend}: {why}.")
    lines += [""] + results_lib.image_links(
        results.get("plots", []), {"backends.png": "Epoch time and accuracy per backend"})
    return "\n".join(lines) + "\n"


def plot(results, output):
    """`backends.png`: epoch times and accuracies per backend; the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks import results as results_lib

    per_backend = results["per_backend"]
    if not per_backend:
        return []
    names = list(per_backend)
    positions = np.arange(len(names))
    colors = {"scratch": results_lib.SCRATCH_COLOR, "kd": results_lib.DISTILLED_COLOR}
    figure, (times, accuracies) = plt.subplots(1, 2, figsize=(9, 3.5))
    for offset, arm in ((-0.2, "scratch"), (0.2, "kd")):
        spreads = [per_backend[n]["epoch_seconds"][arm] for n in names]
        medians = [s["median"] for s in spreads]
        times.bar(positions + offset, medians, 0.4, color=colors[arm], label=arm,
                  yerr=[[m - s["min"] for m, s in zip(medians, spreads)],
                        [s["max"] - m for m, s in zip(medians, spreads)]])
        summaries = [per_backend[n]["accuracy"][arm] for n in names]
        accuracies.bar(positions + offset, [100 * s["mean"] for s in summaries], 0.4,
                       color=colors[arm], label=arm,
                       yerr=[100 * s["std"] for s in summaries])
    times.set(title="Epoch time (median, min–max)", ylabel="seconds")
    accuracies.set(title="Test accuracy (mean ± std)", ylabel="%")
    low = min(100 * per_backend[n]["accuracy"][a]["mean"] for n in names for a in ARMS)
    accuracies.set_ylim(max(0, low - 10), 100)
    for axis in (times, accuracies):
        axis.set_xticks(positions, names)
        axis.legend()
    figure.tight_layout()
    path = pathlib.Path(output) / "backends.png"
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)
    return [path]


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    run(**vars(cli.parser(sys.modules[__name__], "backends", prog).parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
