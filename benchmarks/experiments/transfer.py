"""Experiment `transfer`: do T and α tuned on one task carry over to another?

`tfkd.tuning.search` tunes the temperature T and α on a source task A,
then again on a target task B; on B's test set three distilled students
are compared, each from the same initial weights: (i) tfkd's defaults
(T=4, α=0.1), (ii) the values tuned on A, transferred, and (iii) the values
tuned on B itself, with the student trained from scratch as reference.
If (ii) is as good as (iii), tuning once is enough.

Offline, A and B are both Fashion-MNIST and differ by what changes most
between real tasks of one user: the student size and the data budget
(`quick`: A = width-4 student, 6.8 k parameters, 1,000 examples;
B = width-8 student, 26.7 k parameters, 4,000 examples). With internet,
`--source mnist --target cifar10` runs the same code on two datasets
(tensorflow-datasets downloads them once).

    python -m benchmarks transfer --preset quick   # ~15 min on 2 CPU cores
    python -m benchmarks transfer --source mnist --target cifar10 --preset full

Presets: `smoke` (what the tests run: 2 trials per side, 1 epoch),
`quick` (8 trials per side of 6 epochs, 2 seeds; 16 minutes measured on
2 CPU cores shared with other jobs, the target search stopped by its
4-minute budget after 7 trials) and `full` (30 trials, whole training
split, 3 seeds; for a GPU). Every trial and every final student trains
for the same `student_epochs`, so the values are tuned for the regime
they are used in. The two searches use different seeds
(`SEARCH_SEEDS`), so they sample different (T, α) candidates: "tuned on
the target found the same" can only come from the tasks, not from two
searches proposing identical candidates.
Output: `benchmarks/runs/transfer-<preset>/` with `results.json`,
`results.md`, `transfer.png` and the two T x α heatmaps; a rerun resumes
(keras-tuner reloads finished trials, finished students are loaded);
`--fresh` starts over.
"""

import sys

import numpy as np
import tensorflow as tf

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import report
from benchmarks import results as results_lib
from benchmarks import stats
from benchmarks import store as store_lib
from tfkd import tuning
from tfkd.utils import figures

SIDES = ("source", "target")
#: Final arms on the target, in table order.
ARMS = ("scratch", "defaults", "transferred", "tuned")
LABELS = {
    "scratch": "Student from scratch",
    "defaults": "Distilled, tfkd defaults",
    "transferred": "Distilled, tuned on source",
    "tuned": "Distilled, tuned on target",
}
ARM_COLORS = {
    "scratch": results_lib.SCRATCH_COLOR,
    "defaults": "#ff7f0e",
    "transferred": "#9467bd",
    "tuned": results_lib.DISTILLED_COLOR,
}
PLOT_NAME = "transfer.png"
HEATMAP_NAMES = {side: f"heatmap_{side}.png" for side in SIDES}
#: The command line has `--source` and `--target` instead of `--dataset`.
DATASET_OPTION = False


def _preset(name, source_examples, target_examples, **fields):
    options = dict(source_train_examples=source_examples,
                   target_train_examples=target_examples, source_width=4,
                   target_width=8, tuner="random")
    options.update(fields.pop("options", {}))
    return presets_lib.Preset(name=name, train_examples=target_examples,
                              options=options, **fields)


#: Options: `source_train_examples`, `target_train_examples`,
#: `source_width`, `target_width` (each side's task), `trials` and
#: `tuning_seconds` (each search's budget), `tuner` ("random" or
#: "bayesian", which needs scipy).
PRESETS = {
    "smoke": _preset("smoke", 192, 256, test_examples=256,
                     validation_fraction=0.01, batch_size=64, teacher_width=8,
                     teacher_epochs=1, student_epochs=1, options=dict(
                         source_width=2, target_width=4, trials=2,
                         tuning_seconds=300.0)),
    "quick": _preset("quick", 1_000, 4_000, test_examples=None, batch_size=128,
                     teacher_width=16, teacher_epochs=4, student_epochs=6,
                     seeds=(0, 1, 2), options=dict(trials=8, tuning_seconds=240.0)),
    "full": _preset("full", 6_000, None, test_examples=None, batch_size=128,
                    teacher_width=32, teacher_epochs=20, student_epochs=20,
                    seeds=(0, 1, 2), options=dict(trials=30,
                                                  tuning_seconds=3 * 3600.0)),
}


