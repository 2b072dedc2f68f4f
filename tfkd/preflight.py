"""Checks on the first batch, run by `Distiller.fit`/`evaluate` before training.

Everything here runs eagerly on a slice of one batch (at most
`PREFLIGHT_EXAMPLES` examples), so a mistake surfaces as a clear error in
the first second instead of as a collapsed student after an hour. It also
resolves `teacher_outputs="auto"` from the teacher's actual outputs.

The first batch is read without consuming anything: a `tf.data.Dataset`
through `take(1)`, a `keras.utils.PyDataset` (what `TeacherCache.dataset()`
streams off TensorFlow, or a user's own) by index, `dataset[0]`, which is
random access and leaves its epoch, order and state alone. Data that cannot
be peeked at without consuming it (Python generators, distributed datasets)
is not checked here; the training step then tells probabilities from logits
batch by batch.

`fit` also hands over its `validation_data`: its first examples get the
same input and label checks, and the teacher's accuracy on them is
compared with chance. A teacher near chance on labelled data almost always
means its classes are not the labels' classes (another class order, a
wrong `teacher_class_indices`, a cache built for another dataset), and a
student distilled from it learns nothing useful; `fit` then warns with a
`DistillationWarning` rather than failing, because a deliberately weak
teacher is legitimate.
"""

import dataclasses
import math
import warnings

import numpy as np
import keras

from tfkd import backend_support

from tfkd import losses
from tfkd import mixing as mixing_lib
from tfkd import model_checks
from tfkd import step_losses
from tfkd import teacher_outputs as teacher_outputs_lib

#: How many examples of the first batch the checks look at.
PREFLIGHT_EXAMPLES = 64

#: Fewest labelled validation examples on which the teacher's accuracy is
#: compared with chance; fewer would make the comparison noise.
MIN_EXAMPLES_FOR_CHANCE = 32

# A validation dataset with tiny batches is read until this many batches
# (or PREFLIGHT_EXAMPLES examples), so the check stays a fraction of a second.
_MAX_VALIDATION_BATCHES = 8


class DistillationWarning(UserWarning):
    """A distillation set-up that runs but probably will not teach.

    Raised as a warning (never an error) by the checks before training and
    by `tfkd.callbacks.CollapseMonitor`; filter it with
    `warnings.filterwarnings("ignore", category=DistillationWarning)`.
    """


def near_chance_accuracy(num_classes, num_examples):
    """The accuracy at or below which a classifier counts as near chance.

    `min(1.5 / C, 1 / C + 2 · sqrt((1 / C)(1 − 1 / C) / n))` for `C`
    classes and `n` examples: half again the chance rate, but never more
    than two binomial standard deviations above it, so a two-class teacher
    at 70% on 64 examples is not called near chance.

    Args:
        num_classes: Number of classes `C` (> 1).
        num_examples: Number of labelled examples `n` (> 0).

    Returns:
        A float in (0, 1).

    Example:

    >>> round(near_chance_accuracy(10, 64), 4)
    0.15
    >>> round(near_chance_accuracy(2, 64), 4)
    0.625
    """
    chance = 1.0 / num_classes
    noise = 2.0 * math.sqrt(chance * (1.0 - chance) / num_examples)
    return min(1.5 * chance, chance + noise)


def no_teacher_signal_error():
    """The error for a training batch with no teacher and no cached logits."""
    return ValueError(
        "The Distiller has no teacher signal for this batch: teacher=None and "
        "the batch carries no teacher logits. Expected either a `teacher` "
        "model, or batches shaped (x, {'labels': y, 'teacher_logits': t}) "
        "such as `tfkd.TeacherCache.dataset()` streams. Received: "
        "teacher=None and plain labels"
    )


