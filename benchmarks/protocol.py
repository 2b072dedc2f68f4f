"""The one protocol of every experiment: data, teacher, fair student arms.

1. `load_data(preset)`: the preset's class-balanced subsets as arrays
   (`Data`); the teacher may see more examples than the students
   (`Preset.teacher_examples`), the rest being an unlabelled pool.
   `Setup.with_labels(count)` keeps `count` of the students' examples
   labelled and moves the rest to the pool: the few-labels setting, where
   the students' epochs run over a *transfer set* (labelled examples, then
   the pool) that only arms fed teacher logits read in full.
2. `train_teacher(setup)`: trains the teacher once and keeps it under a
   fingerprint of everything that shapes it, so a rerun (or another preset
   with the same teacher) loads it instead.
3. `train_arms(setup, arms, seed)`: builds every student arm from ONE
   initial weight set per seed and trains the arms interleaved, one epoch
   each in a rotating order, so their epoch times are measured under the
   same machine conditions (these machines drift by tens of percent within
   minutes). Every arm sees the same batches: one seeded permutation per
   (seed, epoch), `epoch_order`, from which each arm makes its epoch's
   dataset; no dataset draws an order of its own.
4. `run_seeds(setup, arms, evaluate)`: does that for every seed of the
   preset, saving each finished (arm, seed) in the run's `ResultStore` at
   once, so a rerun resumes where the last one stopped.

An arm (`Arm`) is three small functions: make the trainer of a fresh
student, make its dataset for one epoch from the shared order, fit one
epoch. `benchmarks.arms` has the usual ones.
"""

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import tfkd
from benchmarks import measure
from benchmarks import models
from benchmarks.orders import epoch_order  # noqa: F401 (the protocol's order)
from benchmarks import stats


@dataclasses.dataclass
class Data:
    """One preset's data as arrays (images float32 in [0, 1]).

    Attributes:
        name: Dataset name.
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        class_names: Names of the classes.
        x_teacher: The teacher's training images; `y_teacher` its labels.
        x_train: The students' labelled images (among the teacher's);
            `y_train` their labels.
        x_pool: The teacher's other images, unlabelled for the students.
        x_val: Validation images; `y_val` their labels.
        x_test: Test images evaluated; `y_test` their labels.
    """

    name: str
    input_shape: tuple
    num_classes: int
    class_names: tuple
    x_teacher: np.ndarray
    y_teacher: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    x_pool: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_examples(self):
        """Examples per split."""
        return {"train": len(self.y_train), "teacher": len(self.y_teacher),
                "pool": len(self.x_pool), "validation": len(self.y_val),
                "test": len(self.y_test)}


def arrays(dataset, limit=None):
    """A `tf.data` pipeline of `(x, y)` batches as two NumPy arrays."""
    images, labels, count = [], [], 0
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
        count += len(labels[-1])
        if limit is not None and count >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def load_data(preset, dataset=None):
    """The preset's data (`Data`); `dataset` overrides `preset.dataset`.

    Raises:
        RuntimeError: when a dataset other than Fashion-MNIST cannot be
            loaded (no network, tensorflow-datasets missing), saying what
            to do instead.
    """
    name = dataset or preset.dataset
    teacher_examples = preset.teacher_examples or preset.train_examples
    if preset.train_examples and teacher_examples:
        teacher_examples = max(teacher_examples, preset.train_examples)
    loaded = _load(name, preset, teacher_examples)
    x_teacher, y_teacher = arrays(loaded.train)
    student = np.arange(len(y_teacher))
    if preset.train_examples is not None and preset.train_examples < len(y_teacher):
        student = tfkd.data.balanced_subset(y_teacher, preset.train_examples, seed=0)
    pool = np.setdiff1d(np.arange(len(y_teacher)), student)
    x_val, y_val = arrays(loaded.validation, preset.validation_examples)
    x_test, y_test = arrays(loaded.test, preset.test_examples)
    return Data(
        name=name, input_shape=loaded.input_shape, num_classes=loaded.num_classes,
        class_names=tuple(loaded.class_names), x_teacher=x_teacher,
        y_teacher=y_teacher, x_train=x_teacher[student], y_train=y_teacher[student],
        x_pool=x_teacher[pool], x_val=x_val, y_val=y_val, x_test=x_test,
        y_test=y_test,
    )


