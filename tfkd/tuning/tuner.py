"""`search`: a keras-tuner search over T, α (and learning rate) for KD.

The objective is the one users care about, the distilled student's
validation accuracy; a trial is one full distillation run of a fresh
student with the trial's hyper-parameters. keras-tuner does the search
itself (proposals, bookkeeping, resuming from its project directory); this
module adds what a distillation search needs on top: the teacher run once
instead of once per trial, a shared student init, a time budget, one
summary line per trial, and the results written as `tuning.json` and a
T x α heatmap.
"""

import dataclasses
import json
import math
import numbers
import os
import time

import keras
import keras_tuner

from tfkd.distiller import Distiller
from tfkd.tuning import budget as budget_lib
from tfkd.tuning import heatmap as heatmap_lib
from tfkd.tuning import hypermodel as hypermodel_lib
from tfkd.tuning import memory_cache
from tfkd.tuning import result as result_lib
from tfkd.utils import files
from tfkd.utils import validation

#: The metric a search maximizes: the student's validation accuracy.
OBJECTIVE = "val_accuracy"
#: The settings file that lets a later call resume only the same search.
SETTINGS_NAME = "tfkd_search.json"
# Settings that may change between sessions of one search.
_RESUMABLE_CHANGES = ("max_trials", "max_seconds", "project_dir")


class DistillationTuner(keras_tuner.Tuner):
    """A keras-tuner `Tuner` whose trials are distillation runs.

    Compared with `keras_tuner.Tuner`, each trial: clears the Keras session
    and re-seeds (same seed every trial, so trials differ only by their
    hyper-parameters), trains on `train_data` (a dataset, or a
    `TeacherLogitsInMemory` turned into a fresh pipeline per trial) and
    scores the **last** epoch's `val_accuracy`: the student one ships is the
    last epoch's, not the best epoch picked on the validation set. No model
    is checkpointed per trial (the result of a search is its
    hyper-parameters; retrain the student with them), which also keeps a
    large teacher's weights from being written once per trial.

    Args:
        hypermodel: A `DistillationHyperModel`.
        oracle: A keras-tuner oracle, typically from `budget.ORACLES`.
        train_data: A `tf.data.Dataset` of training batches, or a
            `TeacherLogitsInMemory`, or a callable with no arguments that
            returns one of these (called at the first trial, so a finished
            search that is reloaded does not compute it).
        seed: Seed set before every trial. Defaults to `0`.
        log: Called with one summary line per trial, or `None`. Defaults to
            `print`.
        on_trial_done: Called with the tuner after every trial (used to
            write partial results), or `None`. Defaults to `None`.
        **kwargs: Passed on to `keras_tuner.Tuner` (`directory`,
            `project_name`, `overwrite`, ...).

    Example (what `search` does, for a custom oracle):

    >>> oracle = keras_tuner.oracles.RandomSearchOracle(
    ...     objective=keras_tuner.Objective("val_accuracy", "max"),
    ...     max_trials=10, seed=1)  # doctest: +SKIP
    >>> tuner = DistillationTuner(
    ...     DistillationHyperModel(build_student, teacher), oracle, train_ds,
    ...     directory="tuning", project_name="kd")  # doctest: +SKIP
    >>> tuner.search(validation_data=val_ds, epochs=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        hypermodel,
        oracle,
        train_data,
        seed=0,
        log=print,
        on_trial_done=None,
        **kwargs,
    ):
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self._train_source = train_data
        self._train_data = None
        self.seed = seed
        self._log = log
        self._on_trial_done = on_trial_done
        self._trial_start = None

    def _training_data(self):
        if self._train_data is None:
            source = self._train_source
            self._train_data = source() if callable(source) else source
        data = self._train_data
        if isinstance(data, memory_cache.TeacherLogitsInMemory):
            return data.dataset(seed=self.seed)
        return data

    def run_trial(self, trial, validation_data=None, epochs=1, verbose=1):
        """Trains one student with the trial's values; returns its metrics."""
        hp = trial.hyperparameters
        start = time.perf_counter()
        # Frees the previous trial's traced functions and restarts every
        # random stream from the same seed.
        keras.backend.clear_session()
        keras.utils.set_random_seed(self.seed)
        model = self.hypermodel.build(hp)
        history = self.hypermodel.fit(
            hp,
            model,
            self._training_data(),
            validation_data=validation_data,
            epochs=epochs,
            verbose=2 if verbose >= 2 else 0,
        )
        if OBJECTIVE not in history.history:
            raise ValueError(
                "Invalid value for argument `val_ds`. Expected validation "
                "data that yields at least one batch, so that fit reports "
                f"{OBJECTIVE!r}. Received: metrics {sorted(history.history)}"
            )
        metrics = {
            name: float(values[-1])
            for name, values in history.history.items()
            if name in (OBJECTIVE, "val_loss", "accuracy")
        }
        metrics["seconds"] = time.perf_counter() - start
        return metrics

    def on_trial_begin(self, trial):
        self._trial_start = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        budget = getattr(self.oracle, "budget", None)
        if budget is not None and self._trial_start is not None:
            budget.record_trial(time.perf_counter() - self._trial_start)
        if self._log is not None:
            self._log(self._summary_line(trial.trial_id))
        if self._on_trial_done is not None:
            self._on_trial_done(self)

    def _summary_line(self, trial_id):
        rows = result_lib.trial_table(self.oracle, math.nan)
        row = next(r for r in rows if r["trial_id"] == trial_id)
        best = result_lib.best_row(rows)
        total = self.oracle.max_trials or "?"
        number = len(self.oracle.start_order)
        values = f"T={row['temperature']:.2f} α={row['alpha']:.2f}"
        if hypermodel_lib.LEARNING_RATE in self.oracle.hyperparameters:
            values += f" lr={row['learning_rate']:.1e}"
        if row["status"] != "COMPLETED" or row["val_accuracy"] is None:
            outcome = f"{row['status'].lower()}: {row['error']}"
        else:
            outcome = (
                f"val_accuracy {row['val_accuracy']:.4f} "
                f"({row['seconds']:.1f} s)"
            )
        line = f"tuning: trial {number}/{total} {values} -> {outcome}"
        if best is not None:
            line += (
                f" · best {best['val_accuracy']:.4f} "
                f"(T={best['temperature']:.2f}, α={best['alpha']:.2f})"
            )
        return line

    def load_model(self, trial):
        raise NotImplementedError(
            "DistillationTuner saves no model per trial. Train a student "
            "with the best hyper-parameters "
            "(`TuningResult.distiller_kwargs()`)."
        )


