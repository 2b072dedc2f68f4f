"""`CollapseMonitor`: notices a student predicting one class, and says why."""

import warnings

import keras
import numpy as np

from tfkd import backend_support
from tfkd.utils import validation
from tfkd import preflight
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.callbacks import collapse_diagnosis

# Arrays are cut into batches of this size for the student's forward pass.
_BATCH_SIZE = 256


def _materialize(validation_data, max_examples):
    """A fixed list of `(x, y)` NumPy batches holding <= `max_examples`.

    Read once, so a shuffling dataset is judged on the same examples every
    epoch and the histograms of two epochs can be compared.
    """
    if backend_support.is_tf_dataset(validation_data):
        batches, count = [], 0
        for batch in validation_data:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            x, y = keras.tree.map_structure(
                keras.ops.convert_to_numpy, (x, y)
            )
            batches.append((x, y))
            count += len(keras.tree.flatten(x)[0])
            if count >= max_examples:
                break
    else:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
        count = len(keras.tree.flatten(x)[0])
        count = min(count, max_examples)
        batches = [
            keras.tree.map_structure(
                lambda a, start=start: np.asarray(a)[
                    start : min(start + _BATCH_SIZE, count)
                ],
                (x, y),
            )
            for start in range(0, count, _BATCH_SIZE)
        ]
    if not batches:
        raise validation.invalid_value(
            "validation_data", "at least one labelled example", validation_data
        )
    return batches


def _check_validation_data(validation_data):
    if backend_support.is_tf_dataset(validation_data):
        return validation_data
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (
        2,
        3,
    ):
        return tuple(validation_data)
    raise validation.invalid_type(
        "validation_data",
        "a tf.data.Dataset of (x, y) batches or an (x, y) tuple of arrays",
        validation_data,
    )


class CollapseMonitor(keras.callbacks.Callback):
    """Warns when the student predicts (almost) one class, with a diagnosis.

    A distilled student can "collapse": its loss keeps falling while almost
    all its predictions land in one class. After each epoch this callback
    runs the student on up to `max_examples` validation examples and counts
    its predicted classes. When the most frequent class holds at least
    `threshold` of them, it emits a `tfkd.preflight.DistillationWarning`
    whose text lists the probable causes it could check, most likely
    first: a softmax teacher read as logits, teacher classes that do not
    match the labels (teacher accuracy near chance), nearly uniform soft
    targets, an extreme alpha or temperature, a learning rate far above
    the optimizer's default (or its starting value), and non-finite losses
    or weights. Each report is also kept in `reports`.

    Keras callbacks never see the validation batches, so they are passed
    here; the same `validation_data` as `fit` is the usual choice. They
    are read once, at the start of training.

    Args:
        validation_data: A `tf.data.Dataset` of `(x, y)` batches (`y` may
            be `{"labels": ..., "teacher_logits": ...}`), or an `(x, y)`
            tuple of arrays.
        threshold: Float in (0, 1]: the share of predictions in one class
            at or above which the student counts as collapsed. Defaults
            to `0.8`.
        stop_training: Whether to stop training at the first collapse.
            Defaults to `False`.
        restore_best_weights: Whether, when training ends on a collapsed
            epoch, to give the student back the weights of its healthy
            epoch with the best accuracy on the monitored examples.
            Nothing is restored when no epoch was healthy. Defaults to
            `False`.
        max_examples: How many validation examples to look at. Defaults
            to `1024`.

    Attributes:
        reports: List of `CollapseReport`s, one per collapsed epoch.
        best_epoch: The healthy epoch with the best monitored accuracy, or
            `None`.
        restored_epoch: The epoch whose weights were restored, or `None`.

    Raises:
        TypeError: if `validation_data` is neither a dataset nor a tuple.
        ValueError: for a `threshold` outside (0, 1] or a bad
            `max_examples`.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x, y = np.random.rand(64, 8).astype("float32"), np.arange(64) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(teacher=dense(), student=dense())
    >>> distiller.compile(optimizer="adam")
    >>> monitor = tfkd.callbacks.CollapseMonitor((x, y), threshold=0.9)
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0, callbacks=[monitor])
    >>> for report in monitor.reports:  # one per collapsed epoch
    ...     print(report.findings)  # doctest: +SKIP
    """

    def __init__(
        self,
        validation_data,
        threshold=0.8,
        stop_training=False,
        restore_best_weights=False,
        max_examples=1024,
    ):
        super().__init__()
        self.validation_data = _check_validation_data(validation_data)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0.0 < threshold <= 1.0
        ):
            raise validation.invalid_value(
                "threshold", "a float in (0, 1]", threshold
            )
        self.threshold = float(threshold)
        self.stop_training = bool(stop_training)
        self.restore_best_weights = bool(restore_best_weights)
        self.max_examples = validation.check_positive_int(
            "max_examples", max_examples
        )
        self.reports = []
        self.best_epoch = None
        self.restored_epoch = None

    def on_train_begin(self, logs=None):
        self._batches = _materialize(self.validation_data, self.max_examples)
        self._initial_learning_rate = None
        if getattr(self.model, "optimizer", None) is not None:
            self._initial_learning_rate = (
                collapse_diagnosis.current_learning_rate(self.model.optimizer)
            )
        self.reports = []
        self.best_epoch = None
        self.restored_epoch = None
        self._best_accuracy = -1.0
        self._best_weights = None
        self._last_collapsed = False

    def _student(self):
        return getattr(self.model, "student", self.model)

    def on_epoch_end(self, epoch, logs=None):
        student = self._student()
        logits, labels = [], []
        for x, y in self._batches:
            logits.append(
                keras.ops.convert_to_numpy(student(x, training=False))
            )
            labels.append(teacher_outputs_lib.split_targets(y)[0])
        logits = np.concatenate(logits).astype(np.float64)  # (n, classes)
        num_classes = logits.shape[-1]
        predictions = np.argmax(logits, axis=-1)
        histogram = np.bincount(predictions, minlength=num_classes)
        top_class = int(np.argmax(histogram))
        top_fraction = float(histogram[top_class] / len(predictions))
        self._last_collapsed = top_fraction >= self.threshold
        if not self._last_collapsed:
            # Accuracy over the labelled examples (-1 marks unlabelled).
            parts = [preflight.labelled_class_ids(y, num_classes) for y in labels]
            ids = np.concatenate([ids for ids, _ in parts])
            labelled = np.concatenate([mask for _, mask in parts])
            accuracy = (
                float(np.mean(predictions[labelled] == ids)) if ids.size else 0.0
            )
            if accuracy > self._best_accuracy:
                self._best_accuracy = accuracy
                self._best_weights = student.get_weights()
                self.best_epoch = epoch
            return

        x, y = self._batches[0]
        batch_labels, cached_logits = teacher_outputs_lib.split_targets(y)
        report = collapse_diagnosis.CollapseReport(
            epoch=epoch,
            top_class=top_class,
            top_fraction=top_fraction,
            threshold=self.threshold,
            histogram=tuple(int(count) for count in histogram),
            findings=collapse_diagnosis.diagnose(
                self.model,
                x,
                batch_labels,
                cached_logits,
                student_logits=logits,
                logs=logs,
                initial_learning_rate=self._initial_learning_rate,
            ),
        )
        self.reports.append(report)
        warnings.warn(str(report), preflight.DistillationWarning, stacklevel=2)
        if self.stop_training:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if (
            self.restore_best_weights
            and self._last_collapsed
            and self._best_weights is not None
        ):
            self._student().set_weights(self._best_weights)
            self.restored_epoch = self.best_epoch