def _load(name, preset, train_examples):
    try:
        return tfkd.data.load(
            name, batch_size=256, train_examples=train_examples,
            validation_fraction=preset.validation_fraction, seed=0)
    except Exception as error:
        if name == "fashion_mnist":
            raise
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(
            f"Could not load the dataset {name!r} ({type(error).__name__}: "
            f"{first_line}). Datasets other than 'fashion_mnist' come from "
            "tensorflow-datasets, which downloads and prepares them on first "
            "use: that needs internet access (once; tfds then reads "
            "~/tensorflow_datasets). Offline, use the default 'fashion_mnist'."
        ) from error


def gather_batches(order, batch_size, tensors):
    """Batches of `tensors` (a nest of tensors, one row per example) in `order`.

    Returns:
        A `tf.data.Dataset` of the nest, `batch_size` rows each, in `order`;
        it draws nothing at random, so iterating it twice gives the same.
    """
    indices = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64))

    def gather(rows):  # rows: (batch,)
        return tf.nest.map_structure(lambda t: tf.gather(t, rows), tensors)

    return indices.batch(batch_size).map(gather).prefetch(tf.data.AUTOTUNE)


class Setup:
    """What the arms of one run share: preset, data, teacher, store, log.

    Args:
        preset: The `Preset`.
        data: The `Data`.
        store: The run's `benchmarks.store.ResultStore`.
        log: Where progress lines go. Defaults to `print`.
        validate: Evaluate every arm on the validation split after each
            epoch (for training curves). Defaults to `False`.
        verbose: Keras verbosity of the teacher's training. Defaults to `0`.
    """

    def __init__(self, preset, data, store, log=print, validate=False, verbose=0):
        self.preset = preset
        self.data = data
        self.store = store
        self.log = log
        self.validate = validate
        self.verbose = verbose
        self.teacher = None
        self._tensors = {}
        self.teacher_cache = None
        self.cache_build_seconds = None
        #: Seconds of each teacher pass of `precomputed_targets`, by the
        #: teacher layers it stored.
        self.teacher_pass_seconds = {}
        #: Whether the students' epochs also run over `data.x_pool`.
        self.over_pool = False
        self.cache_name = "teacher-cache"

    def with_preset(self, preset):
        """A view of this setup with another preset (same data, teacher)."""
        view = copy.copy(self)
        view.preset = preset
        return view

    def with_labels(self, count):
        """A view in which the students have only `count` labels.

        `count` of the students' labelled examples stay labelled (a
        class-balanced choice, seed 0; all of them when `count` is at
        least their number), the others join the unlabelled pool ahead of
        its own images, and the students' epochs run over the whole
        *transfer set*: the labelled rows, then the pool rows (see
        `epoch_size`). The teacher and the teacher's data are unchanged;
        the view makes its own tensors and teacher cache.

        Returns:
            A `Setup`.
        """
        data = self.data
        keep = np.arange(len(data.y_train))
        if count < len(keep):
            keep = tfkd.data.balanced_subset(data.y_train, count, seed=0)
        rest = np.setdiff1d(np.arange(len(data.y_train)), keep)
        view = copy.copy(self)
        view.data = dataclasses.replace(
            data, x_train=data.x_train[keep], y_train=data.y_train[keep],
            x_pool=np.concatenate([data.x_train[rest], data.x_pool]))
        view.over_pool = True
        view._tensors = {}
        view.teacher_pass_seconds = {}
        view.teacher_cache = view.cache_build_seconds = None
        view.cache_name = f"teacher-cache-{len(keep)}-labelled"
        return view

    def epoch_size(self):
        """Rows of the shared per-epoch order (`epoch_order`).

        The labelled examples; with `over_pool` (`with_labels`), also the
        pool, rows `len(y_train)` on. Arms that read labels only cycle
        through the labelled examples for the pool's rows
        (`labelled_batches`), so every arm takes the same number of steps.
        """
        pool = len(self.data.x_pool) if self.over_pool else 0
        return len(self.data.y_train) + pool

    def epoch_inputs(self):
        """The images of the `epoch_size()` rows, as one tensor."""
        if not self.over_pool:
            return self.tensor("x_train", lambda: self.data.x_train)
        return self.tensor("x_transfer", lambda: np.concatenate(
            [self.data.x_train, self.data.x_pool]))

    def tensor(self, name, make):
        """`make()` as a tensor (or a nest of them), made once per run under `name`."""
        if name not in self._tensors:
            self._tensors[name] = tf.nest.map_structure(tf.convert_to_tensor, make())
        return self._tensors[name]

    def labelled(self):
        """`(x_train, y_train)` as tensors."""
        return (self.tensor("x_train", lambda: self.data.x_train),
                self.tensor("y_train", lambda: self.data.y_train))

    def validation_data(self):
        """The validation split, batched in a fixed order (or `None`)."""
        if not self.validate:
            return None
        return tf.data.Dataset.from_tensor_slices(
            (self.data.x_val, self.data.y_val)).batch(self.preset.batch_size)

    def build_student(self, width=None):
        """A new `student_cnn` of `width` (default: the preset's)."""
        return models.student_cnn(self.data.input_shape, self.data.num_classes,
                                  width=width or self.preset.student_width)

    def teacher_logits(self):
        """The teacher's logits on the epoch's rows, once, in memory.

        The rows are `x_train` (then the pool with `over_pool`).
        """
        def predict():
            start = time.perf_counter()
            logits = self.teacher.predict(self.epoch_inputs(), batch_size=256,
                                          verbose=0)
            self.log(f"  teacher logits for {len(logits)} examples "
                     f"({time.perf_counter() - start:.1f} s)")
            return logits
        return self.tensor("teacher_logits", predict)

    def precomputed_targets(self, distiller, labels):
        """`distiller.precompute_targets` on the epoch's rows, as tensors.

        Computed once per set of teacher layers (and row indices) that a
        distiller's terms read, and shared by every arm and seed that read
        the same: the teacher runs once over the rows in their stored
        order, so row `i` of the targets is row `i` of `epoch_inputs()`.

        Args:
            distiller: A `tfkd.Distiller` with the setup's teacher.
            labels: The epoch's labels (-1 for pool rows).

        Returns:
            The targets dict, its arrays as tensors.
        """
        layers = tuple(sorted(distiller.teacher_feature_shapes))
        with_index = any(getattr(term, "needs_example_indices", False)
                         for term in distiller.extra_losses)
        key = ("precomputed_targets", layers, with_index)
        if key not in self._tensors:
            start = time.perf_counter()
            targets = distiller.precompute_targets(
                self.epoch_inputs(), labels, batch_size=256, verbose=0)
            seconds = time.perf_counter() - start
            name = ",".join(("logits",) + layers + (("index",) if with_index else ()))
            self.teacher_pass_seconds[name] = seconds
            self.log(f"  teacher outputs for {self.epoch_size()} examples, "
                     f"layers {list(layers) or 'none'} ({seconds:.1f} s)")
            self._tensors[key] = tf.nest.map_structure(tf.convert_to_tensor, targets)
        return self._tensors[key]

    def cached_teacher_logits(self):
        """The teacher's logits on the epoch's rows, from a `tfkd.TeacherCache`.

        The cache is built once from the rows in their stored order
        (`x_train`, then the pool with `over_pool`, stored with label 0: only
        its logits are read), so its row `i` is row `i`; the arms then read
        its logits in the shared epoch order.
        """
        def build():
            start = time.perf_counter()
            labels = np.zeros(self.epoch_size(), self.data.y_train.dtype)
            labels[:len(self.data.y_train)] = self.data.y_train
            ordered = tf.data.Dataset.from_tensor_slices(
                (self.epoch_inputs(), labels)).batch(self.preset.batch_size)
            self.teacher_cache = tfkd.TeacherCache.build(
                self.teacher, ordered, path=self.store.directory / self.cache_name,
                overwrite=True, verbose=0)
            self.cache_build_seconds = time.perf_counter() - start
            return self.teacher_cache.read()[2]
        return self.tensor("cached_teacher_logits", build)


