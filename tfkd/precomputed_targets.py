"""Teacher outputs computed once, for every term, so training skips the teacher.

Online distillation runs the teacher on every step, over the same images
epoch after epoch: with a teacher larger than the student that pass costs
more than the student's own step. Without random augmentation (or
`mixing`, or further views) the teacher's outputs on an image never
change, so running it once over the training rows and feeding its outputs
with the labels is exact. `tfkd.TeacherCache` does this for logits, on
disk and for data of any size; this module does it in memory for
everything a `Distiller` reads from its teacher: the logits, the outputs
of each teacher layer its terms read (CRD's embedding, FitNets' hint,
attention maps, ...), and the row indices of terms with a per-example
memory (CRD). `Distiller.precompute_targets` is the entry point.
"""

import keras
import numpy as np

from tfkd import backend_support
from tfkd import teacher_logits
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation

#: Megabytes per byte count, for the memory check and its message.
_MEGABYTE = 2**20


def precompute_targets(
    distiller, teacher_view, x, y=None, *, batch_size=256, verbose="auto",
    max_megabytes=4096,
):
    """`Distiller.precompute_targets`: see there for the arguments.

    Args:
        distiller: The `tfkd.Distiller` whose teacher and terms decide what
            is computed.
        teacher_view: The distiller's `tfkd.feature_views.FeatureView` of
            its teacher (its logits and the layers the terms read).
        x: Arrays or tensors (or a nest of them), one row per example.
        y: Labels, one per row, or `None` (every row unlabelled, -1).
        batch_size: Rows per teacher call.
        verbose: `0`, `1` or `"auto"`.
        max_megabytes: The most memory the outputs may take.

    Returns:
        A dict of NumPy arrays, the `y` to train on with `x`.
    """
    _check_distiller(distiller)
    rows = _row_count(x)
    labels = _labels(y, rows)
    validation.check_positive_int("batch_size", batch_size)
    validation.check_positive_float("max_megabytes", max_megabytes)
    validation.check_choice("verbose", verbose, (0, 1, 2, "auto"))
    kind = distiller.resolved_teacher_outputs
    progress = (
        keras.utils.Progbar(-(-rows // batch_size)) if verbose in (1, "auto")
        else None
    )
    # tfkd's traced teacher call (`tfkd.teacher_logits`): outside any
    # `tf.distribute` replica context, unlike `Model.predict_on_batch`,
    # which under `MirroredStrategy` returns each replica's copy of the batch.
    predict = teacher_logits.predict_function(teacher_view.inference_model)
    logits = features = None
    for batch, start in enumerate(range(0, rows, batch_size)):
        chunk = keras.tree.map_structure(
            lambda leaf: leaf[start:start + batch_size], x
        )
        if backend_support.tensorflow_is_backend():
            chunk = keras.tree.map_structure(keras.ops.convert_to_tensor, chunk)
        outputs, layer_outputs = teacher_view.named_outputs(predict(chunk))
        outputs = _finite("teacher outputs", outputs, batch)
        if kind is None:  # "auto": decided on the first batch, as in fit
            kind = (
                "probabilities"
                if teacher_outputs_lib.looks_like_probabilities(outputs)
                else "logits"
            )
        batch_logits = np.asarray(
            keras.ops.convert_to_numpy(
                teacher_outputs_lib.to_logits(outputs, kind)
            ),
            np.float32,
        )
        batch_features = {
            name: _finite(f"outputs of teacher layer {name!r}", value, batch)
            for name, value in layer_outputs.items()
        }
        if logits is None:
            _check_memory(rows, batch_logits, batch_features, max_megabytes)
            logits = np.empty((rows, *batch_logits.shape[1:]), np.float32)
            features = {
                name: np.empty((rows, *value.shape[1:]), np.float32)
                for name, value in batch_features.items()
            }
        stop = start + len(batch_logits)
        logits[start:stop] = batch_logits
        for name, value in batch_features.items():
            features[name][start:stop] = value
        if progress is not None:
            progress.update(batch + 1)
    targets = teacher_outputs_lib.attach_teacher_logits(
        labels, logits, teacher_features=features or None
    )
    if any(getattr(t, "needs_example_indices", False)
           for t in distiller.extra_losses):
        targets[teacher_outputs_lib.INDEX_KEY] = np.arange(rows, dtype=np.int64)
    return targets


def _check_distiller(distiller):
    if distiller.teacher is None:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a teacher model "
            "to precompute outputs from. Received: a Distiller with "
            "teacher=None"
        )
    if distiller.is_ensemble:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected one teacher "
            "model: an ensemble's soft targets are exact at one temperature "
            "only, which `tfkd.TeacherCache.build(ensemble, ..., "
            "temperature=T)` records. Received: an ensemble of "
            f"{len(distiller.teachers)} teachers"
        )
    if distiller.augmentation is not None or distiller.mixing is not None or (
        distiller.views
    ):
        raise ValueError(
            "Invalid Distiller for precomputed targets. Expected no "
            "`augmentation`, `mixing` or `views`: each step shows the "
            "teacher a new random view, whose outputs cannot be computed "
            "in advance. Received: "
            f"augmentation={distiller.augmentation!r}, "
            f"mixing={distiller.mixing!r}, views={distiller.views!r}"
        )


