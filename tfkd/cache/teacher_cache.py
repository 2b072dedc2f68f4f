"""`TeacherCache`: a teacher's outputs computed once, streamed every epoch."""

import copy
import numbers
import os

import numpy as np

from tfkd import backend_support
from tfkd import ensembles
from tfkd.utils import progress
from tfkd.utils import validation
from tfkd.cache import batches as batches_lib
from tfkd.cache import builder
from tfkd.cache import codec as codec_lib
from tfkd.cache import errors
from tfkd.cache import fingerprint
from tfkd.cache import format as format_lib
from tfkd.cache import join
from tfkd.cache import locking
from tfkd.cache import reader
from tfkd.cache import selection as selection_lib
from tfkd.cache import shard_builds
from tfkd.cache import shards as shards_lib
from tfkd.cache import py_stream
from tfkd.cache import stream as stream_lib
from tfkd.cache import topk
from tfkd.cache import views as views_lib

#: Storage dtypes of the teacher's outputs.
OUTPUT_DTYPES = builder.OUTPUT_DTYPES
#: The values `TeacherCache.open(on_stale=...)` accepts.
ON_STALE = ("raise", "rebuild")
#: The values `TeacherCache.dataset(stream=...)` accepts.
STREAMS = ("auto", "tf.data", "py_dataset")
# Settings a rebuild takes from the stale cache's metadata when not given.
_REBUILD_SETTINGS = (
    "dtype", "top_k", "top_k_temperature", "views", "store_inputs",
)
# Options of `build` that `open(..., on_stale="rebuild")` passes on.
_BUILD_OPTIONS = (
    "dtype",
    "top_k",
    "top_k_temperature",
    "teacher_outputs",
    "input_dtype",
    "views",
    "augmentation",
    "store_inputs",
)


def _teacher_or_ensemble(teacher, teacher_weights, temperature, teacher_outputs):
    """`(model to run, its teacher_outputs)` for `TeacherCache.build`.

    Two or more teachers become one `TeacherEnsemble` at `temperature`,
    which emits its mixture's logits (so the runner reads "logits").
    """
    if not isinstance(teacher, (list, tuple)):
        validation.check_keras_model("teacher", teacher)
        if teacher_weights is not None:
            raise validation.invalid_value(
                "teacher_weights",
                "None unless `teacher` is a list of models (an ensemble)",
                teacher_weights,
            )
        return teacher, teacher_outputs
    teachers = ensembles.check_teachers(teacher)
    ensembles.check_teacher_weights(teacher_weights, len(teachers))
    if len(teachers) == 1:
        return teachers[0], teacher_outputs
    if temperature is None:
        raise validation.invalid_value(
            "temperature",
            "the float T > 0 you will distil with: the stored soft targets "
            f"of an ensemble of {len(teachers)} teachers mix their "
            "probabilities at T and are exact at T only",
            temperature,
        )
    ensemble = ensembles.TeacherEnsemble(
        teachers,
        temperature=temperature,
        teacher_weights=teacher_weights,
        teacher_outputs=teacher_outputs,
    )
    return ensemble, "logits"


def _numpy_batches(dataset):
    for step, element in enumerate(batches_lib.iterate(dataset), start=1):
        yield builder.split_batch(element, step)