def start(experiment, presets, preset, *, seeds=None, dataset=None, output=None,
          fresh=False, log=print, verbose=0, validate=False):
    """Starts a run: resolves the preset, opens the store, loads the data.

    Args:
        experiment: The experiment's name (progress lines, default output).
        presets: The experiment's `PRESETS`.
        preset: A name of `presets`, or a `Preset`.
        seeds: Seeds instead of the preset's, or `None`.
        dataset: Dataset instead of the preset's, or `None`.
        output: Output directory, or `None` for
            `benchmarks/runs/<experiment>-<preset>`.
        fresh: Forget the pieces of an earlier run. Defaults to `False`.
        log: Where progress lines go. Defaults to `print`.
        verbose: Keras verbosity of long trainings. Defaults to `0`.
        validate: As `Setup`'s. Defaults to `False`.

    Returns:
        The run's `Setup`.
    """
    from benchmarks import presets as presets_lib
    from benchmarks import results as results_lib
    from benchmarks import store as store_lib

    preset = presets_lib.get_preset(presets, preset)
    if seeds is not None:
        preset = preset.replace(seeds=presets_lib.check_seeds(seeds))
    dataset = dataset or preset.dataset
    output = output or results_lib.default_output(experiment, preset.name, [dataset])
    store = store_lib.ResultStore(output, fresh=fresh)
    results_lib.git_provenance()  # the code this run starts from
    log(f"{experiment}: {dataset}, preset {preset.name}, output {output}")
    return Setup(preset, load_data(preset, dataset), store, log, validate, verbose)