#: Seed of each side's search: different, so the two sample different
#: candidates.
SEARCH_SEEDS = {"source": 0, "target": 1}


def side_setup(preset, side, dataset, store, log, verbose):
    """The `Setup` of one side: its dataset, data budget and student width."""
    preset = preset.replace(train_examples=preset.option(f"{side}_train_examples"),
                            student_width=preset.option(f"{side}_width"))
    return protocol.Setup(preset, protocol.load_data(preset, dataset), store, log,
                          verbose=verbose)


def search_side(setup, side, fresh):
    """Tunes T and α on one side; writes its heatmap; returns the search."""
    preset, data = setup.preset, setup.data
    setup.log(f"{side}: tuning T and α, {preset.option('trials')} trials of "
              f"{results_lib.plural(preset.student_epochs, 'epoch')}, student "
              f"width {preset.student_width}")
    train = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train)).shuffle(
        len(data.y_train), seed=0).batch(preset.batch_size)
    validation = tf.data.Dataset.from_tensor_slices(
        (data.x_val, data.y_val)).batch(preset.batch_size)
    search = tuning.search(
        setup.teacher, setup.build_student, train, validation,
        epochs=preset.student_epochs, max_trials=preset.option("trials"),
        max_seconds=preset.option("tuning_seconds"),
        learning_rate=preset.learning_rate, tuner=preset.option("tuner"),
        directory=str(setup.store.directory / "tuning"), project_name=side,
        seed=SEARCH_SEEDS[side],
        overwrite=fresh, verbose=setup.verbose,
        log=lambda line: setup.log(f"  {side} {line}"))
    tuning.plot_heatmap(
        search.trials, setup.store.directory / HEATMAP_NAMES[side],
        title=f"{side.capitalize()} ({data.name}, width {preset.student_width}, "
              f"{len(data.y_train)} examples): student val. accuracy",
        temperature_range=tuple(search.settings["temperature_range"]))
    return search


def side_summary(setup, teacher, search, side):
    """What the report says about one side's task, teacher and search."""
    return {
        "dataset": setup.data.name,
        "train_examples": len(setup.data.y_train),
        "validation_examples": len(setup.data.y_val),
        "student_width": setup.preset.student_width,
        "student_parameters": int(setup.build_student().count_params()),
        "teacher": {key: teacher[key] for key in
                    ("accuracy", "parameters", "train_seconds", "width")},
        "search": {
            "temperature": search.temperature, "alpha": search.alpha,
            "val_accuracy": search.val_accuracy, "trials": len(search.trials),
            "completed_trials": sum(t["status"] == "COMPLETED" for t in search.trials),
            "budget_exhausted": search.budget_exhausted,
            "search_seconds": search.search_seconds,
            "tuning_json": f"tuning/{side}/tuning.json",
        },
    }


def final_arms(setup, settings):
    """The four target arms over the seeds (same start, same batches)."""
    arms = [arms_lib.scratch(label=LABELS["scratch"])] + [
        arms_lib.distilled(arm, LABELS[arm], temperature=settings[arm][0],
                           alpha=settings[arm][1], soft_targets="memory")
        for arm in ARMS[1:]]

    def evaluate(setup, run, seed):
        temperature, alpha = settings[run.arm.arm_id]
        return {**protocol.evaluate_accuracy(setup, run, seed),
                "temperature": temperature, "alpha": alpha}

    def accept(record, arm_id):
        # Reused only for the values it was trained with: a resumed search
        # may have found new best values since.
        return protocol.is_done(record) and (
            record.get("temperature"), record.get("alpha")) == settings[arm_id]

    records = protocol.run_seeds(setup, arms, evaluate=evaluate, accept=accept)
    summaries = {arm: protocol.summarize(records[arm], records["scratch"])
                 for arm in ARMS}
    return {arm: {"label": LABELS[arm], "temperature": settings[arm][0],
                  "alpha": settings[arm][1], "accuracy": summaries[arm]["accuracy"],
                  "vs_scratch": summaries[arm]["vs_baseline"] if arm != "scratch" else None,
                  "train_seconds": summaries[arm]["train_seconds"]}
            for arm in ARMS}