def search(
    teacher,
    student_builder,
    train_ds,
    val_ds,
    *,
    epochs=5,
    max_trials=20,
    max_seconds=None,
    temperature_range=(1.0, 20.0),
    alpha_range=(0.0, 1.0),
    learning_rate=1e-3,
    learning_rate_range=None,
    tuner="random",
    directory="tfkd_tuning",
    project_name="distillation",
    overwrite=False,
    cache_teacher_logits=True,
    seed=0,
    verbose=1,
    log=print,
):
    """Searches the distillation temperature T and α (and learning rate).

    Each trial distils a fresh student (`student_builder()`) from the
    frozen `teacher` for `epochs` epochs with one choice of T (log scale),
    α (the weight of the hard-label loss, Hinton et al., 2015) and, if
    `learning_rate_range` is given, Adam learning rate (log scale); its
    score is the student's validation accuracy after the last epoch. Every
    trial starts from the same initial student weights and random seed, so
    that the scores differ by the hyper-parameters, not by luck of the
    init.

    The search is keras-tuner's. `tuner="random"` (the default) samples T
    and the learning rate log-uniformly and α uniformly. `tuner="bayesian"`
    is keras-tuner's Gaussian-process Bayesian optimization; it needs
    scipy (`pip install scipy`), which tfkd does not install, and it spends
    its first 3 trials per tuned hyper-parameter on random proposals
    anyway, so it only starts to pay off beyond about 10 trials. On two or
    three continuous hyper-parameters and the 10-20 trials a CPU budget
    allows, random search is nearly as good (Bergstra & Bengio, 2012) and
    needs nothing extra.

    By default the teacher runs once, before the first trial, and its
    logits are kept in memory (`cache_teacher_logits=True`); each trial
    then costs only the student's training, which for a teacher much larger
    than its student makes a search many times faster, with the same soft
    targets. This needs the training data to fit in memory and to carry no
    random augmentation (one augmented view would be frozen); otherwise
    pass `cache_teacher_logits=False` and the teacher runs in every step.

    Progress: keras-tuner prints each trial (`verbose=1`), and `log` gets
    one summary line per trial. Budget: the search stops after
    `max_trials` trials in total, or when the next trial is not expected
    to finish within `max_seconds` of this call (no trial is cut short;
    see `tfkd.tuning.budget`). Resuming: the search lives in
    `directory/project_name`; calling `search` again with the same
    arguments continues it (keras-tuner reloads every finished trial and
    retries an interrupted one), raising `max_trials` extends it, and
    `overwrite=True` starts over. `tuning.json` (best values and every
    trial) is rewritten atomically after each trial, and the heatmap
    `tuning_heatmap.png` at the end, both in `directory/project_name`.

    Args:
        teacher: The trained teacher `keras.Model` (outputs logits or
            probabilities). It is frozen (`teacher.trainable = False`).
        student_builder: A callable with no arguments returning a new,
            uncompiled student `keras.Model` that outputs logits.
        train_ds: Training `tf.data.Dataset` of `(inputs, labels)` batches.
        val_ds: Validation `tf.data.Dataset` of `(inputs, labels)` batches.
        epochs: Epochs of each trial. Defaults to `5`.
        max_trials: Trials in total, counting those of earlier sessions of
            the same search. Defaults to `20`.
        max_seconds: Time budget of this call in seconds, or `None` for no
            limit. Defaults to `None`.
        temperature_range: `(low, high)` of T, `0 < low < high`. Defaults
            to `(1.0, 20.0)`.
        alpha_range: `(low, high)` of α, `0 <= low < high <= 1`. Defaults
            to `(0.0, 1.0)`.
        learning_rate: The Adam learning rate when it is not tuned.
            Defaults to `1e-3`.
        learning_rate_range: `(low, high)` to tune the learning rate too,
            e.g. `(1e-4, 1e-2)`, or `None`. Defaults to `None`.
        tuner: `"random"` or `"bayesian"` (needs scipy). Defaults to
            `"random"`.
        directory: Where searches are kept. Defaults to `"tfkd_tuning"`.
        project_name: This search's sub-directory. Defaults to
            `"distillation"`.
        overwrite: Delete an existing search of that name and start over.
            Defaults to `False` (resume it).
        cache_teacher_logits: Run the teacher once and keep its logits in
            memory (see above). Defaults to `True`.
        seed: Seed of the student init, the data order and the search's
            proposals. Defaults to `0`.
        verbose: 0: quiet; 1: keras-tuner's per-trial report; 2: also one
            line per epoch. Defaults to `1`.
        log: Called with one summary line per trial (and a line when the
            teacher's logits are computed), or `None`. Defaults to `print`.

    Returns:
        A `TuningResult`: the best `temperature`, `alpha`,
        `learning_rate` and `val_accuracy`, every trial, and the paths of
        `tuning.json` and the heatmap.

    Raises:
        ImportError: for `tuner="bayesian"` without scipy installed.
        TypeError: for an argument of the wrong type (a teacher or student
            that is not a `keras.Model`, a dataset that is not a
            `tf.data.Dataset`...).
        ValueError: for an argument out of range, teacher and student that
            cannot work together, or an existing project searched with
            other settings (the message says what differs). All are raised
            before any training.
        RuntimeError: if no trial finished (the message carries the first
            trial's error).

    Example:

    >>> import keras, numpy as np, tensorflow as tf, tempfile, tfkd
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> y = (x[:, 0] > 0.5).astype("int32")
    >>> data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    >>> def student():
    ...     return keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> teacher = student()
    >>> result = tfkd.tuning.search(
    ...     teacher, student, data, data, epochs=1, max_trials=2,
    ...     directory=tempfile.mkdtemp(), verbose=0, log=None)
    >>> 1.0 <= result.temperature <= 20.0 and 0.0 <= result.alpha <= 1.0
    True
    """
    options = SearchOptions(
        epochs=epochs,
        max_trials=max_trials,
        max_seconds=max_seconds,
        tuner=tuner,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        cache_teacher_logits=cache_teacher_logits,
        seed=seed,
        verbose=verbose,
        log=log,
    )
    _check_search_data(teacher, student_builder, train_ds, val_ds)
    options.check()
    # The hypermodel checks the ranges and the learning rate.
    hypermodel = hypermodel_lib.DistillationHyperModel(
        student_builder,
        teacher=None if cache_teacher_logits else teacher,
        temperature_range=temperature_range,
        alpha_range=alpha_range,
        learning_rate=learning_rate,
        learning_rate_range=learning_rate_range,
    )
    hypermodel.initial_weights = _probe_initial_weights(
        teacher, student_builder, options.seed
    )
    settings = options.settings(hypermodel)
    if not overwrite:
        _check_resumable(options.project_dir, settings)
    return _run_search(teacher, train_ds, val_ds, hypermodel, settings, options)


