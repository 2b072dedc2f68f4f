"""`Distiller`: a `keras.Model` that trains a student from a teacher."""

import keras
import tensorflow as tf
from keras import ops

from tfkd import _keras_compat
from tfkd.terms import base as terms_base
from tfkd import feature_views
from tfkd import losses
from tfkd import model_checks
from tfkd import preflight
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation


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
               + Σ_k weight_k · term_k

    The optional `extra_losses` terms go beyond the logits: FitNets hints
    (`tfkd.FitNetHint`), attention transfer (`tfkd.AttentionTransfer`),
    relational KD (`tfkd.RKDDistance`, `tfkd.RKDAngle`) and decoupled KD
    (`tfkd.DecoupledKD`; with `alpha=1.0` it replaces the KL term). Terms
    that read intermediate layers get them from one multi-output view of
    each model (`tfkd.feature_views`), built once here, so each model still
    runs exactly once per step. Learnable parts of the terms (FitNets
    connectors) train with the student and are saved with the Distiller,
    but are never part of `distiller.student`.

    The teacher runs with `training=False` outside the gradient tape, so it
    costs one inference per step and is never updated. The KL is computed
    from `log_softmax` in float32, also under mixed precision. When a batch
    already carries the teacher's logits, `(x, {"labels": y,
    "teacher_logits": t})` as `tfkd.TeacherCache` streams them, the teacher
    is not run at all, and `teacher` may be `None`.

    `fit` reports `loss`, `student_loss` (the hard-label CE),
    `distillation_loss` (the T²-scaled KL), each extra term's unweighted
    value under its name, and the compiled metrics, computed on the
    student's predictions. `predict`, `evaluate` and `__call__`
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
        extra_losses: List of `tfkd.DistillationTerm`s added to the loss,
            each times its own `weight`; their names must differ. Terms
            that read teacher layers need a `teacher` model (cached logits
            carry no features; with a cache and a teacher, the teacher runs
            for the features and the cached logits are used as logits).
            Layer names need functional or `keras.Input`-started
            Sequential models. Defaults to `None` (logit KD only).
        name: Defaults to `"distiller"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        TypeError: if `student` or `teacher` is not a `keras.Model`, or a
            hyper-parameter has the wrong type.
        ValueError: for a hyper-parameter out of range, `teacher is
            student`, a student ending in softmax, teacher and student
            shapes that cannot work together, or `extra_losses` that name
            unknown layers, layers of a subclassed model, or layers whose
            shapes the term cannot compare.

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
        extra_losses=None,
        name="distiller",
        **kwargs,
    ):
        validation.check_keras_model("student", student)
        validation.check_keras_model("teacher", teacher, allow_none=True)
        if teacher is student:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a model "
                "other than the student (distilling a model into itself "
                "trains the teacher too). Received: teacher is student "
                f"(model {student.name!r})"
            )
        temperature = validation.check_temperature(temperature)
        alpha = validation.check_alpha(alpha)
        validation.check_choice(
            "teacher_outputs",
            teacher_outputs,
            teacher_outputs_lib.TEACHER_OUTPUT_KINDS,
        )
        teacher_class_indices = validation.check_class_indices(
            "teacher_class_indices", teacher_class_indices
        )
        if augmentation is not None and not isinstance(
            augmentation, keras.layers.Layer
        ):
            raise validation.invalid_type(
                "augmentation", "a `keras.layers.Layer` or None", augmentation
            )
        terms = terms_base.check_terms(extra_losses)
        model_checks.check_student_outputs_logits(student)
        if teacher is not None:
            model_checks.check_compatible_inputs(teacher, student)
            model_checks.check_compatible_classes(
                teacher, student, teacher_class_indices
            )
        _refuse_teacher_features_without_teacher(terms, teacher)

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
        # Tracked after the student, so that `trainable_variables` lists the
        # student's weights first and the terms' (connectors) after, the
        # order `train_step` optimizes them in: optimizer slots saved in a
        # `.keras` file then load back onto the right variables.
        self.extra_losses = terms
        self.term_loss_trackers = [
            keras.metrics.Mean(name=term.name) for term in terms
        ]
        # Plain Python objects, deliberately untracked: the views share the
        # models' layers, which are saved (once) under `student`/`teacher`.
        requested = ", ".join(repr(term.name) for term in terms)
        self._student_view = feature_views.FeatureView(
            student, [t.student_layer for t in terms], "student", requested
        )
        self._teacher_view = (
            None
            if teacher is None
            else feature_views.FeatureView(
                teacher, [t.teacher_layer for t in terms], "teacher", requested
            )
        )
        self._build_terms()
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
            raise validation.invalid_value(
                "loss",
                "None: the Distiller computes alpha * cross-entropy + (1 - "
                "alpha) * T^2 * KL itself; set `alpha` and `temperature` on "
                "the Distiller instead",
                loss,
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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Overrides Keras's private build hook to work around
        # keras-team/keras#20585 (see `_keras_compat.first_replica_batch`).
        if iterator is not None and _keras_compat.uses_distribution(self):
            data_batch = _keras_compat.first_replica_batch(self, iterator)
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )

    # -- steps ---------------------------------------------------------------

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        if self.augmentation is not None:
            preflight.refuse_augmentation_on_cached(self, cached_logits)
            # One random view per batch, shared by teacher and student.
            x = self.augmentation(x, training=True)
        teacher_logits, teacher_features = self._run_teacher(
            x, cached_logits, training=True
        )

        with tf.GradientTape() as tape:
            student_logits, (total, hard, soft, terms) = self._student_losses(
                x, labels, teacher_logits, teacher_features, sample_weight,
                training=True,
            )
            # Each replica's gradient is summed across replicas, so each
            # replica's loss (extra terms included) carries 1 / replicas of
            # the global mean.
            scaled = self.optimizer.scale_loss(total / _num_replicas_in_sync())

        variables = self._optimized_variables()
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(
            x, labels, student_logits, sample_weight, total, hard, soft, terms
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        teacher_logits, teacher_features = self._run_teacher(
            x, cached_logits, training=False
        )
        student_logits, (total, hard, soft, terms) = self._student_losses(
            x, labels, teacher_logits, teacher_features, sample_weight,
            training=False,
        )
        return self._update_metrics(
            x, labels, student_logits, sample_weight, total, hard, soft, terms
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
            return self._as_student_logits(cached_logits, "logits")
        if self.teacher is not None:
            outputs = self.teacher(x, training=False)
            return self._as_student_logits(outputs, None)
        if training:
            raise preflight.no_teacher_signal_error()
        return None

    def _as_student_logits(self, outputs, kind):
        """Teacher outputs -> float32 logits over the student's classes."""
        kind = kind or self.resolved_teacher_outputs or "auto"
        logits = teacher_outputs_lib.to_logits(outputs, kind)
        logits = teacher_outputs_lib.select_classes(
            logits, self.teacher_class_indices
        )  # (batch, student classes)
        return ops.stop_gradient(logits)

    def _run_teacher(self, x, cached_logits, training):
        """`(teacher logits or None, {layer: teacher features})` for `x`.

        The teacher runs once, through its multi-output view when terms
        read its layers; with cached logits and no such terms it does not
        run at all.
        """
        view = self._teacher_view
        if view is None or not view.is_multi_output:
            return self.teacher_logits(x, cached_logits, training), {}
        outputs, features = view(x, training=False)
        if cached_logits is not None:
            logits = self._as_student_logits(cached_logits, "logits")
        else:
            logits = self._as_student_logits(outputs, None)
        features = {
            name: ops.stop_gradient(value) for name, value in features.items()
        }
        return logits, features

    def _optimized_variables(self):
        """The student's trainable weights, then the terms' (connectors)."""
        variables = list(self.student.trainable_weights)
        for term in self.extra_losses:
            variables.extend(term.trainable_weights)
        return variables

    def _build_terms(self):
        """Builds each term from the static shapes of the tensors it reads.

        Terms with weights (FitNets connectors) create them here, before
        training, so the optimizer, `summary` and `.keras` files see them,
        and a shape mismatch is an error now rather than in the first step.
        """
        classes = model_checks.output_classes(self.student)
        if self.teacher_class_indices is not None:
            classes = len(self.teacher_class_indices)
        logits_shape = (None, classes)  # teacher logits, over student classes
        for term in self.extra_losses:
            if term.built:
                continue
            teacher_shape = (
                logits_shape
                if term.teacher_layer is None
                else self._teacher_view.feature_shape(term.teacher_layer)
            )
            student_shape = (
                self._student_view.feature_shape(term.student_layer)
                or logits_shape
            )
            term.build(teacher_shape, student_shape)

    def _student_losses(
        self, x, labels, teacher_logits, teacher_features, sample_weight,
        training,
    ):
        """Runs the student on `x`; returns its logits and `_loss_terms`."""
        # One forward pass gives the logits and every requested layer.
        student_logits, student_features = self._student_view(
            x, training=training
        )
        return student_logits, self._loss_terms(
            labels,
            student_logits,
            teacher_logits,
            sample_weight,
            student_features,
            teacher_features,
        )

    def _loss_terms(
        self,
        labels,
        student_logits,
        teacher_logits,
        sample_weight,
        student_features,
        teacher_features,
    ):
        """Returns the per-replica mean `(total, hard, soft, terms)` losses.

        `terms` maps each extra term's name to its unweighted value; it is
        empty when there is no teacher signal (evaluation without teacher).
        """
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
            return hard, hard, None, {}
        soft = ops.sum(soft) / batch_size
        total = self.alpha * hard + (1.0 - self.alpha) * soft
        terms = {}
        for term in self.extra_losses:
            value = term(
                teacher_features.get(term.teacher_layer, teacher_logits),
                student_features.get(term.student_layer, student_logits),
                labels=labels,
                sample_weight=sample_weight,
            )  # float32 scalar over this replica's batch
            terms[term.name] = value
            total = total + term.weight * value
        return total, hard, soft, terms

    def _update_metrics(
        self, x, labels, student_logits, sample_weight, total, hard, soft, terms
    ):
        batch_size = ops.shape(student_logits)[0]
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        self.student_loss_tracker.update_state(hard, sample_weight=batch_size)
        if soft is not None:
            self.distillation_loss_tracker.update_state(
                soft, sample_weight=batch_size
            )
        for tracker in self.term_loss_trackers:
            if tracker.name in terms:
                tracker.update_state(
                    terms[tracker.name], sample_weight=batch_size
                )
        return _keras_compat.step_logs(
            self.compute_metrics(
                x, labels, student_logits, sample_weight=sample_weight
            )
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
                "extra_losses": [serialize(term) for term in self.extra_losses],
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
        if config.get("extra_losses"):
            config["extra_losses"] = [
                deserialize(term) for term in config["extra_losses"]
            ]
        return cls(**config)


def _refuse_teacher_features_without_teacher(terms, teacher):
    """Raises if a term reads teacher layers but there is no teacher model."""
    readers = [term.name for term in terms if term.teacher_layer is not None]
    if teacher is None and readers:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a teacher model: "
            f"the extra losses {readers} read teacher layers, and "
            "precomputed teacher logits carry no features. Received: "
            "teacher=None. Pass the teacher, or use terms on the logits "
            "only (teacher_layer=None, e.g. tfkd.DecoupledKD)."
        )
