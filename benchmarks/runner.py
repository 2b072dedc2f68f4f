"""The benchmark run: teacher, student arms, AutoKeras, then the report.

`run()` is what `python -m benchmarks run` calls. Every arm sees the same
data split, and every student arm of a seed starts from the same initial
weights. Student arms of one seed are trained interleaved, one epoch each
in turn (see `benchmarks.interleave`), so their epoch times are measured
under the same machine conditions and their ratios can be trusted.
"""

import datetime
import pathlib
import time

import keras
import numpy as np

import tfkd
from benchmarks import arms as arms_lib
from benchmarks import automl
from benchmarks import environment
from benchmarks import interleave
from benchmarks import measure
from benchmarks import models
from benchmarks import presets
from benchmarks import store as store_lib

ALL_ARMS = ("teacher",) + arms_lib.STUDENT_ARMS + ("autokeras",)


def default_output(dataset, preset_name):
    """`benchmarks/results/<dataset>-<preset>` beside this file."""
    return pathlib.Path(__file__).parent / "results" / f"{dataset}-{preset_name}"


def _arrays(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _check_arms(requested):
    if requested is None:
        return ALL_ARMS
    unknown = sorted(set(requested) - set(ALL_ARMS))
    if unknown:
        raise ValueError(
            f"Invalid value for argument `arms`. Expected names from "
            f"{list(ALL_ARMS)}. Received: unknown {unknown}"
        )
    # A student arm needs the teacher; keep the canonical order.
    wanted = set(requested) | ({"teacher"} if set(requested) & set(
        arms_lib.STUDENT_ARMS) else set())
    return tuple(arm for arm in ALL_ARMS if arm in wanted)


def _model_metrics(model, x_test, preset, store, arm_id):
    """Size, latency and throughput of a trained model (saved for size)."""
    return {
        "parameters": int(model.count_params()),
        "size_bytes": measure.size_on_disk(model, store.model_path(arm_id)),
        "latency_ms": measure.latency_ms(
            model, x_test[:1], repeats=preset.latency_repeats
        ),
        "throughput_per_s": measure.throughput(model, x_test[:256]),
    }


def _failed(arm_id, error):
    return {
        "label": arms_lib.LABELS[arm_id],
        "role": _role(arm_id),
        "status": "failed",
        "error": f"{type(error).__name__}: {error}",
    }


def _role(arm_id):
    if arm_id == "teacher":
        return "teacher"
    return "automl" if arm_id == "autokeras" else "student"


class _Run:
    """State of one run: data, preset, store, logger."""

    def __init__(self, dataset, preset, store, verbose, log):
        self.dataset = dataset
        self.preset = preset
        self.store = store
        self.verbose = verbose
        self.log = log
        self.validation = dataset.validation
        if preset.validation_examples is not None:
            self.validation = dataset.validation.unbatch().take(
                preset.validation_examples
            ).batch(preset.batch_size).cache()
        self.x_test, self.y_test = _arrays(dataset.test)
        if preset.test_examples is not None:
            self.x_test = self.x_test[: preset.test_examples]
            self.y_test = self.y_test[: preset.test_examples]
        self.teacher = None
        self.cache = None
        self.cache_build_seconds = None

    def evaluate(self, model, arm_id, first_seed):
        accuracy, predicted = measure.accuracy_and_predictions(
            model, self.x_test, self.y_test
        )
        record = {"accuracy": accuracy}
        if first_seed:
            record["confusion_matrix"] = measure.confusion_matrix(
                self.y_test, predicted, self.dataset.num_classes
            ).tolist()
            record["predictions"] = predicted.tolist()
            record.update(
                _model_metrics(model, self.x_test, self.preset, self.store, arm_id)
            )
        return record

    # -- teacher -----------------------------------------------------------

    def teacher_record(self):
        record = self.store.load("teacher")
        path = self.store.model_path("teacher")
        if record is not None and record.get("status") == "done" and path.exists():
            self.log("teacher: loaded from an earlier run")
            self.teacher = keras.saving.load_model(path)
            return record
        self.log(f"teacher: training for {self.preset.teacher_epochs} epochs")
        keras.utils.set_random_seed(0)
        teacher = models.teacher_cnn(
            self.dataset.input_shape,
            self.dataset.num_classes,
            width=self.preset.teacher_width,
            dense_units=self.preset.teacher_dense_units,
        )
        arms_lib.compile_classifier(teacher, self.preset)
        timer = measure.EpochTimer()
        start = time.perf_counter()
        history = teacher.fit(
            self.dataset.train,
            validation_data=self.validation,
            epochs=self.preset.teacher_epochs,
            callbacks=[timer],
            verbose=self.verbose,
        )
        train_seconds = time.perf_counter() - start
        self.teacher = teacher
        record = {
            "label": arms_lib.LABELS["teacher"],
            "role": "teacher",
            "status": "done",
            "error": None,
            "train_seconds": train_seconds,
            "epoch_seconds_raw": timer.seconds,
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            **self.evaluate(teacher, "teacher", first_seed=True),
        }
        record["accuracy_per_seed"] = [record.pop("accuracy")]
        self.store.save("teacher", record)
        self.log(f"teacher: test accuracy {record['accuracy_per_seed'][0]:.4f}")
        return record

    # -- students ------------------------------------------------------------

    def _cache_dataset(self):
        """The training data with cached teacher logits, built once."""
        if self.cache is None:
            start = time.perf_counter()
            self.cache = tfkd.TeacherCache.build(
                self.teacher,
                self.dataset.train,
                path=self.store.directory / "teacher-cache",
                overwrite=True,
                verbose=0,
            )
            self.cache_build_seconds = time.perf_counter() - start
            self.log(
                f"teacher cache: {self.cache.num_examples} examples in "
                f"{self.cache_build_seconds:.1f} s, {self.cache.nbytes} bytes"
            )
        return self.cache.dataset(batch_size=self.preset.batch_size, shuffle=True)

    def student_seed(self, seed, arm_ids):
        """Trains the given student arms for one seed, interleaved."""
        keras.utils.set_random_seed(seed)

        def build_student():
            return models.student_cnn(
                self.dataset.input_shape,
                self.dataset.num_classes,
                width=self.preset.student_width,
            )

        initial_weights = build_student().get_weights()
        runs, failures = [], {}
        for arm_id in arm_ids:
            try:
                student = arms_lib.fresh_student(build_student, initial_weights)
                teacher = None if arm_id == "tfkd_cached" else self.teacher
                train_data = (
                    self._cache_dataset()
                    if arm_id == "tfkd_cached"
                    else self.dataset.train
                )
                runs.append(
                    interleave.Arm(
                        arm_id=arm_id,
                        trainer=arms_lib.trainer(arm_id, student, teacher, self.preset),
                        train_data=train_data,
                        validation_data=self.validation,
                    )
                )
            except Exception as error:  # recorded in the results, run goes on
                failures[arm_id] = _failed(arm_id, error)
        self.log(
            f"students, seed {seed}: {', '.join(r.arm_id for r in runs)} "
            f"for {self.preset.student_epochs} epochs, interleaved"
        )
        if runs:
            interleave.train_interleaved(
                runs, self.preset.student_epochs, verbose=0, log=self.log
            )
        for run in runs:
            student = (
                run.trainer.student if hasattr(run.trainer, "student") else run.trainer
            )
            record = {
                "status": "done",
                "history": run.history,
                "epoch_seconds_raw": run.epoch_seconds,
                "train_seconds": run.train_seconds,
                **self.evaluate(student, run.arm_id, first_seed=seed == self.preset.seeds[0]),
            }
            if run.arm_id == "tfkd_cached":
                record["cache"] = {
                    "build_seconds": self.cache_build_seconds,
                    "bytes": self.cache.nbytes,
                    "bytes_per_example": self.cache.nbytes / self.cache.num_examples,
                }
            self.store.save(f"{run.arm_id}__seed{seed}", record)
            self.log(f"  {run.arm_id}: test accuracy {record['accuracy']:.4f}")
        for arm_id, record in failures.items():
            self.log(f"  {arm_id}: FAILED {record['error']}")
            self.store.save(f"{arm_id}__seed{seed}", record)

    def student_records(self, arm_ids):
        for seed in self.preset.seeds:
            todo = [
                arm_id
                for arm_id in arm_ids
                if (self.store.load(f"{arm_id}__seed{seed}") or {}).get("status")
                != "done"
            ]
            if todo:
                self.student_seed(seed, todo)
            else:
                self.log(f"students, seed {seed}: loaded from an earlier run")
        return {arm_id: self._merge_seeds(arm_id) for arm_id in arm_ids}

    def _merge_seeds(self, arm_id):
        per_seed = [self.store.load(f"{arm_id}__seed{s}") for s in self.preset.seeds]
        failed = [r for r in per_seed if r is None or r.get("status") != "done"]
        if failed:
            return failed[0] or _failed(arm_id, RuntimeError("not run"))
        record = dict(per_seed[0])
        record["accuracy_per_seed"] = [r["accuracy"] for r in per_seed]
        record.pop("accuracy")
        # Epoch times of all seeds, each seed's first (tracing) epoch dropped.
        record["epoch_seconds_raw"] = [
            t for r in per_seed for t in r["epoch_seconds_raw"][1:]
        ] or per_seed[0]["epoch_seconds_raw"]
        record["train_seconds"] = float(np.mean([r["train_seconds"] for r in per_seed]))
        record.update(label=arms_lib.LABELS[arm_id], role="student", error=None)
        return record

    # -- AutoKeras -------------------------------------------------------------

    def autokeras_record(self):
        record = self.store.load("autokeras")
        if record is not None and record.get("status") == "done":
            self.log("autokeras: loaded from an earlier run")
            return record
        if self.preset.autokeras_trials <= 0:
            return {
                "label": arms_lib.LABELS["autokeras"], "role": "automl",
                "status": "skipped", "error": "autokeras_trials=0 in this preset",
            }
        self.log(
            f"autokeras: {self.preset.autokeras_trials} trial(s) x "
            f"{self.preset.autokeras_epochs} epochs, budget "
            f"{self.preset.autokeras_seconds:.0f} s"
        )
        try:
            x_train, y_train = _arrays(self.dataset.train)
            x_val, y_val = _arrays(self.validation)
            model, info = automl.search(
                x_train, y_train, x_val, y_val, self.preset,
                self.store.directory / "autokeras-trials",
                verbose=self.verbose,
            )
            record = {
                "label": arms_lib.LABELS["autokeras"],
                "role": "automl",
                "status": "done",
                "error": None,
                "train_seconds": info["search_seconds"],
                "search": info,
                "epoch_seconds_raw": [],
                **self.evaluate(model, "autokeras", first_seed=True),
            }
            record["accuracy_per_seed"] = [record.pop("accuracy")]
        except Exception as error:  # recorded, the report still gets written
            record = _failed("autokeras", error)
        self.store.save("autokeras", record)
        self.log(f"autokeras: {record['status']}")
        return record


def _finish_arm(record):
    """Turns a stored record into the results.json arm schema."""
    arm = {
        "label": record["label"],
        "role": record["role"],
        "status": record["status"],
        "error": record.get("error"),
    }
    if record["status"] != "done":
        arm.update(
            accuracy=None, parameters=None, size_bytes=None, latency_ms=None,
            throughput_per_s=None, train_seconds=None, epoch_seconds=None,
            history={}, confusion_matrix=None,
        )
        return arm
    accuracies = record["accuracy_per_seed"]
    epoch = measure.summarize_seconds(record["epoch_seconds_raw"], skip_first=False)
    arm.update(
        accuracy={
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "per_seed": accuracies,
        },
        parameters=record["parameters"],
        size_bytes=record["size_bytes"],
        latency_ms=record["latency_ms"],
        throughput_per_s=record["throughput_per_s"],
        train_seconds=record["train_seconds"],
        epoch_seconds=(
            None if epoch["median"] is None
            else {k: epoch[k] for k in ("median", "min", "max")}
        ),
        history=record.get("history", {}),
        confusion_matrix=record.get("confusion_matrix"),
    )
    for extra in ("search", "cache"):  # AutoKeras search, teacher cache
        if extra in record:
            arm[extra] = record[extra]
    return arm


def _grid(run_state, records, count):
    """Test images for the prediction grid, disagreements first."""
    teacher = records.get("teacher", {})
    student = records.get("tfkd", {})
    if "predictions" not in teacher or "predictions" not in student:
        return None
    teacher_predictions = np.asarray(teacher["predictions"])
    student_predictions = np.asarray(student["predictions"])
    disagree = np.flatnonzero(teacher_predictions != student_predictions)
    agree = np.flatnonzero(teacher_predictions == student_predictions)
    chosen = np.concatenate([disagree[: count // 2], agree])[:count]
    chosen = np.sort(chosen)
    return {
        "images": run_state.x_test[chosen],
        "true_labels": run_state.y_test[chosen],
        "teacher_predictions": teacher_predictions[chosen],
        "student_predictions": student_predictions[chosen],
        "class_names": list(run_state.dataset.class_names),
    }


def run(
    dataset="fashion_mnist",
    preset="quick",
    output=None,
    arms=None,
    fresh=False,
    verbose=None,
    log=print,
):
    """Runs the benchmark and writes results.json, results.md and plots.

    Args:
        dataset: `"fashion_mnist"` (offline) or a tfds image dataset name.
            Defaults to `"fashion_mnist"`.
        preset: `"smoke"`, `"quick"` or `"full"`. Defaults to `"quick"`.
        output: Output directory. Defaults to
            `benchmarks/results/<dataset>-<preset>`.
        arms: Arm ids to run (the teacher is added when a student arm needs
            it). Defaults to all of `ALL_ARMS`.
        fresh: Ignore finished arms of an earlier run. Defaults to `False`
            (resume).
        verbose: Keras verbosity for the teacher and AutoKeras. Defaults to
            `2` (one line per epoch) except in the smoke preset (`0`).
        log: Where progress lines go. Defaults to `print`.

    Returns:
        The results dict (see `benchmarks.schema`).
    """
    from benchmarks import plots, report

    preset = presets.get_preset(preset)
    arm_ids = _check_arms(arms)
    output = pathlib.Path(output or default_output(dataset, preset.name))
    verbose = (0 if preset.name == "smoke" else 2) if verbose is None else verbose
    store = store_lib.ResultStore(output, fresh=fresh)
    log(f"benchmark: {dataset}, preset {preset.name}, output {output}")
    data = tfkd.data.load(
        dataset,
        batch_size=preset.batch_size,
        train_examples=preset.train_examples,
        seed=0,
    )
    state = _Run(data, preset, store, verbose, log)
    records = {}
    if "teacher" in arm_ids:
        records["teacher"] = state.teacher_record()
    student_arms = [a for a in arm_ids if a in arms_lib.STUDENT_ARMS]
    if student_arms:
        records.update(state.student_records(student_arms))
    if "autokeras" in arm_ids:
        records["autokeras"] = state.autokeras_record()

    results = {
        "schema_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "dataset": dataset,
        "preset": preset.name,
        "environment": environment.describe(),
        "config": {**preset.to_dict(), "num_examples": data.num_examples,
                   "test_examples_evaluated": int(len(state.y_test))},
        "class_names": list(data.class_names),
        "arms": {arm_id: _finish_arm(records[arm_id]) for arm_id in records},
    }
    results["derived"] = report.derive(results)
    plot_files = plots.write_all_plots(
        results, output, grid=_grid(state, records, preset.grid_images)
    )
    report.write_report(results, output, plot_files=plot_files)
    log(f"benchmark: wrote {output / 'results.md'}")
    return results