#: The error for data with neither labels nor a teacher signal.
no_labels_and_no_teacher_error = step_losses.no_labels_and_no_teacher_error


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What `check_first_batch` resolved from the first batch.

    Args:
        teacher_outputs: `"logits"` or `"probabilities"`, what a teacher
            built with `teacher_outputs="auto"` emits, or `None` when
            nothing was resolved (a known kind, cached logits, data that
            cannot be peeked at). Defaults to `None`.

    Example:

    >>> Resolved().teacher_outputs is None
    True
    """

    teacher_outputs: str | None = None


def _check_mixing(mixing, inputs, labels, num_classes):
    """Runs `mixing` once on the first examples, rewording its error."""
    try:
        mixing_lib.mix_batch(mixing, inputs, labels, num_classes)
    except Exception as error:  # the layer's error, re-worded
        shapes = keras.tree.map_structure(lambda a: tuple(a.shape), inputs)
        raise ValueError(
            "Invalid value for argument `mixing`. Expected a layer that "
            "mixes the training batches (Keras's MixUp and CutMix take "
            "images of shape (batch, height, width, channels)). Received: "
            f"mixing {mixing.name!r} failed on a batch of shape {shapes}: "
            f"{error}"
        ) from error


def refuse_augmentation_on_cached(distiller, cached_logits):
    """Raises if random augmentation or mixing would meet cached logits.

    Cached logits were computed on other views of the images; training a
    student on a fresh random view (or a fresh mix of two images) against
    them teaches it the wrong targets (Beyer et al., 2022, "Knowledge
    distillation: A good teacher is patient and consistent"). Use online
    distillation with `augmentation`/`mixing`, or a cache of fixed
    augmented views.
    """
    if cached_logits is None:
        return
    if distiller.augmentation is not None:
        raise ValueError(
            "Invalid value for argument `augmentation`. Expected None when "
            "batches carry precomputed teacher logits: those logits belong "
            "to the un-augmented (or cached) views, and a new random view "
            "would no longer match them (Beyer et al., 2022). Either "
            "distil online (teacher=..., augmentation=...) so both models "
            "see the same view, or cache K fixed augmented views. "
            f"Received: augmentation={distiller.augmentation.name!r} with "
            "cached teacher logits"
        )
    mixing = getattr(distiller, "mixing", None)
    if mixing is not None:
        raise ValueError(
            "Invalid value for argument `mixing`. Expected None when "
            "batches carry precomputed teacher logits: they are the "
            "teacher's outputs on the original images, not on a new mix "
            "of two images, which the teacher must see too (function "
            "matching, Beyer et al., 2022). Distil online "
            "(teacher=..., mixing=...) instead. Received: "
            f"mixing={mixing.name!r} with cached teacher logits"
        )


def refuse_ensemble_targets_at_another_temperature(distiller, targets):
    """Raises if a cached ensemble's mixture is used where it is not exact.

    `TeacherCache.build(teacher=[...], temperature=T)` stores the logits
    `T · log p_ens` of the teachers' mixture at T (`tfkd.ensembles`). At
    another Distiller temperature T', `softmax(stored / T')` is not the
    mixture of the teachers at T', and z-scoring the stored values is not
    standardizing each teacher: both would silently train on other
    targets than the ones asked for.
    """
    values = teacher_outputs_lib.soft_target_temperature(targets)
    if values is None:
        return
    stored = float(np.asarray(keras.ops.convert_to_numpy(values)).reshape(-1)[0])
    if not np.isclose(stored, distiller.temperature, rtol=1e-6):
        raise ValueError(
            "Invalid value for argument `temperature`. Expected "
            f"temperature={stored:g}, the temperature at which these cached "
            "soft targets (a teacher ensemble's mixture of tempered "
            "probabilities) were built: they are exact at that temperature "
            "only. Rebuild the cache with TeacherCache.build(teachers, ..., "
            "temperature=T) for another T. Received: "
            f"temperature={distiller.temperature:g}"
        )
    if getattr(distiller, "logit_standardization", False):
        raise ValueError(
            "Invalid value for argument `logit_standardization`. Expected "
            "False with cached soft targets of a teacher ensemble: they mix "
            "the raw teachers' probabilities, and standardizing the mixture "
            "is not standardizing each teacher. Distil the ensemble online "
            "(teacher=[...], logit_standardization=True) instead. Received: "
            "logit_standardization=True"
        )


def check_example_indices(distiller, targets):
    """Raises unless a batch has the indices its memory terms (CRD) need.

    A term with a memory row per training example reads each example's
    index from the batch (`{"labels": y, "index": i}`); without it, or out
    of `[0, num_data)`, it would read and overwrite the wrong rows.
    """
    terms = [
        term
        for term in getattr(distiller, "extra_losses", [])
        if getattr(term, "needs_example_indices", False)
    ]
    if not terms:
        return
    indices = teacher_outputs_lib.example_indices(targets)
    names = [term.name for term in terms]
    if indices is None:
        raise ValueError(
            "Invalid batch. Expected targets of the form {'labels': y, "
            "'index': i}, i each example's index in the training set "
            f"(0 <= i < num_data): the extra losses {names} keep a memory "
            "row per training example. Received targets without 'index'"
        )
    values = np.asarray(keras.ops.convert_to_numpy(indices)).reshape(-1)
    for term in terms:
        if values.size and (values.min() < 0 or values.max() >= term.num_data):
            raise ValueError(
                f"Invalid batch. Expected example indices in [0, "
                f"{term.num_data}) for `{term.name}` (num_data="
                f"{term.num_data}). Received: indices from {values.min()} "
                f"to {values.max()}"
            )


def first_batch(x, y=None):
    """Returns a small `(x, y, sample_weight)` slice of the first batch.

    Args:
        x: What was passed to `fit`/`evaluate` as `x`: a `tf.data.Dataset`
            or a `keras.utils.PyDataset` of batches, or arrays/tensors
            (then `y` holds the labels).
        y: The labels when `x` is an array.

    Returns:
        The tuple, or `None` when the data cannot be peeked at safely.
    """
    batch = _peek(x, y)
    if batch is None:
        return None
    return tuple(_head(part) for part in batch)


def _is_array_input(x):
    return _is_array(x) or (
        isinstance(x, dict) and all(_is_array(v) for v in x.values())
    )


def _is_array(value):
    # A TensorFlow tensor can only be passed where TensorFlow is imported.
    return isinstance(value, np.ndarray) or backend_support.is_tf_tensor(value)


def _is_py_dataset(value):
    return isinstance(value, keras.utils.PyDataset)


def _is_dataset(value):
    """Whether `value` is a dataset of batches this module can peek into."""
    return backend_support.is_tf_dataset(value) or _is_py_dataset(value)


def _py_dataset_batches(dataset, count, argument):
    """The first `count` batches of a `PyDataset`, read by index.

    `__getitem__` is random access: reading batch 0 again consumes nothing,
    and `on_epoch_end` is never called, so the dataset's order and state
    are the ones `fit` will see. A dataset without `__len__` (infinite,
    `num_batches` None) is read the same way.
    """
    size = dataset.num_batches
    if size is not None:
        count = min(count, size)
    if count <= 0:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a dataset "
            "with at least one batch. Received: an empty PyDataset "
            f"{type(dataset).__name__} (len 0)"
        )
    # Lazily: the caller stops once it has enough examples.
    return (dataset[index] for index in range(count))


def _peek(x, y=None, argument="x"):
    """The whole first batch `(x, y, sample_weight)`, or None (see above)."""
    if _is_py_dataset(x):
        batch = next(_py_dataset_batches(x, 1, argument))
        return keras.utils.unpack_x_y_sample_weight(batch)
    if backend_support.is_tf_dataset(x):
        for batch in x.take(1):
            return keras.utils.unpack_x_y_sample_weight(batch)
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a dataset "
            "with at least one batch. Received: an empty tf.data.Dataset"
        )
    if _is_array_input(x):
        return x, y, None
    return None


def _validation_sample(validation_data):
    """Up to `PREFLIGHT_EXAMPLES` validation examples `(x, y)`, or None.

    Reads a few batches of a dataset when its batches are small, so the
    accuracy check has enough examples.
    """
    if validation_data is None:
        return None
    if _is_dataset(validation_data):
        if _is_py_dataset(validation_data):
            source = _py_dataset_batches(
                validation_data, _MAX_VALIDATION_BATCHES, "validation_data"
            )
        else:
            source = validation_data.take(_MAX_VALIDATION_BATCHES)
        batches = []
        count = 0
        for batch in source:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            batches.append((x, y))
            count += int(keras.tree.flatten(x)[0].shape[0])
            if count >= PREFLIGHT_EXAMPLES:
                break
        if not batches:
            raise ValueError(
                "Invalid value for argument `validation_data`. Expected a "
                "dataset with at least one batch. Received: an empty "
                "tf.data.Dataset"
            )
        if any(y is None for _, y in batches):
            return None
        x, y = keras.tree.map_structure(
            lambda *parts: np.concatenate(
                [keras.ops.convert_to_numpy(p) for p in parts]
            ),
            *batches,
        )
        return _head(x), _head(y)
    if isinstance(validation_data, (tuple, list)):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        if y is not None and _is_array_input(x):
            return _head(x), _head(y)
    return None


def _head(structure):
    if structure is None:
        return None
    return keras.tree.map_structure(
        lambda a: a[:PREFLIGHT_EXAMPLES], structure
    )


def _call_model(model, role, x):
    try:
        return model(x, training=False)
    except Exception as error:  # the framework's error, re-worded
        shapes = keras.tree.map_structure(lambda a: tuple(a.shape), x)
        raise ValueError(
            f"Invalid value for argument `{role}`. Expected a model that "
            f"accepts the training batches. Received: {role} "
            f"{model.name!r} failed on a batch of shape {shapes}: {error}"
        ) from error


def _check_finite(name, values, where="the first batch"):
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise ValueError(
            f"Invalid {name} in {where}. Expected finite values. "
            f"Received: {bad} NaN/inf value(s) out of {array.size}"
        )


def _check_finite_inputs(inputs, where="the first batch"):
    # Every floating-point input (also of dict/tuple inputs); integer inputs
    # such as token ids cannot be NaN.
    for part in keras.tree.flatten(inputs):
        array = np.asarray(keras.ops.convert_to_numpy(part))
        if np.issubdtype(array.dtype, np.floating):
            _check_finite("inputs", array, where)


def _batch_size(structure):
    if structure is None:
        return None
    return keras.tree.flatten(structure)[0].shape[0]


def _check_batch_sizes(inputs, labels, cached_logits, cached_features=None):
    """Raises if the parts of one batch disagree on its number of examples.

    Precomputed teacher logits zipped with the wrong data (another split,
    another batch size) show up here before they silently misalign.
    """
    sizes = {
        "inputs": _batch_size(inputs),
        "labels": _batch_size(labels),
        "teacher_logits": _batch_size(cached_logits),
        **{
            f"teacher_features[{name!r}]": _batch_size(value)
            for name, value in (cached_features or {}).items()
        },
    }
    known = {k: v for k, v in sizes.items() if v is not None}
    if len(set(known.values())) > 1:
        received = ", ".join(f"{k}={v}" for k, v in known.items())
        raise ValueError(
            "Invalid first batch. Expected inputs, labels and teacher "
            "logits with the same number of examples (teacher logits must "
            "be computed on exactly these examples, in this order). "
            f"Received: {received}"
        )


def _check_labels(labels, num_classes, where="the first batch"):
    labels = np.asarray(labels)
    if losses.is_one_hot(labels, num_classes):
        return
    if labels.ndim >= 2 and labels.shape[-1] != 1:
        raise ValueError(
            f"Invalid labels in {where}. Expected class ids of "
            f"shape (batch,) or one-hot rows of shape (batch, {num_classes}) "
            f"for a student with {num_classes} classes. Received: labels of "
            f"shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError(
                f"Invalid labels in {where}. Expected integer class "
                f"ids. Received: non-integer values such as "
                f"{labels.ravel()[:5].tolist()}"
            )
    # -1 marks an unlabelled example (semi-supervised data).
    labelled = labels[labels != losses.UNLABELLED]
    if labelled.size == 0:
        return
    low, high = labelled.min(), labelled.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"Invalid labels in {where}. Expected class ids in "
            f"[0, {num_classes - 1}] for a student with {num_classes} "
            f"classes, or {losses.UNLABELLED} for an unlabelled example. "
            f"Received: labels from {low} to {high}"
        )


def class_ids(labels, num_classes):
    """NumPy int64 class ids `(batch,)` of sparse or one-hot `labels`.

    Kept for callers of this name; the conversion is
    `tfkd.losses.class_ids`.
    """
    return np.asarray(losses.class_ids(labels, num_classes)).astype(np.int64)


def labelled_class_ids(labels, num_classes):
    """NumPy class ids `(labelled,)` and the mask of labelled examples.

    Args:
        labels: Sparse or one-hot labels of a batch (arrays or tensors).
        num_classes: The student's number of classes.

    Returns:
        A tuple `(ids, mask)`: int64 ids of the labelled examples and a
        bool mask `(batch,)` of which examples are labelled.
    """
    mask = np.asarray(losses.labelled_mask(labels, num_classes)) > 0.0
    return class_ids(labels, num_classes)[mask], mask


def _refuse_probabilities_as_cached_logits(cached_logits):
    """Raises if precomputed "teacher logits" are really probabilities.

    A cache filled from `teacher.predict` of a softmax teacher holds
    probabilities; the Distiller would soften them a second time and the
    student would learn from nearly uniform targets.
    """
    if teacher_outputs_lib.looks_like_probabilities(cached_logits):
        raise ValueError(
            "Invalid teacher logits in the first batch. Expected logits "
            "(or log-probabilities): the Distiller applies softmax(t / T) "
            "itself. Received: rows that are non-negative and sum to 1, "
            "i.e. probabilities from a softmax teacher. Store "
            "tfkd.teacher_outputs.probabilities_to_logits(p) (log p) "
            "instead, or let tfkd.TeacherCache compute them."
        )


def _warn_probabilities_treated_as_logits():
    warnings.warn(
        "The teacher's outputs on the first batch look like probabilities "
        "(every row is non-negative and sums to 1), but the Distiller was "
        "built with teacher_outputs='logits', so they will be softened a "
        "second time into nearly uniform soft targets and the student may "
        "collapse to one class. Fix: teacher_outputs='probabilities' (or "
        "'auto').",
        DistillationWarning,
        stacklevel=4,
    )


def teacher_accuracy(distiller, inputs, labels, cached_logits=None):
    """The teacher's accuracy on `labels`, over the student's classes.

    Args:
        distiller: A `tfkd.Distiller`.
        inputs: A batch of inputs.
        labels: Their labels (class ids or one-hot rows).
        cached_logits: Precomputed teacher logits for the batch, or `None`
            to run the teacher.

    Returns:
        A float in [0, 1] over the labelled examples, or `None` when there
        is no teacher signal or no labelled example.
    """
    logits = distiller.teacher_logits(inputs, cached_logits, training=False)
    if logits is None:
        return None
    logits = np.asarray(keras.ops.convert_to_numpy(logits))
    ids, labelled = labelled_class_ids(labels, logits.shape[-1])
    if not ids.size:  # no labelled example to measure on
        return None
    return float(np.mean(np.argmax(logits[labelled], axis=-1) == ids))


def _check_cached_features(distiller, targets):
    """Raises unless a batch's cached teacher features fit the terms.

    They must name exactly the teacher layers the terms read, with those
    layers' shapes, and be finite.
    """
    features = teacher_outputs_lib.cached_teacher_features(targets)
    if features is None:
        return
    shapes = getattr(distiller, "teacher_feature_shapes", {})
    teacher_outputs_lib.check_cached_features(features, shapes)
    for name, value in features.items():
        _check_finite(
            f"teacher features of layer {name!r}",
            keras.ops.convert_to_numpy(value),
        )


def _check_validation_data(distiller, validation_data, num_classes):
    """Input and label checks of `validation_data`, and the chance warning."""
    sample = _validation_sample(validation_data)
    if sample is None:
        return
    inputs, targets = sample
    labels, cached_logits = teacher_outputs_lib.split_targets(targets)
    where = "the first validation batch"
    _check_finite_inputs(inputs, where)
    _check_labels(labels, num_classes, where)
    if cached_logits is not None:
        _check_finite("teacher logits", cached_logits, where)
    elif distiller.teacher is not None:
        raw = _call_model(distiller.teacher, "teacher", inputs)
        _check_finite("teacher outputs", keras.ops.convert_to_numpy(raw), where)
    accuracy = teacher_accuracy(distiller, inputs, labels, cached_logits)
    count = len(labelled_class_ids(labels, num_classes)[0])
    if accuracy is None or count < MIN_EXAMPLES_FOR_CHANCE:
        return
    limit = near_chance_accuracy(num_classes, count)
    if accuracy <= limit:
        warnings.warn(
            f"The teacher's accuracy on the first {count} validation "
            f"examples is {accuracy:.1%}, near chance for {num_classes} "
            f"classes ({1 / num_classes:.1%}; this warning fires at or "
            f"below {limit:.1%}). The teacher's classes probably do not "
            "match the labels: check the class order of the labels "
            "against the teacher's, `teacher_class_indices`, and that the "
            "teacher (or the teacher cache) was made for this dataset. "
            "Distilling from it teaches the student nothing useful.",
            DistillationWarning,
            stacklevel=4,
        )


def check_first_batch(
    distiller, x, y=None, training=True, validation_data=None
):
    """Checks one batch against `distiller` and resolves "auto" outputs.

    Nothing is written into `distiller`: what the batch resolves comes
    back, for the `Distiller` to keep.

    Args:
        distiller: The `tfkd.Distiller`.
        x: As passed to `fit`/`evaluate`.
        y: As passed to `fit`/`evaluate`.
        training: Whether the data is for training (a teacher signal is
            then required).
        validation_data: The `validation_data` given to `fit`, if any: a
            `tf.data.Dataset`, a `keras.utils.PyDataset` or an `(x, y)`
            tuple. Its first examples get
            the input and label checks, and a warning when the teacher's
            accuracy on them is near chance (see `near_chance_accuracy`).

    Returns:
        A `Resolved`.

    Raises:
        ValueError: for data that does not fit the models (or the
            `mixing` layer), labels out of range (-1 marks an unlabelled
            example), no labels and no teacher signal in evaluation,
            non-finite inputs or teacher outputs, a class-count
            mismatch, batch parts of different sizes, precomputed teacher
            logits that are probabilities, or no teacher signal.

    Warns:
        DistillationWarning: when the teacher's outputs look like
            probabilities but `teacher_outputs="logits"`, and when the
            teacher is near chance on the validation labels.
    """
    batch = _peek(x, y)
    if batch is None:
        return Resolved()
    full_inputs, full_targets, _ = batch
    _, full_cached = teacher_outputs_lib.split_targets(full_targets)
    if _is_dataset(x):
        # Whole arrays passed to fit are batched by Keras, which checks
        # their lengths itself; a dataset's batch is checked here.
        _check_batch_sizes(
            full_inputs,
            teacher_outputs_lib.split_targets(full_targets)[0],
            full_cached,
            teacher_outputs_lib.cached_teacher_features(full_targets),
        )
    inputs, targets = _head(full_inputs), _head(full_targets)
    labels, cached_logits = teacher_outputs_lib.split_targets(targets)
    refuse_ensemble_targets_at_another_temperature(distiller, targets)
    if training:
        check_example_indices(distiller, full_targets)
        refuse_augmentation_on_cached(distiller, cached_logits)
        if cached_logits is None and distiller.teacher is None:
            raise no_teacher_signal_error()
    elif labels is None and cached_logits is None and distiller.teacher is None:
        raise no_labels_and_no_teacher_error()
    _check_finite_inputs(inputs)
    _check_cached_features(distiller, targets)

    student_logits = _call_model(distiller.student, "student", inputs)
    num_classes = student_logits.shape[-1]
    if labels is not None:
        _check_labels(labels, num_classes)
    if training and getattr(distiller, "mixing", None) is not None:
        _check_mixing(distiller.mixing, inputs, labels, num_classes)

    if cached_logits is not None:
        outputs, kind = cached_logits, "logits"
    elif distiller.teacher is not None:
        outputs = _call_model(distiller.teacher, "teacher", inputs)
        # An ensemble returns its mixture's logits, whatever its members do.
        kind = (
            "logits"
            if getattr(distiller, "is_ensemble", False)
            else distiller.teacher_outputs
        )
    else:
        return Resolved()
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs))
    _check_finite("teacher outputs", outputs)
    model_checks.check_class_counts(
        outputs.shape[-1], num_classes, distiller.teacher_class_indices
    )
    looks_like_probabilities = teacher_outputs_lib.looks_like_probabilities(
        outputs
    )
    resolved = Resolved()
    if cached_logits is not None:
        _refuse_probabilities_as_cached_logits(outputs)
    elif kind == "auto":
        resolved = Resolved(
            "probabilities" if looks_like_probabilities else "logits"
        )
    elif kind == "logits" and looks_like_probabilities:
        _warn_probabilities_treated_as_logits()
    if training:
        # The accuracy reads the argmax, the same for logits and
        # probabilities, so "auto" needs no resolving for it.
        _check_validation_data(distiller, validation_data, num_classes)
    return resolved
