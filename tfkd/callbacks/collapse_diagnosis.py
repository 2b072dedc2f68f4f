"""Why a distilled student predicts one class: checks and their report.

`CollapseMonitor` calls `diagnose` when most of the student's validation
predictions fall into one class. Each check looks at something it can
measure on a validation batch or read from the Distiller, and returns a
`Finding` (cause, evidence, fix) only when the evidence is there. The
findings are ordered from the most specific evidence to the least: a
softmax teacher read as logits first, then the teacher's accuracy, flat
soft targets, non-finite values, the learning rate, the alpha and
temperature settings, and last a student that merely stopped depending on
its input (a symptom, not a cause).
"""

import dataclasses
import inspect
import math

import keras
import numpy as np

from tfkd import preflight
from tfkd import teacher_outputs as teacher_outputs_lib

#: Mean entropy of the softened teacher distribution, as a share of
#: log(classes), above which the soft targets count as nearly uniform.
UNIFORM_ENTROPY_SHARE = 0.95

#: Temperatures outside [LOW_TEMPERATURE, HIGH_TEMPERATURE] are extreme:
#: Hinton et al. (2015) and most later work use T between 1 and 10.
LOW_TEMPERATURE = 0.5
HIGH_TEMPERATURE = 20.0

#: An alpha at or below this leaves the labels practically no weight.
LOW_ALPHA = 0.01

#: A learning rate this many times the optimizer's Keras default (Adam:
#: 0.03, SGD: 0.3), or this many times the rate at the start of training
#: (a schedule gone wrong), counts as blown up.
LEARNING_RATE_FACTOR = 30.0

# Logits whose spread across a batch is below this (relative to their
# size) no longer depend on the input.
_CONSTANT_SPREAD = 1e-3


@dataclasses.dataclass(frozen=True)
class Finding:
    """One probable cause of a collapse.

    `str(finding)` is one line: cause, evidence and fix.

    Attributes:
        cause: Short name of the cause.
        evidence: What was measured or read that points to it.
        fix: What to change.
    """

    cause: str
    evidence: str
    fix: str

    def __str__(self):
        return f"{self.cause}: {self.evidence} Fix: {self.fix}"


@dataclasses.dataclass(frozen=True)
class CollapseReport:
    """What `CollapseMonitor` found at the end of one epoch.

    Attributes:
        epoch: The epoch (0-based).
        top_class: The class most predictions fall into.
        top_fraction: The share of predictions in `top_class`.
        threshold: The share at or above which this counts as a collapse.
        histogram: Predictions per class (a tuple of ints).
        findings: Tuple of `Finding`s, most probable cause first.
    """

    epoch: int
    top_class: int
    top_fraction: float
    threshold: float
    histogram: tuple
    findings: tuple

    def __str__(self):
        total = sum(self.histogram)
        lines = [
            f"Student collapse at epoch {self.epoch}: "
            f"{self.top_fraction:.1%} of {total} validation predictions are "
            f"class {self.top_class} (threshold {self.threshold:.0%}).",
            f"Predictions per class: {list(self.histogram)}.",
        ]
        if self.findings:
            lines.append("Probable causes, most likely first:")
            lines.extend(
                f"  {rank}. {finding}"
                for rank, finding in enumerate(self.findings, 1)
            )
        else:
            lines.append(
                "No probable cause found among the checks (teacher outputs, "
                "teacher accuracy, alpha and temperature, learning rate, "
                "non-finite values). Check the class balance of the "
                "training data and the label pipeline."
            )
        return "\n".join(lines)


def _numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float64)


def _declared_kind(distiller):
    """How the Distiller reads the teacher's outputs now."""
    return getattr(distiller, "resolved_teacher_outputs", None) or getattr(
        distiller, "teacher_outputs", "auto"
    )


def probabilities_read_as_logits(distiller, inputs, cached_logits):
    """Teacher probabilities handed to the KD loss as if they were logits.

    Args:
        distiller: The `tfkd.Distiller`.
        inputs: A validation batch.
        cached_logits: Its precomputed teacher logits, or `None`.

    Returns:
        A `Finding`, or `None` when the outputs are read correctly.
    """
    if cached_logits is not None:
        raw, source = _numpy(cached_logits), "The cached teacher logits"
        kind = "logits"
    elif getattr(distiller, "teacher", None) is not None:
        raw = _numpy(distiller.teacher(inputs, training=False))
        source, kind = "The teacher's outputs", _declared_kind(distiller)
    else:
        return None
    if kind != "logits" or not teacher_outputs_lib.looks_like_probabilities(
        raw
    ):
        return None
    temperature = getattr(distiller, "temperature", 1.0)
    return Finding(
        cause="Teacher probabilities read as logits",
        evidence=(
            f"{source} on a validation batch are probabilities (every row "
            "is non-negative and sums to 1), but they are used as logits, "
            f"so softmax(p / {temperature:g}) makes nearly uniform soft "
            "targets that carry no class information."
        ),
        fix=(
            "build the Distiller with teacher_outputs='probabilities' (or "
            "'auto'); for cached outputs store log-probabilities "
            "(tfkd.teacher_outputs.probabilities_to_logits)."
        ),
    )


