"""Experiment `compare`: teacher vs students vs keras.distillation vs AutoKeras.

The main comparison. On one dataset it trains the reference teacher CNN
(`benchmarks.models`), then the student arms of `benchmarks.arms` from one
initial weight set per seed, on the same batches, interleaved epoch by
epoch (`benchmarks.protocol`), then an AutoKeras search (absent, and said
so in the report, where autokeras is not installed). It reports accuracy
(mean ± sample std over seeds, and each arm's paired difference with the
student from scratch with its 95 % t-interval), size, batch-1 latency and
throughput (all models timed in turn, repeated), epoch times and ratios,
with plots.

Beside the students on all the labels, a *few-labels* block asks where
distillation pays (see the `gain` experiment): the teacher keeps all its
labelled images, but the students get only a few labels (quick: 600 of
the 6,000). `scratch_few` learns from those 600 alone; `tfkd_transfer`,
the tfkd recipe, learns from the teacher's soft targets on all 6,000
images, the 600 labelled and the other 5,400 as an unlabelled transfer
set (logits from a `tfkd.TeacherCache`, α=0, T=1 and the schedule from
the gain map). Both start from the same weights, take the same number of steps on
the same batch order (scratch cycles through its 600 for the transfer
set's other rows) with the same cosine-decayed Adam, and `tfkd_transfer`
is reported with its paired gain over `scratch_few`.

    python -m benchmarks compare --preset quick   # ~15-25 min on 2 CPU cores
    python -m benchmarks run --dataset fashion_mnist --preset quick  # same
    python -m benchmarks compare --preset smoke   # seconds; what tests run

Presets: `smoke` (256 examples, 2 epochs, 1 seed), `quick` (6,000
examples, teacher 4 epochs, students 6 epochs, 3 seeds, AutoKeras 4
minutes, the few-labels block 10 epochs over 600 + 5,400 images; 14.4
minutes measured on 2 CPU cores, of which the few-labels block about 3.5)
and `full` (the whole training
split, 3 seeds, 20 AutoKeras trials; a GPU). Output:
`benchmarks/runs/compare-<preset>/` with `results.json` (see
`benchmarks.schema`), `results.md` and PNG plots; a rerun resumes after
the last finished arm and seed (`--fresh` starts over).
"""

import sys
import time

import keras
import numpy as np

from benchmarks import arms as arms_lib
from benchmarks import cli
from benchmarks import measure
from benchmarks import presets as presets_lib
from benchmarks import protocol
from benchmarks import stats

LABELS = {
    "teacher": "Teacher (CNN)",
    "scratch": "Student from scratch",
    "tfkd": "Distilled student (tfkd, online)",
    "tfkd_cached": "Distilled student (tfkd, cached teacher)",
    "keras_distillation": "keras.distillation (default loss)",
    "keras_distillation_kl": "keras.distillation (KLDivergence)",
    "autokeras": "AutoKeras ImageClassifier",
    "scratch_few": "Student from scratch (few labels)",
    "tfkd_transfer": "tfkd recipe: transfer set (few labels)",
}
STUDENT_ARMS = {
    "scratch": arms_lib.scratch(label=LABELS["scratch"]),
    "tfkd": arms_lib.distilled("tfkd", LABELS["tfkd"]),
    "tfkd_cached": arms_lib.distilled("tfkd_cached", LABELS["tfkd_cached"],
                                      soft_targets="cache"),
    # The default loss, wrong in Keras 3.12-3.15.1: measured as users get it.
    "keras_distillation": arms_lib.keras_distillation(
        "keras_distillation", LABELS["keras_distillation"]),
    "keras_distillation_kl": arms_lib.keras_distillation(
        "keras_distillation_kl", LABELS["keras_distillation_kl"],
        loss=keras.losses.KLDivergence()),
}
#: The few-labels block (`few_label_arms`), trained in `Setup.with_labels`.
FEW_LABEL_ARMS = ("scratch_few", "tfkd_transfer")
#: Arms that read a `tfkd.TeacherCache` (their records carry its size).
CACHED_ARMS = ("tfkd_cached", "tfkd_transfer")
ALL_ARMS = ("teacher", *STUDENT_ARMS, *FEW_LABEL_ARMS, "autokeras")