def _row_count(x):
    """The number of rows of `x`, after refusing what is not arrays."""
    if hasattr(x, "element_spec") or isinstance(x, keras.utils.PyDataset) or (
        hasattr(x, "__next__")
    ):
        raise TypeError(
            "Invalid type for argument `x`. Expected NumPy arrays or tensors "
            "(or a nest of them), one row per example, so that the outputs "
            "line up with the rows whatever `fit` does with them. Received: "
            f"{type(x).__name__}. For a dataset, build a tfkd.TeacherCache "
            "(logits) or collect its rows into arrays first."
        )
    leaves = keras.tree.flatten(x)
    sizes = sorted({int(np.shape(leaf)[0]) if np.ndim(leaf) else 0
                    for leaf in leaves})
    if not leaves or sizes == [0]:
        raise ValueError(
            "Invalid value for argument `x`. Expected at least one row. "
            "Received: an empty input"
        )
    if len(sizes) != 1:
        raise ValueError(
            "Invalid value for argument `x`. Expected inputs with the same "
            f"number of rows. Received: row counts {sizes}"
        )
    return sizes[0]


def _labels(y, rows):
    """`y` as a NumPy array of `rows` labels; `None` means all unlabelled."""
    if y is None:
        return np.full((rows,), -1, np.int64)
    labels = np.asarray(keras.ops.convert_to_numpy(y))
    if labels.ndim == 0 or len(labels) != rows:
        raise ValueError(
            "Invalid value for argument `y`. Expected one label per row of "
            f"`x` ({rows} rows). Received: labels of shape {labels.shape}"
        )
    return labels


def _finite(name, values, batch):
    """`values` as float32 NumPy, or a ValueError naming the batch."""
    array = np.asarray(keras.ops.convert_to_numpy(values), np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"Invalid value for argument `teacher`. Expected finite {name}. "
            f"Received: NaN or inf in batch {batch + 1}"
        )
    return array


def _check_memory(rows, logits, features, max_megabytes):
    """Raises before the full pass if the outputs would exceed the limit."""
    sizes = {"teacher_logits": logits, **features}
    megabytes = {
        name: rows * int(np.prod(value.shape[1:])) * 4 / _MEGABYTE
        for name, value in sizes.items()
    }
    total = sum(megabytes.values())
    if total > max_megabytes:
        parts = ", ".join(f"{name}: {size:,.0f} MB" for name, size in
                          megabytes.items())
        raise ValueError(
            "Invalid value for argument `max_megabytes`. Expected room for "
            f"the teacher's outputs on {rows:,} rows, {total:,.0f} MB "
            f"({parts}). Received: max_megabytes={max_megabytes}. Raise it "
            "if the memory is there; otherwise distil these terms with the "
            "teacher online, or read layers with smaller outputs."
        )
