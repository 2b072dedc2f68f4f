"""Writes a teacher cache: one streaming pass of batched teacher inference.

Memory stays at a few batches whatever the dataset's size: each batch is
run through the teacher, encoded, hashed and appended to its files, then
dropped. The whole build happens in a sibling `<path>.partial-*` directory
(marked as tfkd's, `tfkd.cache.owned`) that is renamed to `<path>` only
after every file and then the metadata are on disk (`tfkd.cache.format`),
so a build that fails, is interrupted or is killed never leaves anything
that opens as a cache. A build that fails with a Python exception also
removes its partial directory; a killed process cannot, and
`TeacherCache.open` names the leftovers, which the next build of the same
path removes.

One writer per path: a build holds the destination's lock
(`tfkd.cache.locking`) from its first look at `<path>` to its commit, and
re-checks `<path>` under it, so `overwrite=False` never replaces a cache
another process committed meanwhile. Nothing non-finite is stored: a NaN
or an infinity in a batch's inputs, labels or teacher outputs stops the
build, naming the batch, before anything is committed.
"""

import dataclasses
import datetime
import os
import shutil
import time

import keras
import numpy as np

from tfkd import ensembles
from tfkd import losses
from tfkd import teacher_logits as teacher_logits_lib
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd import version
from tfkd.cache import batches
from tfkd.cache import codec as codec_lib
from tfkd.cache import fingerprint
from tfkd.cache import format as format_lib
from tfkd.cache import locking
from tfkd.cache import owned
from tfkd.cache import row_blocks
from tfkd.cache import topk
from tfkd.cache import views as views_lib
from tfkd.utils import progress
from tfkd.utils import validation

#: Storage dtypes of the teacher's outputs.
OUTPUT_DTYPES = ("float16", "float32")

_FLOAT16_MAX = float(np.finfo(np.float16).max)


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
            f"{keras.tree.map_structure(lambda t: getattr(t, 'shape', t), element)}"
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
        _refuse_non_finite(stored, "teacher outputs", step)
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


