"""The format of a benchmark's `results.json`, and a validator for it.

One results dict describes one benchmark run: one dataset, one preset, and
one entry per *arm* (teacher, student from scratch, distilled students,
AutoKeras). It is plain JSON so that the report and the plots can be
rebuilt, and runs compared, without TensorFlow.

Schema version 1 (`SCHEMA_VERSION`); `?` marks a value that may be `null`:

- `schema_version` (int): always `1` for this layout. Readers refuse other
  versions rather than guess.
- `created` (str): when the run finished, ISO 8601 with a UTC offset, e.g.
  `"2026-11-23T15:00:00+00:00"` (`"Z"` is accepted too).
- `dataset` (str): dataset name, e.g. `"fashion_mnist"`.
- `preset` (str): preset name, e.g. `"smoke"`, `"quick"`, `"full"`.
- `environment` (dict): where it ran.
    - `tensorflow`, `keras`, `python` (str): versions.
    - `autokeras`, `tensorflow_datasets` (str?): versions, `null` when the
      package is not installed.
    - `device` (str): `"CPU"` or `"GPU: <name>"`.
    - `cpu` (str): CPU model string.
    - `cpu_count` (int?): logical CPUs (`os.cpu_count()`, which may be
      `None`).
    - `platform` (str): `platform.platform()`.
- `config` (dict): the preset's parameters (epochs, batch size, seeds,
  temperature, alpha, train examples, ...). Free-form; only its keys must
  be strings.
- `class_names` (list of str): one name per class, in label order.
- `arms` (dict): arm id (str) -> arm dict. Ids used by the report:
  `teacher`, `scratch`, `tfkd`, `tfkd_cached`, `keras_distillation`,
  `keras_distillation_kl`, `autokeras`; others are allowed.
    - `label` (str): human name, e.g. `"Distilled student (tfkd)"`.
    - `role` (str): `"teacher"`, `"student"` or `"automl"`.
    - `status` (str): `"done"`, `"failed"` or `"skipped"`.
    - `error` (str?): why the arm failed or was skipped; required (a
      non-empty string) when `status` is `"failed"`.
    - `accuracy` (dict): test accuracy as a fraction in [0, 1]: `mean`,
      `std` (float, over seeds) and `per_seed` (non-empty list of float).
    - `parameters` (int): trainable + non-trainable weights of the model.
    - `size_bytes` (int): size of the saved `.keras` file.
    - `latency_ms` (dict): batch-1 inference latency percentiles `p50`,
      `p95` (float, milliseconds).
    - `throughput_per_s` (float): examples per second at batch 256.
    - `train_seconds` (float): wall time of training (first seed).
    - `epoch_seconds` (dict?): `median`, `min`, `max` (float?) of the
      per-epoch training time; more keys (e.g. `epochs`) are allowed.
    - `history` (dict?): per-epoch lists of float for the first seed, keys
      among `loss`, `accuracy`, `val_loss`, `val_accuracy` (any may be
      missing; extra metric keys are allowed).
    - `confusion_matrix` (list of list of int?): test-set counts for the
      first seed, `len(class_names)` square, rows = true class, columns =
      predicted class.
    - `trained_on` (str, optional): the data the model saw, e.g.
      `"600 labelled + 5,400 unlabelled"`.
    - `baseline` (str?, optional): for a student, the arm it is compared
      with (default `scratch`); `null` for a baseline itself.

  The metric fields (`accuracy` to `confusion_matrix`) may be missing or
  `null` when `status` is not `"done"`. A `"done"` arm must have
  `accuracy`, `parameters`, `size_bytes`, `latency_ms`, `throughput_per_s`
  and `train_seconds`; `epoch_seconds`, `history` and `confusion_matrix`
  stay optional, since an AutoKeras search has no single epoch time.
- `derived` (dict): numbers computed from `arms` by
  `benchmarks.report.derive`; a float is `null` when an input is missing.
    - `<arm_id>` (dict), for every arm: `accuracy_kept_vs_teacher` (arm
      accuracy / teacher accuracy), `compression_ratio` (teacher parameters
      / arm parameters), `speedup_vs_teacher` (teacher p50 latency / arm
      p50 latency), `kd_gain_over_scratch` (arm accuracy - scratch
      accuracy, for distilled students only) and
      `paired_difference_vs_scratch` (`benchmarks.stats.paired_difference`,
      or `null`). An arm that names another `baseline` (arm key, see
      below) is compared with that arm instead, and its derived entry
      repeats `baseline`.
    - `epoch_time_ratios` (dict): median epoch time ratios
      `tfkd_over_scratch`, `tfkd_over_keras_distillation` (against
      `keras_distillation_kl`) and `cached_over_scratch`.

Unknown top-level keys and extra keys inside arms are allowed, so that a
newer writer can add fields without breaking older readers; changing or
removing a field needs a new `SCHEMA_VERSION`.
"""