def teacher_fingerprint(setup, width, dense_units, epochs):
    """A short hash of everything that shapes the teacher."""
    preset, data = setup.preset, setup.data
    description = {
        "architecture": "teacher_cnn", "width": width, "dense_units": dense_units,
        "epochs": epochs, "learning_rate": preset.learning_rate,
        "batch_size": preset.batch_size, "dataset": data.name,
        "examples": len(data.y_teacher),
        "validation_fraction": preset.validation_fraction,
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_teacher(setup, width=None, dense_units=None, epochs=None):
    """The run's teacher: loaded by fingerprint, or trained and saved.

    Sets `setup.teacher`. Only the weights of an uncompiled model are
    kept: the architecture follows from the fingerprinted settings, and a
    compiled model's file would also carry Adam's two slots per weight.

    Args:
        setup: The run's `Setup`.
        width: Width of `teacher_cnn`. Defaults to the preset's.
        dense_units: Units of its dense head. Defaults to the preset's.
        epochs: Training epochs. Defaults to the preset's.

    Returns:
        `(teacher, record)`; the record has `accuracy`, `parameters`,
        `train_seconds`, `epoch_seconds_raw`, `history`, `width` and
        `fingerprint`.
    """
    preset, data, store = setup.preset, setup.data, setup.store
    width = width or preset.teacher_width
    dense_units = dense_units if dense_units is not None else preset.teacher_dense_units
    epochs = preset.teacher_epochs if epochs is None else epochs
    fingerprint = teacher_fingerprint(setup, width, dense_units, epochs)
    key = f"teacher-{fingerprint}"
    path = store.models / f"{key}.weights.h5"
    keras.utils.set_random_seed(0)
    teacher = models.teacher_cnn(data.input_shape, data.num_classes,
                                 width=width, dense_units=dense_units)
    record = store.load(key)
    if record is not None and record.get("status") == "done" and path.exists():
        setup.log(f"teacher {fingerprint}: loaded from an earlier run")
        teacher.load_weights(path)
        setup.teacher = teacher
        return teacher, record
    setup.log(f"teacher {fingerprint}: teacher_cnn(width={width}), {epochs} "
              f"epochs on {len(data.y_teacher)} examples")
    compile_classifier(teacher, preset)
    tensors = (setup.tensor("x_teacher", lambda: data.x_teacher),
               setup.tensor("y_teacher", lambda: data.y_teacher))
    timer, history, start = measure.EpochTimer(), {}, time.perf_counter()
    for epoch in range(epochs):
        order = epoch_order(0, epoch, len(data.y_teacher))
        fitted = teacher.fit(
            gather_batches(order, preset.batch_size, tensors),
            validation_data=setup.validation_data(), initial_epoch=epoch,
            epochs=epoch + 1, shuffle=False, callbacks=[timer],
            verbose=setup.verbose)
        _extend(history, fitted.history)
    accuracy, _ = measure.accuracy_and_predictions(teacher, data.x_test, data.y_test)
    record = {"status": "done", "accuracy": accuracy, "fingerprint": fingerprint,
              "parameters": int(teacher.count_params()), "width": width,
              "train_seconds": time.perf_counter() - start, "epochs": epochs,
              "epoch_seconds_raw": timer.seconds, "history": history}
    teacher.save_weights(path)
    store.save(key, record)
    setup.log(f"teacher {fingerprint}: test accuracy {accuracy:.4f}")
    setup.teacher = teacher
    return teacher, record


def compile_classifier(model, preset, run_eagerly=False, optimizer=None):
    """Compiles a logits classifier with Adam (or `optimizer`) and accuracy.

    `optimizer` defaults to Adam at the preset's constant learning rate
    (the teacher's); students get `student_optimizer(setup)`.
    """
    model.compile(optimizer or keras.optimizers.Adam(preset.learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], run_eagerly=run_eagerly)
    return model


def training_steps(setup):
    """Optimizer steps of one student arm: epochs x batches per epoch."""
    preset = setup.preset
    return preset.student_epochs * math.ceil(setup.epoch_size() / preset.batch_size)


def student_optimizer(setup):
    """A student's Adam, at the preset's `learning_rate_schedule`.

    `"constant"`: the preset's learning rate throughout. `"cosine"`: cosine
    decay from it to 0 over the arm's `training_steps` (Loshchilov &
    Hutter, 2017), the same schedule for every arm of a run, since they
    all take the same number of steps.
    """
    preset = setup.preset
    rate = preset.learning_rate
    if preset.learning_rate_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            rate, decay_steps=training_steps(setup))
    return keras.optimizers.Adam(rate)