def _refuse_non_finite(array, what, step):
    """Raises if a float `array` of batch `step` holds NaN or an infinity.

    A cache stores what it is given and streams it every epoch: one NaN
    input (which a ReLU teacher may well map to finite logits) would train
    a broken student with no error anywhere, so it stops the build here.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = np.flatnonzero(~finite.reshape(len(array), -1).all(axis=1))
    nans = int(np.isnan(array).sum())
    infinities = int(np.isinf(array).sum())
    raise ValueError(
        f"Invalid value for argument `dataset`. Expected finite {what} in "
        "every batch (a cache stores them as they are, and a NaN input can "
        "still give finite teacher logits). Received: batch "
        f"{step} holds {nans} NaN and {infinities} infinite value(s) in its "
        f"{what}, in example(s) {bad[:8].tolist()} of the batch. Nothing was "
        "committed."
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


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """The options of one cache build, validated when created.

    `TeacherCache.build` documents each option and holds the defaults;
    this object carries them to `build`, so they cannot drift apart, and
    its validation runs before any file is touched.

    Args:
        dtype: `"float16"` or `"float32"`, storage of the outputs.
        top_k: Int k or `None` (dense logits).
        top_k_temperature: Float > 0.
        teacher_outputs: `"auto"`, `"logits"` or `"probabilities"`.
        input_dtype: One of `tfkd.cache.codec.INPUT_DTYPES`.
        views: Int K >= 1.
        augmentation: A `keras.layers.Layer` when `views > 1`, else `None`.
        overwrite: Whether to replace an existing `path`.
        verbose: `0`, `1` or `2`.
        store_inputs: Whether to store the inputs and labels, or only the
            teacher's outputs with order digests (`tfkd.cache.row_blocks`).
        shard: `None`, or `(index, count)` when this build writes one shard
            of a sharded cache (`tfkd.cache.shards`).

    Raises:
        TypeError: for an option of the wrong type.
        ValueError: for an option out of range.
    """

    dtype: str
    top_k: object
    top_k_temperature: float
    teacher_outputs: str
    input_dtype: str
    views: int
    augmentation: object
    overwrite: bool
    verbose: int
    store_inputs: bool = True
    shard: object = None

    def __post_init__(self):
        validation.check_choice("dtype", self.dtype, OUTPUT_DTYPES)
        if self.top_k is not None:
            validation.check_positive_int("top_k", self.top_k)
        # Normalised (an int temperature becomes a float) in place: the
        # dataclass is frozen for everyone else.
        object.__setattr__(
            self,
            "top_k_temperature",
            _check_top_k_temperature(self.top_k_temperature),
        )
        validation.check_choice(
            "teacher_outputs",
            self.teacher_outputs,
            teacher_outputs_lib.TEACHER_OUTPUT_KINDS,
        )
        validation.check_choice(
            "input_dtype", self.input_dtype, codec_lib.INPUT_DTYPES
        )
        validation.check_positive_int("views", self.views)
        _check_views_augmentation(self.views, self.augmentation)
        if self.verbose not in (0, 1, 2):
            raise validation.invalid_value("verbose", "0, 1 or 2", self.verbose)
        _check_store_inputs(self.store_inputs, self.views)


def _check_store_inputs(store_inputs, views):
    if not isinstance(store_inputs, bool):
        raise validation.invalid_type("store_inputs", "a bool", store_inputs)
    if not store_inputs and views > 1:
        raise validation.invalid_value(
            "store_inputs",
            "True when views > 1 (augmented views exist only in the cache; "
            "a logits-only cache re-joins the unaugmented pipeline)",
            store_inputs,
        )


def _check_top_k_temperature(value):
    try:
        return validation.check_temperature(value)
    except TypeError:
        raise validation.invalid_type(
            "top_k_temperature", "a float > 0", value
        ) from None
    except ValueError:
        raise validation.invalid_value(
            "top_k_temperature", "a float > 0", value
        ) from None


def _check_views_augmentation(views, augmentation):
    if views > 1 and not isinstance(augmentation, keras.layers.Layer):
        raise validation.invalid_type(
            "augmentation",
            "a `keras.layers.Layer` drawing random views when views > 1",
            augmentation,
        )
    if views == 1 and augmentation is not None:
        raise validation.invalid_value(
            "augmentation",
            "None when views=1 (a cache stores fixed views only: pass "
            "views=K to store K augmented views, or give the "
            "augmentation to the Distiller for online distillation)",
            augmentation,
        )


class _BatchWriter:
    """Runs the teacher on each batch and appends everything to the files."""

    def __init__(self, teacher, partial, options):
        self.partial = partial
        self.options = options
        self.runner = teacher_logits_lib.TeacherLogits(
            teacher, options.teacher_outputs
        )
        self.augment = (
            views_lib.augment_function(options.augmentation)
            if options.views > 1
            else None
        )
        self.fingerprint = fingerprint.DataFingerprint()
        self.codec = self.inputs = self.labels = self.outputs = None
        self.classes = None
        # Logits-only caches key outputs by position: digests of the order.
        self.order = None if options.store_inputs else row_blocks.BlockHasher()
        self.input_spec = None

    def append(self, element, step):
        """Encodes, runs the teacher on and writes batch `step`."""
        inputs, labels = split_batch(element, step)
        _refuse_non_finite(inputs, "inputs", step)
        _refuse_non_finite(labels, "labels", step)
        self.fingerprint.update(inputs, labels)
        rows = inputs
        if self.augment is not None:
            rows = views_lib.expand_views(self.augment, inputs, self.options.views)
            labels = views_lib.repeat_labels(labels, self.options.views)
        if self.order is not None:
            self._append_outputs_only(inputs, labels, step)
            return
        if self.codec is None:
            self._open(rows)
        _refuse_non_finite(rows, "augmented inputs", step)
        stored = self.codec.encode(rows)
        # The teacher sees exactly what the stream will hand the student.
        seen = self.codec.decode(stored)
        self._refuse_lossy_auto_uint8(seen, rows, step)
        logits = self.runner(seen, step)  # (rows, classes)
        self.classes = logits.shape[-1]
        self.inputs.append(stored)
        self.labels.append(labels)
        self.outputs.append(logits, step)

    def _append_outputs_only(self, inputs, labels, step):
        if self.outputs is None:
            options = self.options
            self.input_spec = row_blocks.input_spec(inputs, labels)
            self.outputs = _OutputWriters(
                self.partial, options.dtype, options.top_k,
                options.top_k_temperature,
            )
        self.order.update(inputs, labels)
        logits = self.runner(inputs, step)  # (batch, classes)
        self.classes = logits.shape[-1]
        self.outputs.append(logits, step)

    def _open(self, rows):
        options = self.options
        self.codec = codec_lib.InputCodec.resolve(options.input_dtype, rows)
        self.inputs = format_lib.ArrayWriter(self.partial, format_lib.INPUTS)
        self.labels = format_lib.ArrayWriter(self.partial, format_lib.LABELS)
        self.outputs = _OutputWriters(
            self.partial, options.dtype, options.top_k, options.top_k_temperature
        )

    def _refuse_lossy_auto_uint8(self, seen, rows, step):
        if (
            self.options.input_dtype == "auto"
            and self.codec.kind == "unit_uint8"
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

    def close(self):
        """Closes the files; returns their specs for the metadata."""
        if self.outputs is None:
            raise ValueError(
                "Invalid value for argument `dataset`. Expected at least one "
                "batch. Received: an empty dataset"
            )
        if self.order is not None:
            return self.outputs.close()
        arrays = {
            format_lib.INPUTS: self.inputs.close(),
            format_lib.LABELS: self.labels.close(),
        }
        arrays.update(self.outputs.close())
        return arrays

    def abort(self):
        for writer in (self.inputs, self.labels, self.outputs):
            if writer is not None:
                writer.abort()


def _metadata(teacher, options, writer, arrays, seconds):
    """The metadata dict of a finished build (see `tfkd.cache.format`)."""
    examples = writer.fingerprint.count
    top_k = options.top_k
    outputs = writer.outputs
    kind = writer.runner.kind
    return {
        "format": format_lib.FORMAT_NAME,
        "tfkd_version": version.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "build_seconds": round(seconds, 3),
        "examples": examples,
        "views": options.views,
        "rows": examples * options.views,
        "classes": int(writer.classes),
        "outputs": {
            "dtype": np.dtype(options.dtype).name,
            "storage": "dense" if top_k is None else "top_k",
            "top_k": top_k,
            "top_k_temperature": (
                None if top_k is None else float(options.top_k_temperature)
            ),
            "tail_mass_mean": (
                None
                if top_k is None
                else outputs.tail_mass_sum / (examples * options.views)
            ),
            "tail_mass_max": None if top_k is None else outputs.tail_mass_max,
        },
        "teacher": _teacher_entry(teacher, kind),
        "data": {"fingerprint": writer.fingerprint.hexdigest()},
        "inputs": (
            writer.codec.get_config()
            if options.store_inputs
            else {"stored": False, **writer.input_spec}
        ),
        # `BuildOptions` refuses an augmentation with views=1.
        "augmentation": _augmentation_entry(options.augmentation),
        "arrays": arrays,
        **_layout_entries(options, writer),
    }


def _teacher_entry(teacher, kind):
    """The metadata's `teacher` dict; an ensemble also gets `ensemble`."""
    entry = {
        "name": teacher.name,
        "class_name": type(teacher).__name__,
        "parameters": fingerprint.count_parameters(teacher),
        # An ensemble's weights are its teachers', in order.
        "fingerprint": fingerprint.teacher_fingerprint(teacher),
        "outputs": kind,
        "stored_as": (
            "log_probabilities" if kind == "probabilities" else "logits"
        ),
    }
    if not isinstance(teacher, ensembles.TeacherEnsemble):
        return entry
    temperature = teacher.temperature
    entry["stored_as"] = "ensemble_mixture_logits"
    entry["ensemble"] = {
        "teachers": [
            {
                "name": member.name,
                "class_name": type(member).__name__,
                "parameters": fingerprint.count_parameters(member),
                "fingerprint": fingerprint.teacher_fingerprint(member),
                "outputs": kind_,
            }
            for member, kind_ in zip(teacher.teachers, teacher.teacher_outputs)
        ],
        "weights": list(teacher.teacher_weights),
        "temperature": temperature,
        "combined_as": (
            f"T * log(sum_i w_i * softmax(z_i / T)) with T = {temperature:g}: "
            "the weighted mean of the teachers' tempered probabilities "
            "(Hinton et al., 2015, section 2), stored as logits"
        ),
        "temperature_note": (
            f"softmax(stored / {temperature:g}) is exactly the ensemble's "
            "soft target. At another temperature T' the stored values give "
            f"p_ens^({temperature:g} / T') renormalised, which is not the "
            "mixture of the teachers at T'; the Distiller refuses these "
            "targets unless its temperature is "
            f"{temperature:g} (rebuild the cache to change T)"
        ),
    }
    return entry