import datetime
import math
import numbers

import numpy as np

SCHEMA_VERSION = 1

ROLES = ("teacher", "student", "automl")
STATUSES = ("done", "failed", "skipped")
ENVIRONMENT_STRINGS = ("tensorflow", "keras", "python", "device", "cpu", "platform")
ENVIRONMENT_OPTIONAL_STRINGS = ("autokeras", "tensorflow_datasets")
# Fields a finished arm must report; the rest may be absent for any arm.
REQUIRED_WHEN_DONE = (
    "accuracy",
    "parameters",
    "size_bytes",
    "latency_ms",
    "throughput_per_s",
    "train_seconds",
)
DERIVED_ARM_KEYS = (
    "accuracy_kept_vs_teacher",
    "compression_ratio",
    "speedup_vs_teacher",
    "kd_gain_over_scratch",
)
EPOCH_TIME_RATIO_KEYS = (
    "tfkd_over_scratch",
    "tfkd_over_keras_distillation",
    "cached_over_scratch",
)


def validate(results):
    """Checks that `results` follows the results schema (see module doc).

    Numbers may be Python or NumPy scalars; lists may be lists, tuples or
    NumPy arrays (`benchmarks.report.write_report` turns them into JSON).
    The check stops at the first problem and names its key path, e.g.
    `arms.tfkd.accuracy.per_seed[1]`.

    Args:
        results: The results dict of one benchmark run.

    Returns:
        `results`, unchanged, so that calls can be chained.

    Raises:
        ValueError: if a key is missing or a value has the wrong type or
            range; the message starts with the offending key path.

    Example:

    >>> from benchmarks import schema
    >>> results = schema.example_results()
    >>> schema.validate(results) is results
    True
    >>> results["arms"]["tfkd"]["accuracy"]["mean"] = "high"
    >>> schema.validate(results)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `arms.tfkd.accuracy.mean` must be a finite number. Received: ...
    """
    _check_dict(results, "results")
    version = _require(results, "schema_version", "")
    if not _is_int(version) or version != SCHEMA_VERSION:
        raise ValueError(
            f"`schema_version` must be {SCHEMA_VERSION} (this reader's "
            f"version). Received: {version!r}"
        )
    _check_timestamp(_require(results, "created", ""), "created")
    for key in ("dataset", "preset"):
        _check_string(_require(results, key, ""), key)
    _check_environment(_require(results, "environment", ""))
    config = _require(results, "config", "")
    _check_dict(config, "config")
    class_names = _require(results, "class_names", "")
    _check_list(class_names, "class_names")
    for index, name in enumerate(class_names):
        _check_string(name, f"class_names[{index}]")
    arms = _require(results, "arms", "")
    _check_dict(arms, "arms")
    for arm_id, arm in arms.items():
        if arm_id == "epoch_time_ratios":
            # It would collide with the ratios' key inside `derived`.
            raise ValueError(
                "`arms.epoch_time_ratios`: this arm id is reserved; "
                "rename the arm."
            )
        _check_arm(arm, f"arms.{arm_id}", len(class_names))
    _check_derived(_require(results, "derived", ""), arms)
    return results