@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """How `search` runs: its budget, where it lives, what it prints.

    The search space (T, α and learning-rate ranges) belongs to the
    `DistillationHyperModel`; these are the rest of `search`'s keyword
    arguments, with the same meaning and defaults.
    """

    epochs: int = 5
    max_trials: int = 20
    max_seconds: float | None = None
    tuner: str = "random"
    directory: str = "tfkd_tuning"
    project_name: str = "distillation"
    overwrite: bool = False
    cache_teacher_logits: bool = True
    seed: int = 0
    verbose: int = 1
    log: object = print

    @property
    def project_dir(self):
        """`directory/project_name`, where the search is kept."""
        return os.path.join(os.fspath(self.directory), self.project_name)

    def check(self):
        """Raises `TypeError`/`ValueError` for any option out of place."""
        validation.check_positive_int("epochs", self.epochs)
        validation.check_positive_int("max_trials", self.max_trials)
        if self.max_seconds is not None:
            validation.check_positive_float(
                "max_seconds", self.max_seconds, expected="a float > 0 or None"
            )
        validation.check_choice("tuner", self.tuner, tuple(budget_lib.ORACLES))
        if self.tuner == "bayesian":
            budget_lib.check_bayesian_available()
        if not isinstance(self.seed, numbers.Integral) or isinstance(
            self.seed, bool
        ):
            raise validation.invalid_type("seed", "an int >= 0", self.seed)
        if self.seed < 0:
            raise validation.invalid_value("seed", "an int >= 0", self.seed)
        validation.check_choice("verbose", self.verbose, (0, 1, 2))
        if not isinstance(self.cache_teacher_logits, bool):
            raise validation.invalid_type(
                "cache_teacher_logits", "a bool", self.cache_teacher_logits
            )
        if not isinstance(self.project_name, str):
            raise validation.invalid_type(
                "project_name", "a non-empty directory name", self.project_name
            )
        if not self.project_name.strip():
            raise validation.invalid_value(
                "project_name", "a non-empty directory name", self.project_name
            )

    def settings(self, hypermodel):
        """What a later call must repeat to resume this search."""
        ranges = hypermodel.learning_rate_range
        return {
            "tuner": self.tuner,
            "objective": f"{OBJECTIVE} (student, last epoch)",
            "epochs": self.epochs,
            "max_trials": self.max_trials,
            "max_seconds": self.max_seconds,
            "temperature_range": list(hypermodel.temperature_range),
            "alpha_range": list(hypermodel.alpha_range),
            "learning_rate": hypermodel.learning_rate,
            "learning_rate_range": None if ranges is None else list(ranges),
            "cache_teacher_logits": self.cache_teacher_logits,
            "seed": int(self.seed),
            "project_dir": self.project_dir,
        }