#: The few-labels block of `quick`, from the gain map
#: (benchmarks/results/gain-quick, 10 % labels of a 4,000-image pool): T=1
#: (gain +4.5 pp, against +3.0 at T=2 and +1.6 at T=4), α=0 (the pool has
#: no labels), cosine decay, 10 epochs of batch 64 over the transfer set
#: (20 epochs gained more, +4.3 against +3.0, but double the time); scratch
#: with random 1-pixel shifts (`arms.small_shift`), measured no worse for
#: it than none (-0.16 pp [-1.96, +1.64]) and better than flips.
FEW_LABELS_QUICK = dict(few_labels=600, few_epochs=10, few_batch_size=64,
                        few_temperature=1.0, few_scratch_augmentation=True)

PRESETS = {
    "smoke": presets_lib.Preset(
        name="smoke", train_examples=256, test_examples=256,
        validation_examples=256, batch_size=64, teacher_epochs=1,
        student_epochs=2, teacher_width=8, student_width=4, timing_repeats=1,
        options=dict(autokeras_trials=1, autokeras_epochs=1,
                     autokeras_seconds=120.0, latency_calls=5, grid_images=8,
                     few_labels=32, few_epochs=2, few_batch_size=32,
                     few_temperature=1.0, few_scratch_augmentation=True)),
    "quick": presets_lib.Preset(
        name="quick", train_examples=6_000, test_examples=None,
        validation_examples=1_000, batch_size=128, teacher_epochs=4,
        student_epochs=6, seeds=(0, 1, 2), teacher_width=16,
        teacher_dense_units=512,
        options=dict(autokeras_trials=1, autokeras_epochs=4,
                     autokeras_seconds=240.0, latency_calls=40, grid_images=32,
                     **FEW_LABELS_QUICK)),
    "full": presets_lib.Preset(
        name="full", train_examples=None, test_examples=None,
        validation_examples=None, batch_size=128, teacher_epochs=20,
        student_epochs=30, seeds=(0, 1, 2), teacher_width=32,
        options=dict(autokeras_trials=20, autokeras_epochs=20,
                     autokeras_seconds=4 * 3600.0, latency_calls=40,
                     grid_images=32, few_labels=5_400, few_epochs=20,
                     few_batch_size=128, few_temperature=1.0,
                     few_scratch_augmentation=True)),
}


def check_arms(requested):
    """The arm ids to run, in canonical order (the teacher added if needed)."""
    if requested is None:
        return ALL_ARMS
    unknown = sorted(set(requested) - set(ALL_ARMS))
    if unknown:
        raise ValueError(f"Invalid value for argument `arms`. Expected names from "
                         f"{list(ALL_ARMS)}. Received: unknown {unknown}")
    students = set(STUDENT_ARMS) | set(FEW_LABEL_ARMS)
    wanted = set(requested) | ({"teacher"} if set(requested) & students else set())
    return tuple(arm for arm in ALL_ARMS if arm in wanted)


def _first_seed_metrics(setup, arm_id, model):
    """Predictions, confusion matrix and file size (first seed only)."""
    data = setup.data
    _, predicted = measure.accuracy_and_predictions(model, data.x_test, data.y_test)
    return {
        "predictions": predicted.tolist(),
        "confusion_matrix": measure.confusion_matrix(
            data.y_test, predicted, data.num_classes).tolist(),
        "parameters": int(model.count_params()),
        "size_bytes": measure.size_on_disk(model, setup.store.model_path(arm_id)),
    }


def _evaluate(setup, run, seed):
    record = protocol.evaluate_accuracy(setup, run, seed)
    if seed == setup.preset.seeds[0]:
        record.update(_first_seed_metrics(setup, run.arm.arm_id, run.student))
    if run.arm.arm_id in CACHED_ARMS and setup.teacher_cache is not None:
        cache = setup.teacher_cache
        record["cache"] = {"build_seconds": setup.cache_build_seconds,
                           "bytes": cache.nbytes,
                           "bytes_per_example": cache.nbytes / cache.num_examples}
    return record


