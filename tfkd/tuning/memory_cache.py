"""The teacher's logits of a small dataset, computed once, kept in memory.

A search trains many students from one frozen teacher. Without
augmentation the teacher's logits for an example never change, so running
the teacher in every step of every trial repeats the same computation; for
a teacher 30x larger than the student it is most of the cost. Running it
once and streaming `(x, {"labels": y, "teacher_logits": t})` batches gives
the `Distiller` the very same soft targets (its teacher-skipping path).

This module holds everything in memory, which suits the datasets a search
runs on (thousands to tens of thousands of small images). For large data,
or data with random augmentation, use `tfkd.TeacherCache` (on disk,
streamed, with fixed augmented views) or pass `cache_teacher_logits=False`
to `tfkd.tuning.search`.
"""

import keras
import numpy as np

from tfkd import backend_support
from tfkd import teacher_logits as teacher_logits_lib
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "tfkd.tuning's in-memory teacher logits (tf.data)"
)


class TeacherLogitsInMemory:
    """Inputs, labels and the teacher's logits of a dataset, as arrays.

    Build it with `TeacherLogitsInMemory.compute(teacher, dataset)`; each
    call of `dataset()` then returns a new, freshly shuffled pipeline of
    batches that carry the teacher's logits.

    Args:
        inputs: The inputs, a NumPy array (or a nest of arrays) whose first
            axis indexes the examples.
        labels: The labels, first axis indexing the examples.
        teacher_logits: float32 array `(examples, teacher_classes)`:
            logits, or log-probabilities for a softmax teacher.
        batch_size: Batch size of `dataset()`. Defaults to `128`.

    Example:

    >>> import numpy as np, keras
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> data = tf.data.Dataset.from_tensor_slices(
    ...     (np.ones((10, 4), "float32"), np.zeros(10, "int32"))).batch(4)
    >>> cache = TeacherLogitsInMemory.compute(teacher, data)
    >>> cache.num_examples, cache.teacher_logits.shape
    (10, (10, 3))
    """

    def __init__(self, inputs, labels, teacher_logits, batch_size=128):
        self.inputs = inputs
        self.labels = np.asarray(labels)
        self.teacher_logits = np.asarray(teacher_logits, dtype=np.float32)
        self.batch_size = validation.check_positive_int(
            "batch_size", batch_size
        )
        counts = {
            len(leaf) for leaf in tf.nest.flatten(inputs)
        } | {len(self.labels), len(self.teacher_logits)}
        if len(counts) != 1:
            raise ValueError(
                "Invalid value for arguments `inputs`, `labels` and "
                "`teacher_logits`. Expected the same number of examples in "
                f"each. Received: counts {sorted(counts)}"
            )

    @property
    def num_examples(self):
        """How many examples are held."""
        return len(self.labels)

    @classmethod
    def compute(cls, teacher, dataset, teacher_outputs="auto"):
        """Runs `teacher` once over `dataset` and keeps everything.

        Args:
            teacher: The trained `keras.Model`.
            dataset: A `tf.data.Dataset` of `(inputs, labels)` batches.
            teacher_outputs: `"logits"`, `"probabilities"` (a final softmax:
                stored as log-probabilities, never softened twice) or
                `"auto"` (decided from the first batch, as the `Distiller`
                does). Defaults to `"auto"`.

        Returns:
            A `TeacherLogitsInMemory` whose batch size is that of the first
            batch of `dataset`.

        Raises:
            TypeError: if `dataset` is not a `tf.data.Dataset`.
            ValueError: for batches with sample weights or with precomputed
                teacher logits, for an empty dataset, for an unknown
                `teacher_outputs`, or for non-finite teacher outputs.
        """
        validation.check_keras_model("teacher", teacher)
        if not isinstance(dataset, tf.data.Dataset):
            raise validation.invalid_type(
                "dataset", "a `tf.data.Dataset` of (inputs, labels)", dataset
            )
        # One traced inference function and one probabilities-or-logits
        # decision, shared with `tfkd.TeacherCache` (tfkd.teacher_logits).
        run_teacher = teacher_logits_lib.TeacherLogits(teacher, teacher_outputs)
        inputs, labels, logits = [], [], []
        batch_size = None
        for step, batch in enumerate(dataset, start=1):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            if sample_weight is not None or isinstance(y, dict):
                raise ValueError(
                    "Invalid value for argument `dataset`. Expected batches "
                    "of (inputs, labels). Received: batches with "
                    + (
                        "sample weights"
                        if sample_weight is not None
                        else f"dict targets with keys {sorted(y)}"
                    )
                    + ". Pass cache_teacher_logits=False to tune on them "
                    "with the teacher run online."
                )
            logits.append(run_teacher(x, step))  # (batch, classes)
            inputs.append(tf.nest.map_structure(np.asarray, x))
            labels.append(np.asarray(y))
            batch_size = batch_size or len(labels[-1])
        if not labels:
            raise ValueError(
                "Invalid value for argument `dataset`. Expected at least one "
                "batch. Received: an empty dataset."
            )
        stacked = tf.nest.map_structure(
            lambda *parts: np.concatenate(parts), *inputs
        )
        return cls(
            stacked,
            np.concatenate(labels),
            np.concatenate(logits),
            batch_size=batch_size,
        )

    def dataset(self, seed=0, shuffle=True):
        """A new pipeline of `(x, {"labels": y, "teacher_logits": t})`.

        Each call builds a new pipeline, so two calls with the same `seed`
        give the same sequence of epochs: every trial of a search sees the
        examples in the same order, and differs only by its
        hyper-parameters.

        Args:
            seed: Seed of the shuffling. Defaults to `0`.
            shuffle: Reshuffle every epoch. Defaults to `True`.

        Returns:
            A batched, prefetched `tf.data.Dataset`.
        """
        targets = teacher_outputs_lib.attach_teacher_logits(
            self.labels, self.teacher_logits
        )
        data = tf.data.Dataset.from_tensor_slices((self.inputs, targets))
        if shuffle:
            data = data.shuffle(
                self.num_examples, seed=seed, reshuffle_each_iteration=True
            )
        return data.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)
