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

    >>> from benchmarks import sample_results, schema
    >>> results = sample_results.example_results()
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