def teacher_record(setup):
    """The teacher's record in the results' arm layout."""
    teacher, record = protocol.train_teacher(setup)
    return {**record, "label": LABELS["teacher"], "role": "teacher",
            "accuracy_per_seed": [record["accuracy"]],
            **_first_seed_metrics(setup, "teacher", teacher)}


def few_labels_setup(setup):
    """The few-labels block's view: `few_labels` labelled, the rest a pool.

    Its own preset: the block's epochs, batch size, T, α=0 and cosine
    decay (`few_*` options), measured in the gain map.
    """
    options = setup.preset.options
    view = setup.with_labels(options["few_labels"])
    return view.with_preset(setup.preset.replace(
        student_epochs=options["few_epochs"], batch_size=options["few_batch_size"],
        temperature=options["few_temperature"], alpha=0.0,
        learning_rate_schedule="cosine"))


def few_label_arms(preset):
    """`scratch_few` and `tfkd_transfer` (see the module docstring)."""
    augmentation = (arms_lib.small_shift
                    if preset.option("few_scratch_augmentation") else None)
    return {
        "scratch_few": arms_lib.scratch("scratch_few", LABELS["scratch_few"],
                                        augmentation=augmentation),
        "tfkd_transfer": arms_lib.distilled(
            "tfkd_transfer", LABELS["tfkd_transfer"], alpha=0.0,
            soft_targets="cache"),
    }


def few_labels_summary(view, records):
    """What the few-labels block trained on, and the recipe's paired gain."""
    data, preset = view.data, view.preset
    gain = None
    if all(protocol.is_done(records.get(a)) for a in FEW_LABEL_ARMS):
        gain = stats.paired_difference(records["tfkd_transfer"]["accuracy_per_seed"],
                                       records["scratch_few"]["accuracy_per_seed"])
    return {
        "teacher_examples": int(len(data.y_teacher)),
        "labelled": int(len(data.y_train)), "unlabelled": int(len(data.x_pool)),
        "epochs": preset.student_epochs, "batch_size": preset.batch_size,
        "steps": protocol.training_steps(view), "temperature": preset.temperature,
        "alpha": preset.alpha, "learning_rate_schedule": preset.learning_rate_schedule,
        "scratch_augmentation": bool(preset.option("few_scratch_augmentation")),
        "baseline": "scratch_few", "recipe": "tfkd_transfer",
        "gain": gain,
    }


def student_records(setup, arm_ids):
    """Trains (or loads) the student arms over the seeds; merged records.

    The arms on all the labels run interleaved in `setup`, then the
    few-labels arms interleaved in `few_labels_setup(setup)`.
    """
    main = [a for a in arm_ids if a in STUDENT_ARMS]
    few = [a for a in arm_ids if a in FEW_LABEL_ARMS]
    per_seed = protocol.run_seeds(setup, [STUDENT_ARMS[a] for a in main],
                                  evaluate=_evaluate) if main else {}
    records = _merge(per_seed, trained_on=f"{len(setup.data.y_train):,} labelled")
    if few:
        view = few_labels_setup(setup)
        arms = few_label_arms(view.preset)
        per_seed = protocol.run_seeds(view, [arms[a] for a in few], evaluate=_evaluate)
        unlabelled = f" + {len(view.data.x_pool):,} unlabelled"
        for arm_id, record in _merge(per_seed, "").items():
            record["trained_on"] = f"{len(view.data.y_train):,} labelled" + (
                unlabelled if arm_id == "tfkd_transfer" else "")
            record["baseline"] = "scratch_few" if arm_id == "tfkd_transfer" else None
            records[arm_id] = record
        records["few_labels"] = few_labels_summary(view, records)
    return records