def labelled_batches(setup, order):
    """An epoch of `(x, y)` batches of the labelled examples in `order`.

    Rows past the labelled examples (the pool's, with `over_pool`) are
    labelled example `row % len(y_train)`: an arm that can only use
    labels cycles through them, as many steps as an arm that reads the
    pool, with the labelled rows where the other arms have them.
    """
    rows = np.asarray(order) % len(setup.data.y_train)
    return gather_batches(rows, setup.preset.batch_size, setup.labelled())


def fit_one_epoch(setup, trainer, dataset, epoch, callbacks):
    """`trainer.fit` for epoch `epoch` only; returns its history dict."""
    return trainer.fit(dataset, validation_data=setup.validation_data(),
                       initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                       callbacks=callbacks, verbose=0).history


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way of training the student.

    Attributes:
        arm_id: Identifier in the results.
        label: Human name in the reports.
        make_trainer: `(setup, student) -> keras.Model`: the compiled
            model whose `fit` trains `student` (the student itself, a
            `tfkd.Distiller`, ...). `setup.teacher` is trained by then.
        epoch_data: `(setup, order) -> tf.data.Dataset`: the epoch's data
            in the shared `order`. Defaults to `labelled_batches`.
        fit_epoch: `(setup, trainer, dataset, epoch, callbacks) -> dict`:
            trains one epoch, returns its history. Defaults to
            `fit_one_epoch`.
    """

    arm_id: str
    label: str
    make_trainer: Callable
    epoch_data: Callable = labelled_batches
    fit_epoch: Callable = fit_one_epoch


@dataclasses.dataclass
class ArmRun:
    """One arm of one seed being trained (filled in by `train_arms`)."""

    arm: Arm
    student: object
    trainer: object
    history: dict = dataclasses.field(default_factory=dict)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    epoch_cpu_seconds: list = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0


def initial_weights(setup, seed):
    """The initial student weights of `seed`, shared by all its arms."""
    keras.utils.set_random_seed(seed)
    return setup.build_student().get_weights()


def prepare_arms(setup, arms, seed):
    """Fresh students with the seed's shared initial weights, in trainers.

    Returns:
        `(runs, failures)`: `ArmRun`s, and arm id -> error text for arms
        whose trainer could not be made.
    """
    weights = initial_weights(setup, seed)
    runs, failures = [], {}
    for arm in arms:
        keras.utils.set_random_seed(seed)  # e.g. connectors of feature terms
        student = setup.build_student()
        student.set_weights(weights)
        try:
            runs.append(ArmRun(arm, student, arm.make_trainer(setup, student)))
        except Exception as error:  # recorded in the results, the run goes on
            failures[arm.arm_id] = f"{type(error).__name__}: {error}"
    return runs, failures


def train_arms(setup, arms, seed, epochs=None):
    """Trains `arms` from one start, interleaved, on the same batches.

    Each epoch, every arm gets the dataset it makes from the same
    `epoch_order(seed, epoch)` and trains one epoch; the arms take turns in
    an order that rotates every epoch, so none always runs first (right
    after another arm's garbage) or last.

    Args:
        setup: The run's `Setup` (teacher trained if an arm needs it).
        arms: List of `Arm`.
        seed: Seed of the initial weights and of the batch order.
        epochs: Epochs per arm. Defaults to `preset.student_epochs`.

    Returns:
        `(runs, failures)` as `prepare_arms`, the runs trained.
    """
    epochs = setup.preset.student_epochs if epochs is None else epochs
    runs, failures = prepare_arms(setup, arms, seed)
    for epoch in range(epochs):
        order = epoch_order(seed, epoch, setup.epoch_size())
        shift = epoch % max(len(runs), 1)
        for run in runs[shift:] + runs[:shift]:
            dataset = run.arm.epoch_data(setup, order)
            timer = measure.EpochTimer()
            start = time.perf_counter()
            history = run.arm.fit_epoch(setup, run.trainer, dataset, epoch, [timer])
            run.train_seconds += time.perf_counter() - start
            run.epoch_seconds.extend(timer.seconds)
            run.epoch_cpu_seconds.extend(timer.cpu_seconds)
            _extend(run.history, history)
        setup.log(f"  seed {seed}, epoch {epoch + 1}/{epochs}: " + ", ".join(
            f"{run.arm.arm_id} {run.history.get('loss', [np.nan])[-1]:.3f}"
            for run in runs) + " (loss)")
    return runs, failures


def _extend(history, new):
    for name, values in new.items():
        history.setdefault(name, []).extend(float(v) for v in values)


def evaluate_accuracy(setup, run, seed):
    """The default per-seed evaluation: `{"accuracy"}` on the test split."""
    accuracy, _ = measure.accuracy_and_predictions(
        run.student, setup.data.x_test, setup.data.y_test)
    return {"accuracy": accuracy}


def record_key(arm_id, seed, prefix=""):
    """The store key of one arm of one seed."""
    return f"{prefix}{arm_id}__seed{seed}"


def is_done(record, arm_id=None):
    """Whether a stored record is a finished piece of work."""
    return record is not None and record.get("status") == "done"


def run_seeds(setup, arms, evaluate=evaluate_accuracy, seeds=None, prefix="",
              accept=is_done):
    """Trains `arms` for every seed (resuming), returns the records.

    Args:
        setup: The run's `Setup`.
        arms: List of `Arm`.
        evaluate: `(setup, run, seed) -> dict` added to the arm's record.
            Defaults to `evaluate_accuracy`.
        seeds: Defaults to `preset.seeds`.
        prefix: Prefix of the store keys (e.g. `"w4__"`). Defaults to `""`.
        accept: `(record, arm_id) -> bool`: whether a stored record can be
            reused. Defaults to `is_done`.

    Returns:
        Dict arm id -> list of records, one per seed (`status` `"done"`
        or `"failed"` with `error`).
    """
    seeds = setup.preset.seeds if seeds is None else seeds
    for seed in seeds:
        todo = [arm for arm in arms
                if not accept(setup.store.load(record_key(arm.arm_id, seed, prefix)),
                              arm.arm_id)]
        if not todo:
            setup.log(f"{prefix}seed {seed}: loaded from an earlier run")
            continue
        setup.log(f"{prefix}seed {seed}: {', '.join(a.arm_id for a in todo)}, "
                  f"{setup.preset.student_epochs} epochs, interleaved")
        runs, failures = train_arms(setup, todo, seed)
        for run in runs:
            record = {"status": "done", "history": run.history,
                      "epoch_seconds_raw": run.epoch_seconds,
                      "train_seconds": run.train_seconds,
                      **evaluate(setup, run, seed)}
            setup.store.save(record_key(run.arm.arm_id, seed, prefix), record)
        for arm_id, error in failures.items():
            setup.log(f"  {arm_id}: FAILED {error}")
            setup.store.save(record_key(arm_id, seed, prefix),
                             {"status": "failed", "error": error})
    return {arm.arm_id: [setup.store.load(record_key(arm.arm_id, s, prefix))
                         for s in seeds] for arm in arms}


def summarize(records, baseline=None):
    """Accuracy over seeds, paired difference to `baseline`, times.

    Args:
        records: An arm's per-seed records (from `run_seeds`).
        baseline: The baseline arm's per-seed records, or `None`.

    Returns:
        `None` if a seed failed, else `{"accuracy": mean_std,
        "vs_baseline": paired_difference or None, "train_seconds",
        "epoch_seconds": spread}` (each seed's first, tracing, epoch is
        dropped from the epoch times).
    """
    if not all(is_done(r) for r in records):
        return None
    accuracies = [r["accuracy"] for r in records]
    versus = None
    if baseline is not None and all(is_done(r) for r in baseline):
        versus = stats.paired_difference(accuracies, [r["accuracy"] for r in baseline])
    epochs = [t for r in records for t in r["epoch_seconds_raw"][1:]]
    return {
        "accuracy": stats.mean_std(accuracies),
        "vs_baseline": versus,
        "train_seconds": float(np.mean([r["train_seconds"] for r in records])),
        "epoch_seconds": stats.spread(epochs or records[0]["epoch_seconds_raw"]),
    }