def _layout_entries(options, writer):
    """Metadata of the format-2 features; none for a format-1 cache."""
    entries = {}
    if not options.store_inputs:
        entries["store_inputs"] = False
        entries["order"] = {
            "rows_per_block": row_blocks.ROWS_PER_BLOCK,
            "input_samples": row_blocks.INPUT_SAMPLES,
            "block_digests": writer.order.close(),
        }
    if options.shard is not None:
        index, count = options.shard
        entries["shard"] = {"index": index, "count": count}
    if entries:
        entries["format_version"] = format_lib.FORMAT_VERSION
    else:
        entries["format_version"] = format_lib.FORMAT_VERSION_PLAIN
    return entries


def check_absent(path, overwrite):
    """Raises `FileExistsError` if `path` exists and `overwrite` is False.

    A fast check before waiting for the lock; `build_locked` repeats it
    under the lock, where it holds.

    Args:
        path: The destination.
        overwrite: Whether an existing `path` may be replaced.

    Raises:
        FileExistsError: naming `path`.
    """
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"A file or directory already exists at {os.fspath(path)!r}. Open "
            "an existing cache with `TeacherCache.open(path)`, or pass "
            "overwrite=True to replace it."
        )


def build(teacher, dataset, path, options):
    """Builds a cache at `path` under its lock; arguments as `build_locked`.

    Returns:
        The metadata dict written to `path`.
    """
    path = os.fspath(path)
    check_absent(path, options.overwrite)
    with locking.DestinationLock(path):
        return build_locked(teacher, dataset, path, options)