def _merge(per_seed, trained_on):
    records = {}
    for arm_id, seeds in per_seed.items():
        failed = [r for r in seeds if not protocol.is_done(r)]
        if failed:
            records[arm_id] = {"label": LABELS[arm_id], "role": "student",
                               "status": "failed",
                               "error": (failed[0] or {}).get("error") or "not run"}
            continue
        summary = protocol.summarize(seeds)
        records[arm_id] = {
            **seeds[0], "label": LABELS[arm_id], "role": "student",
            "accuracy_per_seed": summary["accuracy"]["per_seed"],
            "epoch_seconds_raw": [t for r in seeds for t in r["epoch_seconds_raw"][1:]]
            or seeds[0]["epoch_seconds_raw"],
            "train_seconds": summary["train_seconds"], "trained_on": trained_on,
        }
    return records


def autokeras_record(setup):
    """The AutoKeras search (resumed, skipped, or absent and why)."""
    record = setup.store.load("autokeras")
    if protocol.is_done(record):
        setup.log("autokeras: loaded from an earlier run")
        return record
    base = {"label": LABELS["autokeras"], "role": "automl"}
    available, why = arms_lib.autokeras_available()
    if not available or setup.preset.option("autokeras_trials") <= 0:
        why = why or "autokeras_trials=0 in this preset"
        setup.log(f"autokeras: absent, {why}")
        return {**base, "status": "skipped", "error": why}
    from benchmarks import automl

    options, data = setup.preset.options, setup.data
    try:
        model, info = automl.search(
            data.x_train, data.y_train, data.x_val, data.y_val,
            trials=options["autokeras_trials"], epochs=options["autokeras_epochs"],
            seconds=options["autokeras_seconds"], batch_size=setup.preset.batch_size,
            directory=setup.store.directory / "autokeras-trials", verbose=setup.verbose)
        accuracy, _ = measure.accuracy_and_predictions(model, data.x_test, data.y_test)
        record = {**base, "status": "done", "error": None, "search": info,
                  "train_seconds": info["search_seconds"], "epoch_seconds_raw": [],
                  "accuracy_per_seed": [accuracy],
                  **_first_seed_metrics(setup, "autokeras", model)}
    except Exception as error:  # recorded, the report still gets written
        record = {**base, "status": "failed", "error": f"{type(error).__name__}: {error}"}
    setup.store.save("autokeras", record)
    setup.log(f"autokeras: {record['status']}")
    return record


def speed_records(setup, records):
    """Latency and throughput of every finished model, measured in turn."""
    models = {}
    for arm_id, record in records.items():
        path = setup.store.model_path(arm_id)
        if record.get("status") == "done" and path.exists():
            try:
                models[arm_id] = keras.saving.load_model(path, compile=False)
            except Exception as error:  # e.g. AutoKeras layers without autokeras
                setup.log(f"speed: {arm_id} not timed ({type(error).__name__})")
    if not models:
        return {}
    setup.log(f"speed: {len(models)} models, {setup.preset.timing_repeats} "
              "interleaved repeats")
    return measure.interleaved_speed(
        models, setup.data.x_test, repeats=setup.preset.timing_repeats,
        latency_calls=setup.preset.option("latency_calls"))


def finish_arm(record, speed=None):
    """Turns a stored record into the results.json arm schema."""
    arm = {key: record.get(key) for key in ("label", "role", "status", "error")}
    arm.update({key: record[key] for key in ("trained_on", "baseline") if key in record})
    if record["status"] != "done":
        return {**arm, **dict.fromkeys(
            ("accuracy", "parameters", "size_bytes", "latency_ms", "throughput_per_s",
             "train_seconds", "epoch_seconds", "confusion_matrix")), "history": {}}
    epoch = stats.spread(record["epoch_seconds_raw"])
    arm.update(
        accuracy=stats.mean_std(record["accuracy_per_seed"]),
        parameters=record["parameters"], size_bytes=record["size_bytes"],
        latency_ms=(speed or {}).get("latency_ms"),
        throughput_per_s=(speed or {}).get("throughput_per_s"),
        throughput_spread=(speed or {}).get("throughput_spread"),
        train_seconds=record["train_seconds"],
        epoch_seconds=None if epoch["median"] is None else epoch,
        history=record.get("history", {}),
        confusion_matrix=record.get("confusion_matrix"))
    arm.update({k: record[k] for k in ("search", "cache") if k in record})
    return arm


