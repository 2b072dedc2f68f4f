"""Writes a teacher cache: one streaming pass of batched teacher inference.

Memory stays at a few batches whatever the dataset's size: each batch is
run through the teacher, encoded, hashed and appended to its files, then
dropped. The whole build happens in a sibling `<path>.partial-*` directory
that is renamed to `<path>` only after every file and then the metadata
are on disk (`tfkd.cache.format`), so a build that fails, is interrupted
or is killed never leaves anything that opens as a cache. A build that
fails with a Python exception also removes its partial directory; a killed
process cannot, and `TeacherCache.open` names the leftovers.
"""

import datetime
import os
import secrets
import shutil
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfkd import losses
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.cache import codec as codec_lib
from tfkd.cache import fingerprint
from tfkd.cache import format as format_lib
from tfkd.cache import topk
from tfkd.cache import views as views_lib
from tfkd.utils import files

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _tfkd_version():
    import tfkd  # at call time: tfkd/__init__.py imports this package

    return tfkd.__version__


def split_batch(element, step):
    """`(inputs, labels)` of a dataset element as NumPy arrays.

    A batch of inputs only (a tensor, or a 1-tuple) is unlabelled data: it
    gets int32 labels of -1 (`tfkd.losses.UNLABELLED`), which the cache
    stores and streams back and the `Distiller` leaves out of the hard
    loss. Labelled batches may hold -1 labels too.

    Args:
        element: One element of the dataset.
        step: Its 1-based index, for the error message.

    Returns:
        A tuple `(inputs, labels)` of NumPy arrays.

    Raises:
        ValueError: for elements of any other structure, or several inputs.
    """
    if isinstance(element, (tuple, list)) and len(element) == 1:
        element = element[0]
    if not isinstance(element, (tuple, list, dict)):
        inputs = np.asarray(element)
        return inputs, np.full(len(inputs), losses.UNLABELLED, np.int32)
    if not isinstance(element, (tuple, list)) or len(element) != 2:
        raise ValueError(
            "Invalid value for argument `dataset`. Expected batches "
            "`(inputs, labels)` with a single input tensor, or `inputs` "
            "alone (unlabelled). Received: batch "
            f"{step} of structure "
            f"{tf.nest.map_structure(lambda t: getattr(t, 'shape', t), element)}"
        )
    inputs, labels = element
    if isinstance(inputs, (dict, tuple, list)):
        raise ValueError(
            "Invalid value for argument `dataset`. Expected a single input "
            "tensor per batch (multi-input models are not supported by the "
            f"cache). Received: inputs of type {type(inputs).__name__}"
        )
    return np.asarray(inputs), np.asarray(labels)


class _OutputWriters:
    """The files of the teacher's outputs: dense logits or top-k triples."""

    def __init__(self, directory, dtype, top_k, top_k_temperature):
        self.dtype = np.dtype(dtype)
        self.top_k = top_k
        self.top_k_temperature = top_k_temperature
        if top_k is None:
            self.writers = [format_lib.ArrayWriter(directory, format_lib.LOGITS)]
        else:
            self.writers = [
                format_lib.ArrayWriter(directory, name)
                for name in (
                    format_lib.TOP_K_VALUES,
                    format_lib.TOP_K_INDICES,
                    format_lib.TOP_K_FILL,
                )
            ]
        self.tail_mass_sum = 0.0
        self.tail_mass_max = 0.0

    def append(self, logits, step):
        """Writes float32 logits `(rows, classes)` of batch `step`."""
        if self.top_k is None:
            stored = logits
        else:
            if self.top_k >= logits.shape[-1]:
                raise ValueError(
                    "Invalid value for argument `top_k`. Expected an int "
                    f"below the teacher's {logits.shape[-1]} classes. "
                    f"Received: top_k={self.top_k}"
                )
            values, indices, fill = topk.compress(
                logits, self.top_k, self.top_k_temperature
            )
            mass = topk.tail_mass(logits, self.top_k, self.top_k_temperature)
            self.tail_mass_sum += float(mass.sum())
            self.tail_mass_max = max(self.tail_mass_max, float(mass.max()))
            stored = values
        if self.dtype == np.float16:
            peak = float(np.max(np.abs(stored)))
            if peak > _FLOAT16_MAX:
                raise ValueError(
                    "Invalid value for argument `dtype`. float16 holds "
                    f"values up to {_FLOAT16_MAX:g} and the teacher's "
                    f"logits reach {peak:g} in batch {step}. Expected "
                    "dtype='float32' for this teacher. Received: "
                    "dtype='float16'"
                )
        if self.top_k is None:
            self.writers[0].append(logits.astype(self.dtype))
        else:
            self.writers[0].append(values.astype(self.dtype))
            self.writers[1].append(indices)
            self.writers[2].append(fill.astype(self.dtype))

    def close(self):
        return {w.name: w.close() for w in self.writers}

    def abort(self):
        for writer in self.writers:
            writer.abort()