def example_results():
    """A complete, valid results dict with made-up numbers.

    For documentation examples and for trying the report and plots without
    running the benchmark. The numbers are plausible for Fashion-MNIST on a
    CPU but were not measured.

    Returns:
        A new results dict (safe to modify) with every arm: six finished
        arms with histories and confusion matrices, and a failed AutoKeras
        arm.

    Example:

    >>> from benchmarks import schema
    >>> sorted(schema.example_results()["arms"])[:3]
    ['autokeras', 'keras_distillation', 'keras_distillation_kl']
    """
    class_names = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    arms = {
        "teacher": _example_arm(
            "Teacher (CNN)", "teacher", (0.9123,), 1_234_890, 3.42, 0.85, 0.75
        ),
        "scratch": _example_arm(
            "Student from scratch", "student", (0.8512, 0.8544, 0.8490),
            52_314, 0.61, 0.30, 0.55,
        ),
        "tfkd": _example_arm(
            "Distilled student (tfkd, online)", "student",
            (0.8731, 0.8702, 0.8755), 52_314, 0.60, 1.60, 0.62,
        ),
        "tfkd_cached": _example_arm(
            "Distilled student (tfkd, cached teacher)", "student",
            (0.8718, 0.8724, 0.8690), 52_314, 0.62, 0.35, 0.60,
        ),
        "keras_distillation": _example_arm(
            "keras.distillation (default loss)", "student",
            (0.8420, 0.8391, 0.8455), 52_314, 0.59, 2.30, 0.52,
        ),
        "keras_distillation_kl": _example_arm(
            "keras.distillation (KLDivergence)", "student",
            (0.8702, 0.8688, 0.8730), 52_314, 0.63, 2.10, 0.60,
        ),
        "autokeras": {
            "label": "AutoKeras ImageClassifier",
            "role": "automl",
            "status": "failed",
            "error": "TimeoutError: search exceeded its 240 s budget",
        },
    }
    # The cache build is not part of the cached arm's epochs, so its
    # epochs are about as fast as training from scratch.
    return {
        "schema_version": SCHEMA_VERSION,
        "created": "2026-11-23T15:00:00+00:00",
        "dataset": "fashion_mnist",
        "preset": "quick",
        "environment": {
            "tensorflow": "2.21.0",
            "keras": "3.12.4",
            "autokeras": "3.0.0",
            "tensorflow_datasets": "4.9.9",
            "python": "3.11.7",
            "device": "CPU",
            "cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz",
            "cpu_count": 2,
            "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
        },
        "config": {
            "train_examples": 6000,
            "batch_size": 128,
            "teacher_epochs": 4,
            "student_epochs": 8,
            "seeds": [0, 1, 2],
            "temperature": 4.0,
            "alpha": 0.1,
        },
        "class_names": class_names,
        "arms": arms,
        "derived": _example_derived(arms),
    }


def _example_arm(label, role, per_seed, parameters, p50, epoch_extra, final):
    """One finished arm; `final` shapes its learning curve."""
    mean = float(np.mean(per_seed))
    epochs = 8
    progress = 1.0 - np.exp(-np.arange(1, epochs + 1) / 2.5)
    val_accuracy = (mean - 0.12) + 0.12 * progress
    history = {
        "loss": [round(float(v), 4) for v in 1.6 - final * 1.8 * progress],
        "accuracy": [round(float(v), 4) for v in val_accuracy + 0.01 * progress],
        "val_loss": [round(float(v), 4) for v in 1.5 - final * 1.6 * progress],
        "val_accuracy": [round(float(v), 4) for v in val_accuracy],
    }
    return {
        "label": label,
        "role": role,
        "status": "done",
        "error": None,
        "accuracy": {
            "mean": round(mean, 4),
            "std": round(float(np.std(per_seed)), 4),
            "per_seed": list(per_seed),
        },
        "parameters": parameters,
        "size_bytes": parameters * 4 + 24_576,
        "latency_ms": {"p50": p50, "p95": round(p50 * 1.45, 3)},
        "throughput_per_s": round(2_600.0 / p50 * 10, 1),
        "train_seconds": round(epochs * (1.0 + epoch_extra) * 6.0, 1),
        "epoch_seconds": {
            "median": round((1.0 + epoch_extra) * 6.0, 2),
            "min": round((1.0 + epoch_extra) * 5.7, 2),
            "max": round((1.0 + epoch_extra) * 6.9, 2),
        },
        "history": history,
        "confusion_matrix": _example_confusion(mean),
    }