def teacher_near_chance(teacher_logits, labels):
    """Teacher classes that are not the label classes.

    Args:
        teacher_logits: The teacher's logits over the student's classes,
            `(batch, classes)`, or `None`.
        labels: The batch's labels, or `None`.

    Returns:
        A `Finding` when the teacher's accuracy is at or below
        `tfkd.preflight.near_chance_accuracy` on at least
        `MIN_EXAMPLES_FOR_CHANCE` examples, else `None`.
    """
    if teacher_logits is None or labels is None:
        return None
    logits = _numpy(teacher_logits)  # (batch, classes)
    count, num_classes = logits.shape
    if count < preflight.MIN_EXAMPLES_FOR_CHANCE:
        return None
    ids, labelled = preflight.labelled_class_ids(labels, num_classes)
    count = len(ids)  # unlabelled examples (-1) say nothing about classes
    if count < preflight.MIN_EXAMPLES_FOR_CHANCE:
        return None
    accuracy = float(np.mean(np.argmax(logits[labelled], axis=-1) == ids))
    if accuracy > preflight.near_chance_accuracy(num_classes, count):
        return None
    return Finding(
        cause="Teacher classes do not match the labels",
        evidence=(
            f"the teacher's accuracy on {count} validation labels is "
            f"{accuracy:.1%}, near chance ({1 / num_classes:.1%})."
        ),
        fix=(
            "check the label order against the teacher's classes and "
            "`teacher_class_indices`, and that the teacher (or its cache) "
            "belongs to this dataset."
        ),
    )


def uniform_soft_targets(teacher_logits, temperature):
    """Soft targets so flat that they no longer rank the classes.

    Args:
        teacher_logits: `(batch, classes)` logits, or `None`.
        temperature: The Distiller's temperature.

    Returns:
        A `Finding` when the mean entropy of `softmax(t / T)` is at least
        `UNIFORM_ENTROPY_SHARE` of `log(classes)`, else `None`.
    """
    if teacher_logits is None:
        return None
    log_probs = _numpy(
        keras.ops.log_softmax(teacher_logits / temperature, axis=-1)
    )  # (batch, classes)
    entropy = -np.sum(np.exp(log_probs) * log_probs, axis=-1)  # (batch,)
    share = float(np.mean(entropy) / math.log(log_probs.shape[-1]))
    if share < UNIFORM_ENTROPY_SHARE:
        return None
    return Finding(
        cause="Nearly uniform soft targets",
        evidence=(
            f"at temperature {temperature:g} the teacher's soft targets "
            f"have {share:.1%} of the maximum entropy, so they barely rank "
            "the classes."
        ),
        fix=(
            "lower the temperature (1-10 is usual), and check that the "
            "teacher is trained and its outputs are logits."
        ),
    )


def extreme_hyperparameters(distiller):
    """An alpha or temperature outside the range that usually works.

    Args:
        distiller: The `tfkd.Distiller`.

    Returns:
        A `Finding` for a temperature outside [`LOW_TEMPERATURE`,
        `HIGH_TEMPERATURE`] or an alpha <= `LOW_ALPHA`, else `None`.
    """
    alpha = getattr(distiller, "alpha", None)
    temperature = getattr(distiller, "temperature", None)
    problems = []
    if temperature is not None and not (
        LOW_TEMPERATURE <= temperature <= HIGH_TEMPERATURE
    ):
        problems.append(f"temperature={temperature:g}")
    if alpha is not None and alpha <= LOW_ALPHA:
        problems.append(
            f"alpha={alpha:g} (the labels get almost no weight, so nothing "
            "corrects a bad teacher signal)"
        )
    if not problems:
        return None
    return Finding(
        cause="Extreme alpha or temperature",
        evidence=", ".join(problems) + ".",
        fix=(
            f"use a temperature in [{LOW_TEMPERATURE:g}, "
            f"{HIGH_TEMPERATURE:g}] (Hinton et al. 2015 use 1-10) and "
            "alpha around 0.1-0.5."
        ),
    )


def current_learning_rate(optimizer):
    """The optimizer's learning rate now (schedules evaluated).

    Args:
        optimizer: A `keras.optimizers.Optimizer`.

    Returns:
        A float, or `None` when it cannot be read.
    """
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except Exception:  # a custom optimizer without a readable rate
        return None


def _default_learning_rate(optimizer):
    parameter = inspect.signature(type(optimizer).__init__).parameters.get(
        "learning_rate"
    )
    if parameter is None or not isinstance(parameter.default, (int, float)):
        return None
    return float(parameter.default)