# One traced inference function per teacher, as `Model.predict` keeps its
# own: rebuilding a cache (a stale one, or in a benchmark) does not trace
# the teacher again. Keys are weak and the function holds the teacher only
# through a weak reference, so the cache never keeps a model alive.
_PREDICT_FUNCTIONS = weakref.WeakKeyDictionary()


def _predict_function(teacher):
    function = _PREDICT_FUNCTIONS.get(teacher)
    if function is None:
        teacher_ref = weakref.ref(teacher)

        @tf.function(reduce_retracing=True)
        def function(inputs):
            return teacher_ref()(inputs, training=False)

        _PREDICT_FUNCTIONS[teacher] = function
    return function


class _TeacherRunner:
    """Runs the teacher on batches; resolves and converts its outputs."""

    def __init__(self, teacher, teacher_outputs):
        self.teacher = teacher
        self.kind = None if teacher_outputs == "auto" else teacher_outputs
        self._predict = _predict_function(teacher)

    def logits(self, inputs, step):
        """float32 logits `(batch, classes)` of the teacher on `inputs`."""
        outputs = self._predict(tf.convert_to_tensor(inputs))
        if isinstance(outputs, (dict, list, tuple)):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a model with "
                "a single output of shape (batch, classes). Received: a "
                f"model with {len(outputs)} outputs"
            )
        if len(outputs.shape) != 2:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected outputs of "
                "shape (batch, classes). Received: outputs of shape "
                f"{tuple(outputs.shape)}"
            )
        if self.kind is None:
            # Decided once, on the first batch, as the Distiller does.
            self.kind = (
                "probabilities"
                if teacher_outputs_lib.looks_like_probabilities(
                    np.asarray(outputs)
                )
                else "logits"
            )
        logits = teacher_outputs_lib.to_logits(outputs, self.kind)
        logits = np.asarray(logits, dtype=np.float32)
        if not np.all(np.isfinite(logits)):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected finite "
                f"outputs. Received: NaN or inf in the outputs of batch {step}"
            )
        return logits


def _progbar(dataset, verbose):
    if not verbose:
        return None
    cardinality = int(dataset.cardinality())
    return keras.utils.Progbar(
        target=cardinality if cardinality >= 0 else None,
        unit_name="batch",
        verbose=verbose,
    )