def prediction_grid(data, records, count):
    """Test images for the prediction grid, teacher/student disagreements first."""
    teacher, student = records.get("teacher", {}), records.get("tfkd", {})
    if "predictions" not in teacher or "predictions" not in student:
        return None
    teacher_predictions = np.asarray(teacher["predictions"])
    student_predictions = np.asarray(student["predictions"])
    disagree = np.flatnonzero(teacher_predictions != student_predictions)
    agree = np.flatnonzero(teacher_predictions == student_predictions)
    chosen = np.sort(np.concatenate([disagree[: count // 2], agree])[:count])
    return {"images": data.x_test[chosen], "true_labels": data.y_test[chosen],
            "teacher_predictions": teacher_predictions[chosen],
            "student_predictions": student_predictions[chosen],
            "class_names": list(data.class_names)}


def run(preset="quick", dataset=None, output=None, arms=None, fresh=False,
        seeds=None, verbose=None, log=print):
    """Runs the comparison and writes results.json, results.md and plots.

    Args:
        preset: A name of `PRESETS` or a `Preset`. Defaults to `"quick"`.
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `None` (the preset's, Fashion-MNIST).
        output: Output directory. Defaults to
            `benchmarks/runs/compare-<preset>` (with the dataset's name
            when it is not Fashion-MNIST).
        arms: Arm ids to run (the teacher is added when a student arm needs
            it). Defaults to all of `ALL_ARMS`.
        fresh: Ignore finished arms of an earlier run. Defaults to `False`.
        seeds: Seeds instead of the preset's. Defaults to `None`.
        verbose: Keras verbosity of the teacher and AutoKeras. Defaults to
            `2` (one line per epoch), `0` in the smoke preset.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (see `benchmarks.schema`).
    """
    from benchmarks import plots, report, results as results_lib

    arm_ids = check_arms(arms)
    preset = presets_lib.get_preset(PRESETS, preset)
    dataset = dataset or preset.dataset
    setup = protocol.start(
        "compare", PRESETS, preset, seeds=seeds, dataset=dataset, fresh=fresh,
        output=output or results_lib.default_output("compare", preset.name, [dataset]),
        log=log, validate=True,
        verbose=(0 if preset.name == "smoke" else 2) if verbose is None else verbose)
    preset, data, output = setup.preset, setup.data, setup.store.directory
    started = time.perf_counter()
    records = {"teacher": teacher_record(setup)} if "teacher" in arm_ids else {}
    if "teacher" in records:
        records["teacher"]["trained_on"] = f"{len(data.y_teacher):,} labelled"
    records.update(student_records(
        setup, [a for a in arm_ids if a in STUDENT_ARMS or a in FEW_LABEL_ARMS]))
    few_labels = records.pop("few_labels", None)
    if "autokeras" in arm_ids:
        records["autokeras"] = {**autokeras_record(setup), "trained_on":
                                f"{len(data.y_train):,} labelled"}
    speeds = speed_records(setup, records)
    results = {
        **results_lib.skeleton("compare", preset), "dataset": dataset,
        "config": {**preset.to_dict(), "num_examples": data.num_examples,
                   "test_examples_evaluated": int(len(data.y_test))},
        "class_names": list(data.class_names),
        "arms": {a: finish_arm(records[a], speeds.get(a)) for a in records},
        "wall_seconds": time.perf_counter() - started,
    }
    if few_labels is not None:
        results["few_labels"] = few_labels
    results["derived"] = report.derive(results)
    grid = prediction_grid(data, records, preset.option("grid_images"))
    report.write_report(results, output,
                        plot_files=plots.write_all_plots(results, output, grid=grid))
    log(f"compare: wrote {output}/results.md")
    return results


def main(argv=None, prog=None):
    """Parses the command line, runs the comparison; returns 0."""
    parser = cli.parser(sys.modules[__name__], "compare", prog)
    parser.add_argument("--arms", default=None, type=cli.name_list,
                        help="comma-separated arm ids (default: all)")
    args = parser.parse_args(argv)
    run(**vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
