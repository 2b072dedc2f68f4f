"""`Distiller`: a `keras.Model` that trains a student from a teacher."""

import keras
import tensorflow as tf
from keras import ops

from tfkd import _validation
from tfkd import losses
from tfkd import model_checks
from tfkd import preflight
from tfkd import teacher_outputs as teacher_outputs_lib


def _num_replicas_in_sync():
    """Replicas that each compute a share of the global batch."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(keras.Model):
    """Trains a `student` to match a `teacher` and the labels.

    Knowledge distillation (Hinton, Vinyals & Dean, 2015, "Distilling the
    Knowledge in a Neural Network") trains a small student on a mixture of
    the labels and the teacher's softened predictions. Per batch:

        loss = α · CE(labels, s) + (1 − α) · T² · KL(softmax(t/T) ‖ softmax(s/T))

    The teacher runs with `training=False` outside the gradient tape, so it
    costs one inference per step and is never updated. The KL is computed
    from `log_softmax` in float32, also under mixed precision. When a batch
    already carries the teacher's logits, `(x, {"labels": y,
    "teacher_logits": t})` as `tfkd.TeacherCache` streams them, the teacher
    is not run at all, and `teacher` may be `None`.

    `fit` reports `loss`, `student_loss` (the hard-label CE),
    `distillation_loss` (the T²-scaled KL) and the compiled metrics, computed
    on the student's predictions. `predict`, `evaluate` and `__call__`
    behave as the student; `distiller.student` is a plain Keras model to
    save and ship.

    Before the first step, `fit` and `evaluate` look at one batch: they
    check the data fits both models and the labels fit the student, and
    resolve `teacher_outputs="auto"`, so that a mistake is a clear error
    and not a silently collapsed student.

    Args:
        student: The `keras.Model` to train. It must output logits of
            shape `(batch, classes)` (no final softmax).
        teacher: A trained `keras.Model` taking the same inputs, or `None`
            when every training batch carries precomputed teacher logits.
            It is frozen (`teacher.trainable = False`). Defaults to `None`.
        temperature: Float > 0, the softmax temperature T of the soft
            targets. Defaults to `4.0`.
        alpha: Float in [0, 1], the weight of the hard-label loss; the soft
            loss gets `1 - alpha`. Defaults to `0.1`.
        teacher_outputs: What the teacher emits: `"logits"`,
            `"probabilities"` (a final softmax, as `keras.applications` and
            AutoKeras models have; converted to log-probabilities, never
            softened twice), or `"auto"` to tell from the first batch.
            Defaults to `"auto"`.
        teacher_class_indices: For a teacher with more classes than the
            student (an ImageNet teacher for a 10-class student): the
            teacher class index of each student class, in the student's
            order. Defaults to `None` (same classes, same order).
        augmentation: Optional `keras.layers.Layer` applied once per batch
            during training, whose output both teacher and student see (the
            "consistent teaching" of Beyer et al., 2022). Not allowed with
            precomputed teacher logits, which were computed on other views.
            Defaults to `None`.
        name: Defaults to `"distiller"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        TypeError: if `student` or `teacher` is not a `keras.Model`, or a
            hyper-parameter has the wrong type.
        ValueError: for a hyper-parameter out of range, `teacher is
            student`, a student ending in softmax, or teacher and student
            shapes that cannot work together.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> y = np.random.randint(0, 3, size=64)
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(teacher=teacher, student=student,
    ...                            temperature=4.0, alpha=0.1)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'distillation_loss', 'loss', 'student_loss']
    """

    def __init__(
        self,
        *,
        student,
        teacher=None,
        temperature=4.0,
        alpha=0.1,
        teacher_outputs="auto",
        teacher_class_indices=None,
        augmentation=None,
        name="distiller",
        **kwargs,
    ):
        _validation.check_keras_model("student", student)
        _validation.check_keras_model("teacher", teacher, allow_none=True)
        if teacher is student:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a model "
                "other than the student (distilling a model into itself "
                "trains the teacher too). Received: teacher is student "
                f"(model {student.name!r})"
            )
        temperature = _validation.check_temperature(temperature)
        alpha = _validation.check_alpha(alpha)
        _validation.check_choice(
            "teacher_outputs",
            teacher_outputs,
            teacher_outputs_lib.TEACHER_OUTPUT_KINDS,
        )
        teacher_class_indices = _validation.check_class_indices(
            "teacher_class_indices", teacher_class_indices
        )
        if augmentation is not None and not isinstance(
            augmentation, keras.layers.Layer
        ):
            raise _validation.invalid_type(
                "augmentation", "a `keras.layers.Layer` or None", augmentation
            )
        model_checks.check_student_outputs_logits(student)
        if teacher is not None:
            model_checks.check_compatible_inputs(teacher, student)
            model_checks.check_compatible_classes(
                teacher, student, teacher_class_indices
            )

        super().__init__(name=name, **kwargs)
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            # The teacher only ever runs in inference; freezing it also keeps
            # its weights out of `distiller.trainable_weights`.
            teacher.trainable = False
        self.augmentation = augmentation
        self.temperature = temperature
        self.alpha = alpha
        self.teacher_outputs = teacher_outputs
        self.teacher_class_indices = teacher_class_indices
        # "auto" is resolved from the first batch by `preflight`; until then
        # the step decides from the values (see teacher_outputs.to_logits).
        self.resolved_teacher_outputs = (
            None if teacher_outputs == "auto" else teacher_outputs
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        if student.built:
            self.built = True

    # -- Keras model API ---------------------------------------------------

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """Configures training; the loss is the Distiller's own.

        Args:
            optimizer: The student's optimizer. Defaults to `"adam"`.
            loss: Must stay `None`: the hard and soft losses are built in
                and weighted by `alpha` and `temperature`.
            metrics: Metrics of the student's predictions against the
                labels, e.g. `["accuracy"]`. Defaults to `None`.
            **kwargs: Passed on to `keras.Model.compile` (for example
                `jit_compile=True`, `steps_per_execution`).

        Raises:
            ValueError: if `loss` is given.
        """
        if loss is not None:
            raise ValueError(
                "Invalid value for argument `loss`. Expected None: the "
                "Distiller computes alpha * cross-entropy + (1 - alpha) * "
                "T^2 * KL itself; set `alpha` and `temperature` on the "
                f"Distiller instead. Received: loss={loss!r}"
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Restores the compiled state of a loaded `.keras` file; the loss is
        # always the Distiller's own, so only the rest is passed on.
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        preflight.check_first_batch(
            self,
            x,
            y,
            training=True,
            validation_data=kwargs.get("validation_data"),
        )
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        preflight.check_first_batch(self, x, y, training=False)
        return super().evaluate(x, y, *args, **kwargs)

    # -- steps ---------------------------------------------------------------

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        if self.augmentation is not None:
            preflight.refuse_augmentation_on_cached(self, cached_logits)
            # One random view per batch, shared by teacher and student.
            x = self.augmentation(x, training=True)
        teacher_logits = self.teacher_logits(x, cached_logits, training=True)

        with tf.GradientTape() as tape:
            student_logits = self.student(x, training=True)
            total, hard, soft = self._loss_terms(
                labels, student_logits, teacher_logits, sample_weight
            )
            # Each replica's gradient is summed across replicas, so each
            # replica's loss carries 1 / replicas of the global mean.
            scaled = self.optimizer.scale_loss(total / _num_replicas_in_sync())

        variables = self.student.trainable_weights
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(
            x, labels, student_logits, sample_weight, total, hard, soft
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        teacher_logits = self.teacher_logits(x, cached_logits, training=False)
        student_logits = self.student(x, training=False)
        total, hard, soft = self._loss_terms(
            labels, student_logits, teacher_logits, sample_weight
        )
        return self._update_metrics(
            x, labels, student_logits, sample_weight, total, hard, soft
        )

    # -- pieces --------------------------------------------------------------

    def teacher_logits(self, x, cached_logits=None, training=True):
        """The teacher's logits for `x`, over the student's classes.

        Args:
            x: A batch of inputs.
            cached_logits: Precomputed teacher logits of this batch, or
                `None` to run the teacher.
            training: Whether this is a training step: training cannot go
                on without a teacher signal, evaluation can (it then reports
                the hard loss alone).

        Returns:
            A float32 tensor of shape `(batch, student_classes)`, kept out
            of the gradient, or `None` when there is no teacher signal
            during evaluation.

        Raises:
            ValueError: when training with neither a teacher nor cached
                logits.
        """
        if cached_logits is not None:
            # Caches store logits (log-probabilities for softmax teachers).
            logits = ops.cast(cached_logits, "float32")
        elif self.teacher is not None:
            outputs = self.teacher(x, training=False)
            kind = self.resolved_teacher_outputs or "auto"
            logits = teacher_outputs_lib.to_logits(outputs, kind)
        elif training:
            raise preflight.no_teacher_signal_error()
        else:
            return None
        logits = teacher_outputs_lib.select_classes(
            logits, self.teacher_class_indices
        )
        return ops.stop_gradient(logits)

    def _loss_terms(self, labels, student_logits, teacher_logits, sample_weight):
        """Returns the per-replica mean `(total, hard, soft)` losses."""
        hard = losses.hard_target_loss(labels, student_logits)  # (batch,)
        if teacher_logits is None:
            soft = None
        else:
            soft = losses.soft_target_loss(
                teacher_logits, student_logits, self.temperature
            )  # (batch,)
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            hard = hard * weights
            soft = None if soft is None else soft * weights
        # Keras's "sum_over_batch_size": weighted sum / examples in batch.
        batch_size = ops.cast(ops.shape(hard)[0], "float32")
        hard = ops.sum(hard) / batch_size
        if soft is None:
            return hard, hard, None
        soft = ops.sum(soft) / batch_size
        total = self.alpha * hard + (1.0 - self.alpha) * soft
        return total, hard, soft

    def _update_metrics(
        self, x, labels, student_logits, sample_weight, total, hard, soft
    ):
        batch_size = ops.shape(student_logits)[0]
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        self.student_loss_tracker.update_state(hard, sample_weight=batch_size)
        if soft is not None:
            self.distillation_loss_tracker.update_state(
                soft, sample_weight=batch_size
            )
        return self.compute_metrics(
            x, labels, student_logits, sample_weight=sample_weight
        )

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "student": serialize(self.student),
                "teacher": (
                    None if self.teacher is None else serialize(self.teacher)
                ),
                "temperature": self.temperature,
                "alpha": self.alpha,
                "teacher_outputs": self.teacher_outputs,
                "teacher_class_indices": (
                    None
                    if self.teacher_class_indices is None
                    else list(self.teacher_class_indices)
                ),
                "augmentation": (
                    None
                    if self.augmentation is None
                    else serialize(self.augmentation)
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("student", "teacher", "augmentation"):
            if config.get(key) is not None:
                config[key] = deserialize(config[key])
        return cls(**config)