class TeacherCache:
    """A teacher's outputs on a dataset, computed once and stored on disk.

    Distillation runs the teacher on every batch of every epoch. A cache
    runs it once: `build` streams the dataset through the teacher, storing
    the inputs, the labels and the teacher's logits; `dataset()` then
    streams `(x, {"labels": y, "teacher_logits": t})` batches, on which a
    `tfkd.Distiller(teacher=None)` trains the student without a teacher.
    Each epoch then costs about as much as training the student alone.

    On disk (see `tfkd.cache.format`): raw memory-mappable arrays and a
    `metadata.json` holding the counts, the classes, the dtypes, a
    fingerprint of the teacher's weights and of the input data, a sha256
    of every file and the tfkd version. `open` verifies all of it: a
    truncated, corrupted or stale cache is an error (or is rebuilt on
    request), never a silent mismatch.

    Outputs are stored as logits, float16 by default. A teacher ending in a
    softmax (`keras.applications`, AutoKeras exports) is detected from the
    first batch and stored as log-probabilities (logits of the same
    distribution), flagged as `teacher.stored_as` in the metadata. With many
    classes, `top_k` keeps only the k largest logits per example and a fill
    value for the rest (`tfkd.cache.topk` documents the error this adds to
    the KD loss).

    Augmentation must be consistent (Beyer et al., 2022, "Knowledge
    distillation: A good teacher is patient and consistent"): a cached
    output is only a valid target for the exact view the teacher saw.
    Either distil online with `Distiller(teacher=..., augmentation=...)`,
    or cache `views=K` augmented views per example; a `Distiller` with
    `augmentation` refuses batches that carry cached logits.

    One writer, many readers. Builds of one path hold its lock
    (`<path>.lock`, `tfkd.cache.locking`) and run one at a time; any
    number of processes may open and read the cache meanwhile. An opened
    `TeacherCache` pins the generation it verified (its files are opened
    through one directory descriptor, checked and memory-mapped from those
    descriptors, `tfkd.cache.reader`): a rebuild by another process never
    changes what it reads, and an `open` that races a rebuild either gets
    one whole generation or raises `InvalidCacheError` /
    `FileNotFoundError`, never a mixture.

    tfkd replaces or deletes only what it made (`tfkd.cache.owned`): every
    directory the cache code creates carries a marker file
    (`.tfkd-owner.json`), and a rebuild replaces `path` only when it holds
    such a cache and nothing else, or is a cache written by an earlier
    tfkd (valid metadata and no other entries). A directory of anything
    else is a `ForeignPathError` (a `FileExistsError`) and is never
    touched.

    Create caches with `TeacherCache.build` or `TeacherCache.open`, not
    with the constructor.

    Example:

    >>> import numpy as np, keras, tensorflow as tf, tfkd, tempfile, os
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> y = np.random.randint(0, 3, size=64).astype("int32")
    >>> train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "cache")
    >>> cache = tfkd.TeacherCache.build(teacher, train_ds, path, verbose=0)
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(student=student, teacher=None)
    >>> distiller.compile(optimizer="adam")
    >>> history = distiller.fit(cache.dataset(batch_size=16), epochs=1,
    ...                         verbose=0)
    """

    def __init__(self, selection):
        # Which shards this object reads, opened and pinned
        # (`selection.ShardSelection.open`).
        self._selection = selection
        self._path = selection.path
        self._metadata = selection.metadata
        self._codec = (
            codec_lib.InputCodec.from_config(self._metadata["inputs"])
            if format_lib.stores_inputs(self._metadata)
            else None
        )

    @property
    def _arrays(self):
        return self._selection.arrays()

    # -- creation ------------------------------------------------------------

    @classmethod
    def build(
        cls,
        teacher,
        dataset,
        path,
        *,
        dtype="float16",
        top_k=None,
        top_k_temperature=1.0,
        teacher_outputs="auto",
        input_dtype="auto",
        views=1,
        augmentation=None,
        store_inputs=True,
        num_shards=None,
        shard_index=None,
        shard_timeout=0.0,
        overwrite=False,
        verbose=1,
        teacher_weights=None,
        temperature=None,
    ):
        """Runs the teacher once over `dataset` and stores its outputs.

        One streaming pass of batched inference: memory is bounded by a
        few batches, not by the dataset. A progress bar shows the batches
        done. The cache is written to a temporary sibling directory and
        renamed to `path` at the end, so an interrupted build leaves
        nothing at `path`. The build holds `path`'s lock throughout (one
        writer per path; a second build of it waits, then sees the first
        one's cache), and stores nothing non-finite: a NaN or infinity in
        the inputs, labels or teacher outputs stops it, naming the batch.

        A list of teachers stores their ensemble's soft targets (Hinton et
        al., 2015, section 2): per example the logits of the mixture
        `T · log Σ_i w_i softmax(z_i / T)` at the build `temperature`
        (`tfkd.ensembles`), so `softmax(stored / T)` is the weighted mean of
        the teachers' tempered probabilities. That holds at T only (the
        mixture at another temperature is a different distribution): the
        batches then carry `"soft_target_temperature"`, and a `Distiller`
        whose `temperature` differs, or that has `logit_standardization`,
        refuses them before training. The metadata's `teacher.ensemble`
        records the teachers, weights, temperature and how they were
        combined. A list of one teacher builds that teacher's cache.

        Args:
            teacher: A trained `keras.Model` with one input and outputs of
                shape `(batch, classes)`: logits or softmax probabilities;
                or a list of such models (an ensemble).
            dataset: A `tf.data.Dataset` of `(inputs, labels)` batches, or
                of `inputs` alone for unlabelled data (stored with labels
                -1); labels of -1 mark unlabelled examples in labelled
                batches, and are stored and streamed back as they are. Its
                order does not matter (the cache stores each input with its
                outputs); random augmentation in it does (use `views`).
            path: Directory to create.
            dtype: Storage dtype of the outputs, `"float16"` (half the
                bytes; KD loss within 0.03 %) or `"float32"`. Defaults to
                `"float16"`.
            top_k: Optional int k < classes: store only the k largest
                logits per example (see `tfkd.cache.topk`). Defaults to
                `None` (all logits).
            top_k_temperature: Float > 0, the temperature at which top-k
                storage keeps the tail's probability mass exact; use the
                temperature you distil with. Defaults to `1.0`.
            teacher_outputs: `"logits"`, `"probabilities"` (stored as
                log-probabilities) or `"auto"` to tell from the first batch;
                for an ensemble, one of them for all teachers or a list
                with one per teacher. Defaults to `"auto"`.
            input_dtype: Storage of the inputs: `"auto"` (uint8 for 8-bit
                images scaled to [0, 1], bit-exact; the inputs' own dtype
                otherwise), `"uint8"`, `"float16"` or `"float32"`. Lossy
                choices stay consistent: the teacher runs on the stored
                inputs. Defaults to `"auto"`.
            views: Int K >= 1, augmented views stored per example. Defaults
                to `1` (the inputs as given).
            augmentation: A `keras.layers.Layer` drawing one random view of
                a batch; required when `views > 1`. Defaults to `None`.
            store_inputs: Whether to store the inputs and labels. With
                `False` only the teacher's outputs are stored, keyed by
                each example's position in `dataset`, which must then be
                deterministic: train with `attach(dataset)`, which re-joins
                them with the same pipeline and checks its order (see
                `tfkd.cache.row_blocks`). Defaults to `True`.
            num_shards: Optional int N: write the cache as N shards, shard
                i holding the batches `dataset.shard(N, i)` (see
                `tfkd.cache.shards`). Defaults to `None` (one directory).
            shard_index: With `num_shards`, the shard this process builds:
                an int, `"auto"` (this worker's shards `s % workers ==
                index`, from `TF_CONFIG`) or `None` (all of them). Defaults
                to `None`.
            shard_timeout: Seconds a shard build waits for the other
                workers' shards before returning. Defaults to `0.0`.
            overwrite: Whether to replace an existing cache at `path`
                (a sharded build replaces its own shards only). Only a
                cache tfkd made is replaced (see the class docstring).
                Defaults to `False`.
            verbose: `0` (silent) or `1` (progress bar). Defaults to `1`.
            teacher_weights: For a list of teachers, one float > 0 per
                teacher (normalised to sum 1), or `None` for equal weights.
                Defaults to `None`.
            temperature: For a list of two or more teachers, the float
                T > 0 of the mixture: the temperature you will distil
                with. Required then; ignored for one teacher. Defaults to
                `None`.

        Returns:
            The opened `TeacherCache`; for a shard build, the cache opened
            on this process's shards once every shard is built, or `None`
            if others are still missing after `shard_timeout` (then call
            `TeacherCache.finalize(path)` when they are done).

        Raises:
            TypeError: if `teacher` is not a `keras.Model`, `dataset` not a
                `tf.data.Dataset`, or an argument has the wrong type.
            ValueError: for an argument out of range, batches that are not
                `(inputs, labels)` or `inputs`, non-finite inputs, labels
                or teacher outputs (naming the batch), or logits beyond
                float16's range with `dtype="float16"`.
            FileExistsError: if `path` exists and `overwrite` is False
                (also when another process committed it while this build
                waited for the lock).
            ForeignPathError: (a `FileExistsError`) if `path` holds
                anything but a cache tfkd made; nothing there is touched.

        Example:

        >>> cache = tfkd.TeacherCache.build(  # doctest: +SKIP
        ...     teacher, train_ds, "cache/fmnist-cnn")
        >>> cache.num_examples, cache.num_classes  # doctest: +SKIP
        (54000, 10)
        """
        teacher, teacher_outputs = _teacher_or_ensemble(
            teacher, teacher_weights, temperature, teacher_outputs
        )
        batches_lib.check_dataset(dataset)
        options = builder.BuildOptions(
            dtype=dtype,
            top_k=top_k,
            top_k_temperature=top_k_temperature,
            teacher_outputs=teacher_outputs,
            input_dtype=input_dtype,
            views=views,
            augmentation=augmentation,
            overwrite=overwrite,
            verbose=verbose,
            store_inputs=store_inputs,
        )
        if num_shards is None:
            if shard_index is not None:
                raise validation.invalid_value(
                    "shard_index", "None unless num_shards is given",
                    shard_index,
                )
            path = os.fspath(path)
            builder.check_absent(path, overwrite)
            with locking.DestinationLock(path):
                builder.build_locked(teacher, dataset, path, options)
                # Opened under the lock: this object reads what it built.
                return cls(selection_lib.ShardSelection.open(path, checksums=False))
        num_shards = validation.check_int(
            "num_shards", num_shards, minimum=1, maximum=shards_lib.MAX_SHARDS
        )
        shard = shards_lib.shard_of_builder(shard_index, num_shards)
        shard_builds.build_shards(
            teacher, dataset, path, options, num_shards,
            shards_lib.resolve_selection(shard, num_shards),
        )
        try:
            shard_builds.finalize(path, num_shards, shard_timeout)
        except FileNotFoundError:
            return None
        return cls(
            selection_lib.ShardSelection.open(path, shard=shard, checksums=False)
        )

    @classmethod
    def finalize(cls, path, *, timeout=0.0):
        """Completes a sharded cache whose shards were built separately.

        Checks that all N shards exist and agree (same teacher, classes,
        storage, dtypes, inputs) and writes the top-level metadata that
        lists them, atomically. Any worker may call it; several may.

        Args:
            path: The sharded cache's directory.
            timeout: Seconds to wait for shards still being built.
                Defaults to `0.0`.

        Returns:
            The `TeacherCache` over all shards (nothing is read until used).

        Raises:
            FileNotFoundError: if shards are missing (the message lists
                them).
            InvalidCacheError: if a shard is invalid or disagrees with
                another, naming the field.

        Example:

        >>> cache = tfkd.TeacherCache.finalize("cache/imagenet")  # doctest: +SKIP
        """
        shard_builds.finalize(path, None, timeout)
        return cls(selection_lib.ShardSelection.open(path, checksums=False))

    @property
    def soft_target_temperature(self):
        """The T an ensemble cache's targets are exact at, else `None`."""
        return format_lib.soft_target_temperature(self._metadata)

    @classmethod
    def open(
        cls,
        path,
        *,
        teacher=None,
        dataset=None,
        on_stale="raise",
        checksums=True,
        shard=None,
        verbose=1,
        **build_kwargs,
    ):
        """Opens and verifies a cache; optionally checks it is not stale.

        Verification reads the metadata (capped in size and depth, every
        field checked), checks every file's size and, with `checksums`,
        its sha256; the files verified are the files read (pinned: a
        rebuild by another process does not change what this object
        reads). Given a `teacher`, its weights must be
        those the cache was built from; given a `dataset`, its examples
        must be the same (one pass over the data, no teacher inference;
        order does not matter, see `tfkd.cache.fingerprint`).

        Args:
            path: The cache directory.
            teacher: Optional `keras.Model` to check the cache against.
                Defaults to `None` (not checked).
            dataset: Optional `tf.data.Dataset` of `(inputs, labels)`
                batches to check the cache against. Defaults to `None`.
            on_stale: `"raise"`, or `"rebuild"` to build the cache afresh
                from `teacher` and `dataset` (both then required) when it
                is missing, incomplete, corrupted or stale. Defaults to
                `"raise"`.
            checksums: Whether to verify every file's sha256 (reads the
                whole cache once) rather than only its size. Defaults to
                `True`.
            shard: For a sharded cache, the worker's share: `(index,
                count)` opens only the shards `s % count == index` (their
                metadata, files and checks; nothing of the others), and
                `"auto"` takes both from `TF_CONFIG`. `None` opens every
                shard. Defaults to `None`.
            verbose: `0` or `1`: progress bars of a data check or rebuild.
                Defaults to `1`.
            **build_kwargs: Options of `build` (`dtype`, `top_k`,
                `top_k_temperature`, `teacher_outputs`, `input_dtype`,
                `views`, `augmentation`), only with `on_stale="rebuild"`;
                `dtype`, `top_k`, `top_k_temperature` and `views` not
                given are taken from the old cache's metadata when it is
                readable.

        Returns:
            The verified (or rebuilt) `TeacherCache`.

        Raises:
            TypeError: for an unknown keyword argument.
            ValueError: for an invalid `on_stale`, a rebuild without
                `teacher` and `dataset`, or build options without a rebuild.
            FileNotFoundError: if nothing is at `path` (the message names
                leftovers of interrupted builds).
            InvalidCacheError: if the cache is incomplete, truncated or
                corrupted, holds a symbolic link, or its metadata does not
                hold (naming the field).
            StaleCacheError: if the teacher or the data changed.
            ForeignPathError: (a `FileExistsError`) with
                `on_stale="rebuild"`, if `path` holds anything but a cache
                tfkd made, which is never replaced.

        Example:

        >>> cache = tfkd.TeacherCache.open(  # doctest: +SKIP
        ...     "cache/fmnist-cnn", teacher=teacher, dataset=train_ds,
        ...     on_stale="rebuild")
        """
        validation.check_choice("on_stale", on_stale, ON_STALE)
        validation.check_keras_model("teacher", teacher, allow_none=True)
        if dataset is not None:
            batches_lib.check_dataset(dataset)
        unknown = sorted(set(build_kwargs) - set(_BUILD_OPTIONS))
        if unknown:
            raise TypeError(
                f"TeacherCache.open() got unexpected keyword arguments "
                f"{unknown}. Expected the arguments of `open` or, for a "
                f"rebuild, options of `build`: {list(_BUILD_OPTIONS)}"
            )
        if build_kwargs and on_stale != "rebuild":
            raise validation.invalid_value(
                "on_stale",
                "'rebuild' when `build` options are given (they only apply "
                f"to a rebuild; got {sorted(build_kwargs)})",
                on_stale,
            )
        if on_stale == "rebuild" and (teacher is None or dataset is None):
            raise validation.invalid_value(
                "on_stale",
                "'raise' unless both `teacher` and `dataset` are given "
                "(a rebuild needs them)",
                on_stale,
            )
        try:
            cache = cls(
                selection_lib.ShardSelection.open(
                    path, shard=shard, checksums=bool(checksums)
                )
            )
            cache.check_fresh(teacher=teacher, dataset=dataset, verbose=verbose)
            return cache
        except (FileNotFoundError, errors.InvalidCacheError):
            if on_stale == "raise":
                raise
        options = cls._recorded_settings(path)
        options.update(build_kwargs)
        return cls.build(
            teacher, dataset, path, overwrite=True, verbose=verbose, **options
        )

    @staticmethod
    def _recorded_settings(path):
        """Build settings of a (possibly broken) cache, where readable."""
        try:
            metadata = reader.read_metadata(path)
        except (OSError, errors.InvalidCacheError):
            return {}
        outputs = metadata.get("outputs", {})
        recorded = {
            "dtype": outputs.get("dtype"),
            "top_k": outputs.get("top_k"),
            "top_k_temperature": outputs.get("top_k_temperature"),
            "views": metadata.get("views"),
            "store_inputs": metadata.get("store_inputs"),
        }
        return {
            key: value
            for key, value in recorded.items()
            if key in _REBUILD_SETTINGS and value is not None
        }

    # -- checks --------------------------------------------------------------

    def verify(self, checksums=True):
        """Re-checks the cache's data against its metadata's checksums.

        What is hashed is what this object streams: the files it opened
        and verified at `open`, memory-mapped (a later rebuild of `path`
        by another process is not seen; open the cache again for that).

        Args:
            checksums: Whether to compare sha256 digests too. Defaults to
                `True`.

        Raises:
            InvalidCacheError: if a file is missing, truncated or corrupted.

        Example:

        >>> cache.verify()  # doctest: +SKIP
        """
        self._selection.verify(checksums)

    def check_fresh(self, teacher=None, dataset=None, verbose=1):
        """Raises if `teacher` or `dataset` differ from the cache's own.

        Args:
            teacher: Optional `keras.Model`. Defaults to `None`.
            dataset: Optional `tf.data.Dataset` of `(inputs, labels)`
                batches; one pass over it is made. Defaults to `None`.
            verbose: `0` or `1`, a progress bar over the data. Defaults
                to `1`.

        Raises:
            StaleCacheError: naming what changed.

        Example:

        >>> cache.check_fresh(teacher=teacher)  # doctest: +SKIP
        """
        hint = (
            "Rebuild it with TeacherCache.open(path, teacher=..., "
            "dataset=..., on_stale='rebuild') or TeacherCache.build(..., "
            "overwrite=True)."
        )
        if teacher is not None:
            recorded = self._metadata["teacher"]["fingerprint"]
            current = fingerprint.teacher_fingerprint(teacher)
            if current != recorded:
                raise errors.StaleCacheError(
                    f"Stale teacher cache at {self._path!r}: the teacher's "
                    f"weights differ from those it was built with (teacher "
                    f"{teacher.name!r} has fingerprint {current[:19]}..., "
                    f"the cache {recorded[:19]}...), so the stored outputs "
                    f"are another model's. {hint}"
                )
        if dataset is not None:
            batches_lib.check_dataset(dataset)
            for part_dataset, part in self._part_datasets(dataset):
                self._check_fresh_data(part_dataset, part, verbose, hint)

    def _part_datasets(self, dataset):
        """`(dataset of the part, part)` for each selected part."""
        selection = self._selection
        for index, part in zip(selection.indices, selection.parts):
            if selection.sharded:
                yield batches_lib.shard(
                    dataset, selection.num_shards, index
                ), part
            else:
                yield dataset, part

    def _check_fresh_data(self, dataset, part, verbose, hint):
        part_path, part_metadata = part
        progbar = progress.dataset_progbar(dataset, 1 if verbose else 0)
        current = fingerprint.dataset_fingerprint(
            _numpy_batches(dataset), progbar
        )
        if current.hexdigest() != part_metadata["data"]["fingerprint"]:
            raise errors.StaleCacheError(
                f"Stale teacher cache at {part_path!r}: the dataset "
                f"differs from the one it was built from ({current.count} "
                f"examples now, {part_metadata['examples']} in the cache; "
                "same count means changed values, labels, dtype or shape). "
                f"{hint}"
            )

    # -- reading -------------------------------------------------------------

    def dataset(
        self,
        batch_size=128,
        *,
        shuffle=True,
        seed=None,
        drop_remainder=False,
        views="random",
        reshuffle_each_iteration=True,
        stream="auto",
    ):
        """Streams `(x, {"labels": y, "teacher_logits": t})` batches.

        The format the `Distiller` recognises: it then skips the teacher.
        Inputs, labels and outputs are gathered at the same rows, so
        shuffling cannot misalign them. `t` is float32 logits over the
        teacher's classes (dense even for a top-k cache).

        Args:
            batch_size: Examples per batch (global batch under
                `tf.distribute`). Defaults to `128`.
            shuffle: Whether to shuffle all examples each epoch. Defaults
                to `True`.
            seed: Optional int seed of the shuffle and view choice.
                Defaults to `None`.
            drop_remainder: Whether to drop a last, smaller batch.
                Defaults to `False`.
            views: For a cache of K > 1 views: `"random"` (each epoch shows
                every example once, in one random stored view) or `"all"`
                (every stored view once, K times the examples). Defaults to
                `"random"`.
            reshuffle_each_iteration: Whether each epoch draws a new order
                (and new views). Defaults to `True`.
            stream: `"tf.data"` (a prefetching `tf.data.Dataset`, sharded
                by `tf.distribute`), `"py_dataset"` (a
                `keras.utils.PyDataset`, no TensorFlow needed: every Keras
                backend) or `"auto"`: `"tf.data"` when TensorFlow is the
                Keras backend, `"py_dataset"` otherwise. Both give the same
                batches unshuffled, and the same examples per epoch
                shuffled (their orders come from different generators).
                Defaults to `"auto"`.

        Returns:
            A prefetching `tf.data.Dataset`, or a
            `tfkd.cache.py_stream.CacheBatches` (a `keras.utils.PyDataset`).

        Example:

        >>> train = cache.dataset(batch_size=128, seed=0)  # doctest: +SKIP
        >>> distiller.fit(train, epochs=20)  # doctest: +SKIP
        """
        batch_size = validation.check_positive_int("batch_size", batch_size)
        if seed is not None and (
            not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
        ):
            raise validation.invalid_type("seed", "an int or None", seed)
        validation.check_choice("views", views, views_lib.VIEW_MODES)
        validation.check_choice("stream", stream, STREAMS)
        if self._codec is None:
            raise ValueError(
                f"The teacher cache at {self._path!r} holds the teacher's "
                "outputs only (built with store_inputs=False). Expected "
                "`cache.attach(dataset)` with the pipeline it was built "
                "from. Received: a call to `cache.dataset()`"
            )
        if stream == "auto":
            stream = (
                "tf.data"
                if backend_support.tensorflow_is_backend()
                else "py_dataset"
            )
        # One set of arguments for both streams: the same batches, in the
        # same form, whichever reads the files.
        arguments = dict(
            batch_size=batch_size,
            shuffle=bool(shuffle),
            seed=seed,
            drop_remainder=bool(drop_remainder),
            views=views,
            reshuffle_each_iteration=bool(reshuffle_each_iteration),
        )
        opened = (self._arrays, self._selection.metadata, self._codec)
        if stream == "py_dataset":
            return py_stream.CacheBatches(*opened, **arguments)
        return stream_lib.make_dataset(
            *opened,
            auto_shard_policy=self._selection.auto_shard_policy,
            **arguments,
        )

    def attach(
        self,
        dataset,
        batch_size=None,
        *,
        shuffle_buffer=None,
        seed=None,
        drop_remainder=False,
        reshuffle_each_iteration=True,
    ):
        """Re-joins a logits-only cache with the pipeline it was built from.

        For a cache built with `store_inputs=False`: the user's own
        deterministic pipeline supplies `x` and `y` again, the cache the
        teacher's outputs at the same positions, and every block of 1,024
        examples is checked against the digest recorded at build time as it
        streams (`tfkd.cache.join`). Shuffling, if asked, happens after the
        join, on whole `(x, y, t)` examples. For a sharded cache opened on
        one shard `(i, N)`, `dataset` is the whole pipeline: its batches
        `dataset.shard(N, i)` are taken here.

        Args:
            dataset: The `tf.data.Dataset` of `(inputs, labels)` (or
                `inputs`) batches given to `build`, unshuffled and in the
                same order.
            batch_size: Examples per output batch, or `None` for the
                dataset's own batch size (its static batch dimension, or the
                size of its first batch). Defaults to `None`.
            shuffle_buffer: Optional int, the buffer of a shuffle of the
                joined examples (a window shuffle, like any `tf.data`
                shuffle). Defaults to `None` (no shuffle).
            seed: Optional int seed of that shuffle. Defaults to `None`.
            drop_remainder: Whether to drop a last, smaller batch.
                Defaults to `False`.
            reshuffle_each_iteration: Whether each epoch shuffles anew.
                Defaults to `True`.

        Returns:
            A `tf.data.Dataset` of `(x, {"labels": y, "teacher_logits":
            t})` batches, `t` float32 dense logits.

        Raises:
            ValueError: for a cache that stores its inputs, a selection of
                several shards, or a dataset whose dtypes or shapes differ
                from the cached ones. While iterating, a pipeline whose
                order, labels or length differ from the cached one raises
                `InvalidCacheError` (reported by TensorFlow as
                `tf.errors.InvalidArgumentError`, the message naming the
                block and counts); `check_order` raises it up front.

        Example:

        >>> import numpy as np, keras, tensorflow as tf, tfkd, tempfile, os
        >>> x = np.random.rand(40, 4).astype("float32")
        >>> y = np.random.randint(0, 3, size=40).astype("int32")
        >>> train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> path = os.path.join(tempfile.mkdtemp(), "logits-only")
        >>> cache = tfkd.TeacherCache.build(teacher, train_ds, path,
        ...                                 store_inputs=False, verbose=0)
        >>> xb, targets = next(iter(cache.attach(train_ds, shuffle_buffer=40)))
        >>> xb.shape, targets["teacher_logits"].shape
        (TensorShape([8, 4]), TensorShape([8, 3]))
        """
        part_dataset, part = self._attachable_part(dataset)
        if batch_size is not None:
            batch_size = validation.check_positive_int("batch_size", batch_size)
        if shuffle_buffer is not None:
            shuffle_buffer = validation.check_positive_int(
                "shuffle_buffer", shuffle_buffer
            )
        if seed is not None and (
            not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
        ):
            raise validation.invalid_type("seed", "an int or None", seed)
        return join.attach(
            part[0],
            part[1],
            self._selection.part_arrays(0),
            part_dataset,
            batch_size=batch_size,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            drop_remainder=bool(drop_remainder),
            reshuffle_each_iteration=bool(reshuffle_each_iteration),
            auto_shard_policy=self._selection.auto_shard_policy,
        )

    def check_order(self, dataset):
        """Checks up front that `dataset` is the pipeline a logits-only
        cache was built from (one pass over it, no teacher inference).

        Args:
            dataset: The `tf.data.Dataset` to be given to `attach`.

        Raises:
            StaleCacheError: if its length, order, labels or sampled input
                values differ from the cached ones (naming the block).

        Example:

        >>> cache.check_order(train_ds)  # doctest: +SKIP
        """
        part_dataset, part = self._attachable_part(dataset)
        join.check_order(part[0], part[1], _numpy_batches(part_dataset))

    def _attachable_part(self, dataset):
        batches_lib.check_dataset(dataset)
        if self._codec is not None:
            raise ValueError(
                f"The teacher cache at {self._path!r} stores its inputs. "
                "Expected a cache built with store_inputs=False for "
                "`attach`; stream this one with `cache.dataset()`."
            )
        if len(self._selection.parts) != 1:
            raise validation.invalid_value(
                "shard",
                "one shard per process for `attach` (open the cache with "
                f"shard=(i, {self._selection.num_shards}) or 'auto')",
                f"{len(self._selection.parts)} shards selected",
            )
        return next(self._part_datasets(dataset))

    def read(self, start=0, stop=None):
        """Reads stored rows `[start, stop)` as NumPy arrays.

        Rows are examples, or with K views `example * K + view`.

        Args:
            start: First row. Defaults to `0`.
            stop: Row after the last. Defaults to `None` (all rows).

        Returns:
            A tuple `(inputs, labels, teacher_logits)`, decoded as the
            stream yields them (teacher logits float32, dense); inputs and
            labels are `None` for a logits-only cache. A sharded cache's
            rows are those of its selected shards, shard after shard.

        Example:

        >>> inputs, labels, logits = cache.read(0, 8)  # doctest: +SKIP
        >>> logits.shape  # doctest: +SKIP
        (8, 10)
        """
        rows = slice(start, stop)
        inputs = labels = None
        if self._codec is not None:
            inputs = self._codec.decode(
                np.asarray(self._arrays[format_lib.INPUTS][rows])
            )
            labels = np.asarray(self._arrays[format_lib.LABELS][rows])
        if self.top_k is None:
            logits = np.asarray(
                self._arrays[format_lib.LOGITS][rows], dtype=np.float32
            )
        else:
            logits = topk.reconstruct(
                self._arrays[format_lib.TOP_K_VALUES][rows],
                self._arrays[format_lib.TOP_K_INDICES][rows],
                self._arrays[format_lib.TOP_K_FILL][rows],
                self.num_classes,
            )
        return inputs, labels, logits

    # -- properties ----------------------------------------------------------

    @property
    def path(self):
        """The cache directory."""
        return self._path

    @property
    def metadata(self):
        """A copy of the cache's metadata (see `tfkd.cache.format`)."""
        return copy.deepcopy(self._metadata)

    @property
    def num_examples(self):
        """Examples the cache was built from."""
        return self._metadata["examples"]

    @property
    def num_views(self):
        """Stored views per example (1 without augmentation)."""
        return self._metadata["views"]

    @property
    def num_classes(self):
        """Classes of the teacher's outputs."""
        return self._metadata["classes"]

    @property
    def top_k(self):
        """k of a top-k cache, or `None` when all logits are stored."""
        return self._metadata["outputs"]["top_k"]

    @property
    def teacher_outputs(self):
        """What the teacher emitted: `"logits"` or `"probabilities"`."""
        return self._metadata["teacher"]["outputs"]

    @property
    def stores_inputs(self):
        """Whether the cache holds its inputs (`False`: use `attach`)."""
        return self._codec is not None

    @property
    def num_shards(self):
        """Shards of the cache (1 when unsharded)."""
        return self._selection.num_shards

    @property
    def shard_indices(self):
        """The shards this object reads (see `open(shard=...)`)."""
        return list(self._selection.indices)

    @property
    def opened_shards(self):
        """Directories whose arrays this object has used so far, in order.

        Only the selected shards are opened and mapped (at `open`), and
        they are recorded here when `dataset`, `attach` or `read` first
        uses them, so a worker can check it read only its own shards.
        """
        return list(self._selection.opened)

    @property
    def nbytes(self):
        """Bytes of the selected shards' array files (metadata excluded)."""
        return self._selection.nbytes

    def __len__(self):
        return self.num_examples

    def __repr__(self):
        outputs = self._metadata["outputs"]
        storage = (
            f"top_k={outputs['top_k']}" if outputs["top_k"] else "dense"
        )
        return (
            f"<TeacherCache {self._path!r}: {self.num_examples} examples x "
            f"{self.num_views} view(s), {self.num_classes} classes, "
            f"{outputs['dtype']} {storage}, {self.nbytes / 1e6:.1f} MB>"
        )