def run(preset="quick", source="fashion_mnist", target="fashion_mnist",
        output=None, fresh=False, seeds=None, verbose=0, log=print):
    """Runs the transfer experiment; writes results.json, results.md, PNGs.

    Both datasets are loaded first, so a dataset that needs a download
    fails at once, before anything is trained.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        source: Dataset of the source task A. Defaults to `"fashion_mnist"`.
        target: Dataset of the target task B. Defaults to `"fashion_mnist"`.
        output: Output directory. Defaults to
            `benchmarks/runs/transfer-<preset>` (with the dataset names
            when one is not Fashion-MNIST).
        fresh: Start over: delete finished teachers, students and searches
            of an earlier run. Defaults to `False` (resume).
        seeds: Seeds of the final students instead of the preset's.
            Defaults to `None`.
        verbose: Keras-tuner and teacher verbosity. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (also written as `results.json`).

    Raises:
        ValueError: for an unknown preset.
        RuntimeError: if a dataset cannot be loaded (the message says why
            and what to do offline).
    """
    preset = presets_lib.get_preset(PRESETS, preset)
    if seeds is not None:
        preset = preset.replace(seeds=presets_lib.check_seeds(seeds))
    output = output or results_lib.default_output("transfer", preset.name, [source, target])
    store = store_lib.ResultStore(output, fresh=fresh)
    log(f"transfer: source {source}, target {target}, preset {preset.name}, "
        f"output {output}")
    names = {"source": source, "target": target}
    setups = {side: side_setup(preset, side, names[side], store, log, verbose)
              for side in SIDES}
    sides, searches = {}, {}
    for side, setup in setups.items():
        _, teacher = protocol.train_teacher(setup)
        searches[side] = search_side(setup, side, fresh)
        sides[side] = side_summary(setup, teacher, searches[side], side)
    settings = {"scratch": (None, None), "defaults": (preset.temperature, preset.alpha)}
    settings.update({arm: (searches[side].temperature, searches[side].alpha)
                     for arm, side in (("transferred", "source"), ("tuned", "target"))})
    results = results_lib.skeleton("transfer", preset)
    results.update(
        source=source, target=target, sides=sides,
        test_examples_evaluated=int(len(setups["target"].data.y_test)),
        arms=final_arms(setups["target"], settings),
        target_trials=list(searches["target"].trials))
    results["derived"] = derive(results)
    paths = [plot_transfer(results, store.directory / PLOT_NAME)]
    paths += [store.directory / HEATMAP_NAMES[side] for side in SIDES]
    results_lib.write(results, markdown(results, paths), store.directory)
    log(f"transfer: wrote {store.directory / 'results.md'}")
    return results


def derive(results):
    """Differences of mean test accuracy between the target arms.

    Args:
        results: A transfer results dict (its `arms`).

    Returns:
        A dict of differences, as fractions: `transferred_minus_defaults`,
        `tuned_minus_defaults`, `tuned_minus_transferred` and
        `defaults_minus_scratch`.

    Example:

    >>> arms = {a: {"accuracy": {"mean": m}} for a, m in
    ...         [("scratch", .80), ("defaults", .82), ("transferred", .83),
    ...          ("tuned", .84)]}
    >>> round(derive({"arms": arms})["tuned_minus_transferred"], 4)
    0.01
    """
    mean = {arm: results["arms"][arm]["accuracy"]["mean"] for arm in ARMS}
    return {
        "transferred_minus_defaults": mean["transferred"] - mean["defaults"],
        "tuned_minus_defaults": mean["tuned"] - mean["defaults"],
        "tuned_minus_transferred": mean["tuned"] - mean["transferred"],
        "defaults_minus_scratch": mean["defaults"] - mean["scratch"],
    }