def _example_confusion(accuracy):
    """1000 test images per class; errors go mostly to look-alike classes."""
    # Shirt, pullover, coat and T-shirt are the classes Fashion-MNIST
    # models confuse; give them most of the errors.
    difficulty = np.array([1.3, 0.2, 1.6, 0.9, 1.5, 0.3, 2.8, 0.5, 0.3, 0.6])
    error_rate = (1.0 - accuracy) * difficulty / difficulty.mean()
    look_alike = {0: 6, 1: 3, 2: 4, 3: 0, 4: 2, 5: 7, 6: 0, 7: 9, 8: 2, 9: 7}
    matrix = np.zeros((10, 10), dtype=int)
    for true_class in range(10):
        wrong = int(round(1000 * error_rate[true_class]))
        matrix[true_class, true_class] = 1000 - wrong
        matrix[true_class, look_alike[true_class]] += wrong * 2 // 3
        rest = wrong - wrong * 2 // 3
        others = [c for c in range(10) if c not in (true_class, look_alike[true_class])]
        for offset in range(rest):
            matrix[true_class, others[offset % len(others)]] += 1
    return matrix.tolist()


def _example_derived(arms):
    # Imported here: `report` imports this module.
    from benchmarks import report

    return report.derive({"arms": arms})


def _describe(value):
    return f"{value!r} ({type(value).__name__})"


def _require(mapping, key, path):
    full = f"{path}.{key}" if path else key
    if key not in mapping:
        raise ValueError(f"`{full}` is missing.")
    return mapping[key]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_dict(value, path):
    if not isinstance(value, dict):
        raise ValueError(f"`{path}` must be a dict. Received: {_describe(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ValueError(
                f"`{path}` must have string keys. Received key: {_describe(key)}"
            )


def _check_list(value, path):
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"`{path}` must be a list. Received: {_describe(value)}")


def _check_string(value, path, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, str):
        expected = "a string or null" if optional else "a string"
        raise ValueError(f"`{path}` must be {expected}. Received: {_describe(value)}")


def _check_number(value, path, minimum=None, maximum=None, optional=False):
    if optional and value is None:
        return
    if not _is_number(value):
        expected = "a finite number or null" if optional else "a finite number"
        raise ValueError(f"`{path}` must be {expected}. Received: {_describe(value)}")
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        bounds = f"[{minimum}, {maximum if maximum is not None else 'inf'}]"
        raise ValueError(f"`{path}` must lie in {bounds}. Received: {value!r}")


def _check_count(value, path):
    if not _is_int(value) or value < 0:
        raise ValueError(
            f"`{path}` must be an integer >= 0. Received: {_describe(value)}"
        )


def _check_timestamp(value, path):
    _check_string(value, path)
    try:
        # Python 3.10's fromisoformat does not read "Z".
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(
            f"`{path}` must be an ISO 8601 timestamp with a UTC offset, e.g. "
            f"'2026-11-23T15:00:00+00:00'. Received: {value!r}"
        )


def _check_environment(environment):
    path = "environment"
    _check_dict(environment, path)
    for key in ENVIRONMENT_STRINGS:
        _check_string(_require(environment, key, path), f"{path}.{key}")
    for key in ENVIRONMENT_OPTIONAL_STRINGS:
        value = _require(environment, key, path)
        _check_string(value, f"{path}.{key}", optional=True)
    cpu_count = _require(environment, "cpu_count", path)
    if cpu_count is not None:
        _check_count(cpu_count, f"{path}.cpu_count")