def _augmentation_entry(augmentation):
    if augmentation is None:
        return None
    entry = {"class_name": type(augmentation).__name__, "name": augmentation.name}
    try:
        config = keras.saving.serialize_keras_object(augmentation)
        entry["config"] = _json_safe(config)
    except Exception:  # a custom layer without get_config; the name suffices
        pass
    return entry


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def commit(partial, path):
    """Moves a finished partial directory to `path`, replacing any old one.

    The rename is atomic; replacing needs two renames, so for an instant
    between them `path` does not exist (it never holds a mixture).
    """
    replaced = None
    if os.path.lexists(path):
        replaced = f"{path}.replaced-{secrets.token_hex(4)}"
        os.rename(path, replaced)
    os.rename(partial, path)
    files.fsync_directory(os.path.dirname(os.path.abspath(path)))
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def build(
    teacher,
    dataset,
    path,
    *,
    dtype,
    top_k,
    top_k_temperature,
    teacher_outputs,
    input_dtype,
    views,
    augmentation,
    overwrite,
    verbose,
):
    """Builds a cache at `path`; arguments as `TeacherCache.build`.

    No defaults here: `TeacherCache.build` holds them and passes every
    argument, so they cannot drift apart.

    The arguments are validated by `TeacherCache.build`; this function
    checks the data as it streams.

    Returns:
        The metadata dict written to `path`.

    Raises:
        FileExistsError: if `path` exists and `overwrite` is False.
        ValueError: for data or teacher outputs the cache cannot hold.
    """
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"A file or directory already exists at {path!r}. Open an "
            "existing cache with `TeacherCache.open(path)`, or pass "
            "overwrite=True to replace it."
        )
    started = time.perf_counter()
    partial = format_lib.partial_directory(path, secrets.token_hex(4))
    os.makedirs(partial)
    runner = _TeacherRunner(teacher, teacher_outputs)
    augment = (
        views_lib.augment_function(augmentation) if views > 1 else None
    )
    data_fingerprint = fingerprint.DataFingerprint()
    progbar = _progbar(dataset, verbose)
    codec = input_writer = label_writer = outputs = None
    classes = None
    try:
        for step, element in enumerate(dataset, start=1):
            inputs, labels = split_batch(element, step)
            data_fingerprint.update(inputs, labels)
            if augment is not None:
                rows = views_lib.expand_views(augment, inputs, views)
                labels = views_lib.repeat_labels(labels, views)
            else:
                rows = inputs
            if codec is None:
                codec = codec_lib.InputCodec.resolve(input_dtype, rows)
                input_writer = format_lib.ArrayWriter(partial, format_lib.INPUTS)
                label_writer = format_lib.ArrayWriter(partial, format_lib.LABELS)
                outputs = _OutputWriters(
                    partial, dtype, top_k, top_k_temperature
                )
            stored = codec.encode(rows)
            # The teacher sees exactly what the stream will hand the student.
            seen = codec.decode(stored)
            if (
                input_dtype == "auto"
                and codec.kind == "unit_uint8"
                and not np.array_equal(seen, rows)
            ):
                raise ValueError(
                    "Invalid value for argument `input_dtype`. "
                    "input_dtype='auto' chose uint8 storage because the "
                    "first batch held 8-bit images scaled to [0, 1], but "
                    f"batch {step} holds other values, which uint8 would "
                    "change. Expected input_dtype='float32' (exact) or "
                    "'float16'/'uint8' (lossy, consistent) for this data. "
                    "Received: input_dtype='auto'"
                )
            logits = runner.logits(seen, step)  # (rows, classes)
            if classes is None:
                classes = logits.shape[-1]
            input_writer.append(stored)
            label_writer.append(labels)
            outputs.append(logits, step)
            if progbar is not None:
                progbar.update(step)
        if codec is None:
            raise ValueError(
                "Invalid value for argument `dataset`. Expected at least one "
                "batch. Received: an empty dataset"
            )
        arrays = {
            format_lib.INPUTS: input_writer.close(),
            format_lib.LABELS: label_writer.close(),
        }
        arrays.update(outputs.close())
        examples = data_fingerprint.count
        metadata = {
            "format": format_lib.FORMAT_NAME,
            "format_version": format_lib.FORMAT_VERSION,
            "tfkd_version": _tfkd_version(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "build_seconds": round(time.perf_counter() - started, 3),
            "examples": examples,
            "views": views,
            "rows": examples * views,
            "classes": int(classes),
            "outputs": {
                "dtype": np.dtype(dtype).name,
                "storage": "dense" if top_k is None else "top_k",
                "top_k": top_k,
                "top_k_temperature": (
                    None if top_k is None else float(top_k_temperature)
                ),
                "tail_mass_mean": (
                    None
                    if top_k is None
                    else outputs.tail_mass_sum / (examples * views)
                ),
                "tail_mass_max": None if top_k is None else outputs.tail_mass_max,
            },
            "teacher": {
                "name": teacher.name,
                "class_name": type(teacher).__name__,
                "parameters": fingerprint.count_parameters(teacher),
                "fingerprint": fingerprint.teacher_fingerprint(teacher),
                "outputs": runner.kind,
                "stored_as": (
                    "log_probabilities"
                    if runner.kind == "probabilities"
                    else "logits"
                ),
            },
            "data": {"fingerprint": data_fingerprint.hexdigest()},
            "inputs": codec.get_config(),
            # `TeacherCache.build` refuses an augmentation with views=1.
            "augmentation": _augmentation_entry(augmentation),
            "arrays": arrays,
        }
        format_lib.write_metadata(partial, metadata)
        commit(partial, path)
        return metadata
    except BaseException:
        for writer in (input_writer, label_writer, outputs):
            if writer is not None:
                writer.abort()
        shutil.rmtree(partial, ignore_errors=True)
        raise