def _check_search_data(teacher, student_builder, train_ds, val_ds):
    """Raises `TypeError` for models or datasets of the wrong kind."""
    import tensorflow as tf

    validation.check_keras_model("teacher", teacher)
    hypermodel_lib.check_student_builder(student_builder)
    for name, value in (("train_ds", train_ds), ("val_ds", val_ds)):
        if not isinstance(value, tf.data.Dataset):
            raise validation.invalid_type(
                name, "a `tf.data.Dataset` of (inputs, labels) batches", value
            )


def _probe_initial_weights(teacher, student_builder, seed):
    """The initial weights every trial's student starts from.

    Building one student up front also checks that teacher and student can
    work together: a clear error now, not a failed trial later.
    """
    keras.utils.set_random_seed(seed)
    probe = student_builder()
    validation.check_keras_model("student_builder()", probe)
    Distiller(teacher=teacher, student=probe)
    return probe.get_weights()


def _run_search(teacher, train_ds, val_ds, hypermodel, settings, options):
    """Runs the checked search; returns its `TuningResult`."""
    project_dir, log = options.project_dir, options.log
    oracle = budget_lib.ORACLES[options.tuner](
        objective=keras_tuner.Objective(OBJECTIVE, "max"),
        max_trials=options.max_trials,
        # keras-tuner reads seed 0 as "no seed" and picks a random one.
        seed=int(options.seed) + 1,
    )
    oracle.budget = budget_lib.TimeBudget(options.max_seconds)

    def train_data():
        if not options.cache_teacher_logits:
            return train_ds
        if log is not None:
            log("tuning: running the teacher once over the training data")
        return memory_cache.TeacherLogitsInMemory.compute(teacher, train_ds)

    def write_partial(distillation_tuner):
        rows = result_lib.trial_table(
            distillation_tuner.oracle, hypermodel.learning_rate
        )
        best = result_lib.best_row(rows)
        if best is not None:
            _result(
                rows, best, settings, oracle.budget, None, None, project_dir
            )

    search_tuner = DistillationTuner(
        hypermodel,
        oracle,
        train_data,
        seed=int(options.seed),
        log=log,
        on_trial_done=write_partial,
        directory=os.fspath(options.directory),
        project_name=options.project_name,
        overwrite=options.overwrite,
    )
    # Written after the tuner, whose `overwrite=True` empties the directory.
    files.write_json_atomically(
        os.path.join(project_dir, SETTINGS_NAME), settings
    )
    start = time.perf_counter()
    search_tuner.search(
        validation_data=val_ds, epochs=options.epochs, verbose=options.verbose
    )
    seconds = time.perf_counter() - start

    rows = result_lib.trial_table(search_tuner.oracle, hypermodel.learning_rate)
    best = result_lib.best_row(rows)
    if best is None:
        errors = [row["error"] for row in rows if row["error"]]
        raise RuntimeError(
            f"No trial of the search in {project_dir} finished"
            + (f"; the first error: {errors[0]}" if errors else ".")
        )
    heatmap_path = os.path.join(project_dir, result_lib.HEATMAP_NAME)
    try:
        heatmap_lib.plot_heatmap(
            rows, heatmap_path, temperature_range=hypermodel.temperature_range
        )
    except ImportError:
        heatmap_path = None
        if log is not None:
            log("tuning: matplotlib is not installed, no heatmap written")
    return _result(
        rows, best, settings, oracle.budget, seconds, heatmap_path, project_dir
    )