def _check_arm(arm, path, num_classes):
    _check_dict(arm, path)
    _check_string(_require(arm, "label", path), f"{path}.label")
    role = _require(arm, "role", path)
    if role not in ROLES:
        raise ValueError(f"`{path}.role` must be one of {ROLES}. Received: {role!r}")
    status = _require(arm, "status", path)
    if status not in STATUSES:
        raise ValueError(
            f"`{path}.status` must be one of {STATUSES}. Received: {status!r}"
        )
    error = arm.get("error")
    _check_string(error, f"{path}.error", optional=True)
    if status == "failed" and not error:
        raise ValueError(f"`{path}.error` must say why the arm failed.")
    if status == "done":
        for key in REQUIRED_WHEN_DONE:
            if arm.get(key) is None:
                raise ValueError(f"`{path}.{key}` is required when status is 'done'.")

    # Every metric is optional from here on; check only what is present.
    if arm.get("accuracy") is not None:
        _check_accuracy(arm["accuracy"], f"{path}.accuracy")
    for key in ("parameters", "size_bytes"):
        if arm.get(key) is not None:
            _check_count(arm[key], f"{path}.{key}")
    if arm.get("latency_ms") is not None:
        _check_stats(arm["latency_ms"], f"{path}.latency_ms", ("p50", "p95"))
    for key in ("throughput_per_s", "train_seconds"):
        if arm.get(key) is not None:
            _check_number(arm[key], f"{path}.{key}", minimum=0)
    if arm.get("epoch_seconds") is not None:
        _check_stats(
            arm["epoch_seconds"],
            f"{path}.epoch_seconds",
            ("median", "min", "max"),
            optional_values=True,
        )
    if arm.get("history") is not None:
        _check_history(arm["history"], f"{path}.history")
    if arm.get("confusion_matrix") is not None:
        _check_confusion_matrix(
            arm["confusion_matrix"], f"{path}.confusion_matrix", num_classes
        )


def _check_accuracy(accuracy, path):
    _check_dict(accuracy, path)
    _check_number(_require(accuracy, "mean", path), f"{path}.mean", 0, 1)
    _check_number(_require(accuracy, "std", path), f"{path}.std", 0, 1)
    per_seed = _require(accuracy, "per_seed", path)
    _check_list(per_seed, f"{path}.per_seed")
    if len(per_seed) == 0:
        raise ValueError(f"`{path}.per_seed` must not be empty.")
    for index, value in enumerate(per_seed):
        _check_number(value, f"{path}.per_seed[{index}]", 0, 1)


def _check_stats(stats, path, keys, optional_values=False):
    _check_dict(stats, path)
    for key in keys:
        value = _require(stats, key, path)
        _check_number(value, f"{path}.{key}", minimum=0, optional=optional_values)


def _check_history(history, path):
    _check_dict(history, path)
    for key, values in history.items():
        _check_list(values, f"{path}.{key}")
        for index, value in enumerate(values):
            _check_number(value, f"{path}.{key}[{index}]")


def _check_confusion_matrix(matrix, path, num_classes):
    _check_list(matrix, path)
    if len(matrix) != num_classes:
        raise ValueError(
            f"`{path}` must have one row per class ({num_classes}). "
            f"Received: {len(matrix)} rows"
        )
    for row_index, row in enumerate(matrix):
        row_path = f"{path}[{row_index}]"
        _check_list(row, row_path)
        if len(row) != num_classes:
            raise ValueError(
                f"`{row_path}` must have one column per class ({num_classes}). "
                f"Received: {len(row)} columns"
            )
        for column, count in enumerate(row):
            _check_count(count, f"{row_path}[{column}]")


def _check_derived(derived, arms):
    path = "derived"
    _check_dict(derived, path)
    for key, entry in derived.items():
        entry_path = f"{path}.{key}"
        _check_dict(entry, entry_path)
        if key == "epoch_time_ratios":
            names = EPOCH_TIME_RATIO_KEYS
        elif key in arms:
            names = DERIVED_ARM_KEYS
        else:
            raise ValueError(
                f"`{entry_path}` names no arm of `arms` ({sorted(arms)})."
            )
        for name in names:
            value = _require(entry, name, entry_path)
            _check_number(value, f"{entry_path}.{name}", optional=True)