def build_locked(teacher, dataset, path, options):
    """Builds a cache at `path`; the caller holds `DestinationLock(path)`.

    `teacher` and `dataset` are checked by `TeacherCache.build` and the
    options by `BuildOptions`; this function checks the data as it
    streams. Under the lock it first re-checks `path` (it may have been
    committed by another builder while this one waited), checks that a
    rebuild may replace what is there (`tfkd.cache.owned`), and removes
    the leftovers of killed builds of `path`.

    Args:
        teacher: The `keras.Model`.
        dataset: A `tf.data.Dataset` of `(inputs, labels)` or `inputs`,
            or another iterable of such batches (`tfkd.cache.batches`).
        path: The directory to create.
        options: A `BuildOptions`.

    Returns:
        The metadata dict written to `path`.

    Raises:
        FileExistsError: if `path` exists and `options.overwrite` is False.
        ForeignPathError: (a `FileExistsError`) if `path` holds something
            tfkd did not make, which it never replaces.
        ValueError: for data or teacher outputs the cache cannot hold,
            non-finite values included.
    """
    path = os.fspath(path)
    check_absent(path, options.overwrite)
    # Before the teacher's pass, not after: a foreign path fails fast.
    owned.check_replaceable(path)
    owned.clean_leftovers(path)
    started = time.perf_counter()
    partial = owned.make_partial(path)
    writer = None
    try:
        writer = _BatchWriter(teacher, partial, options)
        progbar = progress.dataset_progbar(dataset, options.verbose)
        for step, element in enumerate(batches.iterate(dataset), start=1):
            writer.append(element, step)
            if progbar is not None:
                progbar.update(step)
        arrays = writer.close()
        metadata = _metadata(
            teacher, options, writer, arrays, time.perf_counter() - started
        )
        format_lib.write_metadata(partial, metadata)
        owned.commit(partial, path)
        return metadata
    except BaseException:
        if writer is not None:
            writer.abort()
        # Our own partial directory, made by this call: ours to remove.
        shutil.rmtree(partial, ignore_errors=True)
        raise