def _result(rows, best, settings, budget, seconds, heatmap_path, project_dir):
    """Builds the `TuningResult` and writes `tuning.json` atomically."""
    json_path = os.path.join(project_dir, result_lib.JSON_NAME)
    result = result_lib.TuningResult(
        temperature=best["temperature"],
        alpha=best["alpha"],
        learning_rate=best["learning_rate"],
        val_accuracy=best["val_accuracy"],
        best_trial_id=best["trial_id"],
        trials=tuple(rows),
        settings=dict(settings),
        budget_exhausted=bool(budget.exhausted),
        search_seconds=float(budget.elapsed() if seconds is None else seconds),
        json_path=json_path,
        heatmap_path=heatmap_path,
    )
    files.write_json_atomically(json_path, result.to_dict())
    return result


def _check_resumable(project_dir, settings):
    """Raises if `project_dir` holds a search with other settings."""
    path = os.path.join(project_dir, SETTINGS_NAME)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
    except (OSError, json.JSONDecodeError):
        return  # unreadable: keras-tuner's own reload decides
    differences = [
        f"{key}={previous.get(key)!r} (now {value!r})"
        for key, value in settings.items()
        if key not in _RESUMABLE_CHANGES and previous.get(key) != value
    ]
    if differences:
        raise ValueError(
            "Invalid value for argument `project_name`. Expected a new "
            "project, or the settings of the existing one to resume it. "
            f"Received: project_name={os.path.basename(project_dir)!r}, "
            f"an existing search in {project_dir} with "
            + ", ".join(differences)
            + ". Pass overwrite=True to start over, or another project_name."
        )