def learning_rate_blew_up(optimizer, initial_learning_rate=None):
    """A learning rate far above its optimizer's default or its start.

    Args:
        optimizer: The optimizer, or `None`.
        initial_learning_rate: The rate at the start of training, or
            `None`. Defaults to `None`.

    Returns:
        A `Finding` when the rate is non-finite or at least
        `LEARNING_RATE_FACTOR` times the Keras default or the initial
        rate, else `None`.
    """
    if optimizer is None:
        return None
    rate = current_learning_rate(optimizer)
    if rate is None:
        return None
    default = _default_learning_rate(optimizer)
    name = type(optimizer).__name__
    if not math.isfinite(rate):
        evidence = f"the {name} learning rate is {rate}."
    elif initial_learning_rate and rate >= (
        LEARNING_RATE_FACTOR * initial_learning_rate
    ):
        evidence = (
            f"the {name} learning rate grew from {initial_learning_rate:g} "
            f"at the start of training to {rate:g}."
        )
    elif default and rate >= LEARNING_RATE_FACTOR * default:
        evidence = (
            f"the {name} learning rate is {rate:g}, "
            f"{rate / default:.3g} times its Keras default of {default:g}."
        )
    else:
        return None
    return Finding(
        cause="Learning rate too high",
        evidence=evidence,
        fix=(
            "lower the learning rate (start from the optimizer's default) "
            "or check the learning-rate schedule."
        ),
    )


def non_finite_values(logs, student):
    """NaN or inf in the epoch's losses or the student's weights.

    Args:
        logs: The epoch's logs, or `None`.
        student: The student `keras.Model`.

    Returns:
        A `Finding`, or `None` when everything is finite.
    """
    bad_logs = sorted(
        name
        for name, value in (logs or {}).items()
        if isinstance(value, (int, float, np.floating))
        and not math.isfinite(float(value))
    )
    bad_weights = [
        weight.path
        for weight in student.weights
        if not np.all(np.isfinite(_numpy(weight)))
    ]
    if not bad_logs and not bad_weights:
        return None
    parts = []
    if bad_logs:
        parts.append("non-finite " + ", ".join(bad_logs))
    if bad_weights:
        parts.append(f"{len(bad_weights)} student weight(s) with NaN/inf")
    return Finding(
        cause="Non-finite loss",
        evidence="; ".join(parts) + " this epoch.",
        fix=(
            "lower the learning rate, check the inputs for NaN/inf, and "
            "under mixed precision keep the loss in float32 (the Distiller "
            "does) with a LossScaleOptimizer."
        ),
    )


def constant_student(student_logits):
    """A student whose logits no longer depend on the input (a symptom).

    Args:
        student_logits: `(examples, classes)` logits of the student.

    Returns:
        A `Finding` when no logit varies across the examples by more than
        a thousandth of its size, else `None`.
    """
    logits = np.asarray(student_logits, dtype=np.float64)
    if logits.shape[0] < 2 or not np.all(np.isfinite(logits)):
        return None
    spread = float(np.max(np.std(logits, axis=0)))
    size = float(np.mean(np.abs(logits)))
    if spread > _CONSTANT_SPREAD * (1.0 + size):
        return None
    variation = (
        "are the same for every validation example"
        if spread == 0.0
        else f"vary by at most {spread:.2g} across the validation examples"
    )
    return Finding(
        cause="Student ignores its input",
        evidence=(
            f"its logits {variation}: its hidden units have probably died "
            "(a symptom of a too-high learning rate or of uninformative "
            "targets)."
        ),
        fix=(
            "restart from fresh weights with a lower learning rate once the "
            "causes above are fixed."
        ),
    )


def diagnose(
    distiller,
    inputs,
    labels,
    cached_logits=None,
    student_logits=None,
    logs=None,
    initial_learning_rate=None,
):
    """Runs every check and returns the findings, most probable first.

    Args:
        distiller: The `tfkd.Distiller` being trained (or any
            `keras.Model`; checks that need a Distiller are skipped).
        inputs: A validation batch.
        labels: Its labels, or `None`.
        cached_logits: Its precomputed teacher logits, or `None`.
        student_logits: The student's logits on the monitored validation
            examples, `(examples, classes)`, or `None`.
        logs: The epoch's logs. Defaults to `None`.
        initial_learning_rate: The learning rate at the start of training.
            Defaults to `None`.

    Returns:
        A tuple of `Finding`s.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> teacher = keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(teacher=teacher, student=student,
    ...                            teacher_outputs="logits")
    >>> [f.cause for f in diagnose(distiller, x, labels=None)]
    ['Teacher probabilities read as logits']
    """
    student = getattr(distiller, "student", distiller)
    teacher_logits = None  # (batch, student classes), as the loss sees them
    if hasattr(distiller, "teacher_logits"):
        teacher_logits = distiller.teacher_logits(
            inputs, cached_logits, training=False
        )
    probabilities = probabilities_read_as_logits(
        distiller, inputs, cached_logits
    )
    findings = [
        probabilities,
        teacher_near_chance(teacher_logits, labels),
        # The probabilities finding already explains flat targets.
        None
        if probabilities is not None
        else uniform_soft_targets(
            teacher_logits, getattr(distiller, "temperature", 1.0)
        ),
        non_finite_values(logs, student),
        learning_rate_blew_up(
            getattr(distiller, "optimizer", None), initial_learning_rate
        ),
        extreme_hyperparameters(distiller),
        None if student_logits is None else constant_student(student_logits),
    ]
    return tuple(finding for finding in findings if finding is not None)