def markdown(results, plot_files=(PLOT_NAME, *HEATMAP_NAMES.values())):
    """The transfer report as Markdown.

    Args:
        results: A transfer results dict.
        plot_files: Plots to link (by base name). Defaults to the
            comparison and the two heatmaps.

    Returns:
        The report, ending with a newline.
    """
    config = results["config"]
    lines = results_lib.header("transfer of T and α", results)
    lines += ["## Tasks and searches", "",
              "| Task | Dataset | Training examples | Student | Teacher "
              "| Trials | Best T | Best α | Best val. accuracy | Search time |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for side in SIDES:
        entry = results["sides"][side]
        search = entry["search"]
        teacher = entry["teacher"]
        budget = " (budget)" if search["budget_exhausted"] else ""
        lines.append(
            f"| {side.capitalize()} | {entry['dataset']} "
            f"| {entry['train_examples']} "
            f"| width {entry['student_width']}, "
            f"{report.format_count(entry['student_parameters'])} "
            f"| {report.format_count(teacher['parameters'])}, "
            f"{report.format_percent(teacher['accuracy'])} "
            f"| {search['completed_trials']}/{search['trials']}{budget} "
            f"| {search['temperature']:.2f} | {search['alpha']:.2f} "
            f"| {report.format_percent(search['val_accuracy'])} "
            f"| {report.format_duration(search['search_seconds'])} |"
        )
    lines += [
        "",
        f"Each trial and each final student: "
        f"{results_lib.plural(config['student_epochs'], 'epoch')}, "
        f"Adam {config['learning_rate']:g}, batch {config['batch_size']}; "
        f"{config['tuner']} search over T in [1, 20] (log) and α in [0, 1], "
        "scored on the validation split (student accuracy after the last "
        "epoch). Teacher: test accuracy of that task's teacher.",
        "",
        f"## On the target task ({results['test_examples_evaluated']} test examples)",
        "",
        "| Setting | T | α | Test accuracy | vs defaults | vs scratch, paired, 95 % CI |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    defaults = results["arms"]["defaults"]["accuracy"]["mean"]
    for arm in ARMS:
        entry = results["arms"][arm]
        t = "—" if entry["temperature"] is None else f"{entry['temperature']:.2f}"
        a = "—" if entry["alpha"] is None else f"{entry['alpha']:.2f}"
        versus = "—" if arm in ("scratch", "defaults") else report.format_points(
            entry["accuracy"]["mean"] - defaults)
        lines.append(f"| {entry['label']} | {t} | {a} "
                     f"| {stats.format_accuracy(entry['accuracy'])} | {versus} "
                     f"| {stats.format_interval(entry.get('vs_scratch'))} |")
    derived = results["derived"]
    lines += [
        "",
        f"Accuracy: mean ± sample std over seeds {config['seeds']}, same initial "
        "weights for every setting of a seed.",
        "",
        f"- Transferred vs defaults: "
        f"{report.format_points(derived['transferred_minus_defaults'])}; tuned "
        f"on target vs defaults: {report.format_points(derived['tuned_minus_defaults'])}; "
        f"tuned on target vs transferred: "
        f"{report.format_points(derived['tuned_minus_transferred'])}.",
        "",
        "## Plots",
        "",
    ]
    captions = {PLOT_NAME: "Target test accuracy and where each setting lies",
                **{name: f"{side.capitalize()} search: T x α heatmap"
                   for side, name in HEATMAP_NAMES.items()}}
    lines += results_lib.image_links(plot_files, captions)
    return "\n".join(lines).rstrip("\n") + "\n"


def plot_transfer(results, path):
    """Two panels: target test accuracy per setting, and the target search.

    Left: one bar per setting (± std over seeds), labelled with its
    accuracy. Right: the target search's trials over T (log) and α,
    coloured by validation accuracy, with the defaults, the transferred
    values and the target's own best marked.

    Args:
        results: A transfer results dict.
        path: Where to write the PNG.

    Returns:
        `path`, as a string.
    """
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter

    figure = figures.new_figure((13, 5.5))
    bars_axes, map_axes = figure.subplots(1, 2, width_ratios=(1, 1.15))
    means = [100 * results["arms"][arm]["accuracy"]["mean"] for arm in ARMS]
    stds = [100 * results["arms"][arm]["accuracy"]["std"] for arm in ARMS]
    positions = np.arange(len(ARMS))
    bars_axes.bar(positions, means, yerr=stds, capsize=5,
                  color=[ARM_COLORS[arm] for arm in ARMS], width=0.65)
    for x, mean, std in zip(positions, means, stds):
        bars_axes.text(x, mean + std + 0.15, f"{mean:.2f} %", ha="center",
                       va="bottom", fontsize=9)
    bars_axes.set_xticks(positions, [LABELS[arm].replace(", ", ",\n") for arm in ARMS],
                         fontsize=9)
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    span = max(high - low, 1.0)
    bars_axes.set_ylim(low - 0.6 * span, high + 0.35 * span)
    bars_axes.set_ylabel("Target test accuracy (%)")
    bars_axes.set_title(f"Target task: {results['target']}, "
                        f"width {results['sides']['target']['student_width']}")
    bars_axes.grid(True, axis="y", alpha=0.3)

    trials = [t for t in results["target_trials"]
              if t["status"] == "COMPLETED" and t["val_accuracy"] is not None]
    if trials:
        log_t = [math.log10(t["temperature"]) for t in trials]
        scatter = map_axes.scatter(
            log_t, [t["alpha"] for t in trials],
            c=[100 * t["val_accuracy"] for t in trials], cmap="viridis",
            s=70, edgecolors="black", linewidths=0.6, zorder=2,
        )
        figure.colorbar(scatter, ax=map_axes).set_label(
            "Target search: student val. accuracy (%)")
    for arm, marker in (("defaults", "X"), ("transferred", "^"), ("tuned", "*")):
        entry = results["arms"][arm]
        map_axes.scatter(math.log10(entry["temperature"]), entry["alpha"],
                         marker=marker, s=260, c=ARM_COLORS[arm],
                         edgecolors="white", linewidths=1.0, zorder=3,
                         label=f"{LABELS[arm]} (T={entry['temperature']:.2f}, "
                               f"α={entry['alpha']:.2f})")
    map_axes.set_xlim(math.log10(0.9), math.log10(22))
    map_axes.set_ylim(-0.05, 1.05)
    map_axes.xaxis.set_major_locator(FixedLocator([math.log10(v) for v in (1, 2, 5, 10, 20)]))
    map_axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.3g}"))
    map_axes.set_xlabel("Temperature T (log scale)")
    map_axes.set_ylabel("α (weight of the hard-label loss)")
    map_axes.set_title("Where the settings lie on the target's search")
    map_axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8,
                    ncol=1, frameon=False)
    map_axes.grid(True, alpha=0.25)
    figure.suptitle(
        f"Do T and α transfer? {results['source']} (width "
        f"{results['sides']['source']['student_width']}, "
        f"{results['sides']['source']['train_examples']} ex.) → "
        f"{results['target']} (width {results['sides']['target']['student_width']}, "
        f"{results['sides']['target']['train_examples']} ex.), preset {results['preset']}",
        fontsize=12,
    )
    return figures.save_figure(figure, path)


def main(argv=None, prog=None):
    """Parses the command line, runs the experiment; returns 0."""
    parser = cli.parser(sys.modules[__name__], "transfer", prog)
    parser.add_argument("--source", default="fashion_mnist",
                        help="dataset tuned on first (default fashion_mnist; "
                             "e.g. mnist, with internet)")
    parser.add_argument("--target", default="fashion_mnist",
                        help="dataset the values are transferred to (default "
                             "fashion_mnist; e.g. cifar10, with internet)")
    run(**vars(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
