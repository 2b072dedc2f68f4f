"""`Distiller`: a `keras.Model` that trains a student from a teacher."""

import collections
import inspect

import keras
import tensorflow as tf
from keras import ops

from tfkd import hyperparameters
from tfkd import _keras_compat
from tfkd import ensembles
from tfkd.terms import base as terms_base
from tfkd import feature_views
from tfkd import losses
from tfkd import mixing as mixing_lib
from tfkd import model_checks
from tfkd import preflight
from tfkd import step_guard
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation


class LossValues(collections.namedtuple(
    "LossValues", ["total", "hard", "soft", "terms", "labelled"]
)):
    """One replica's losses of a step.

    Fields: `total` (float32 scalar), `hard` (mean cross-entropy over the
    labelled examples, `None` without labels), `soft` (the T²-scaled KL,
    `None` without a teacher signal), `terms` (dict of unweighted extra
    terms) and `labelled` (float32 count of labelled examples).
    """


def _hard_loss(labels, student_logits, weights):
    """`(hard, labelled)`: mean CE over labelled examples, and their count.

    `hard = Σ_i w_i m_i CE_i / max(L, 1)`, `L = Σ_i m_i`: a batch (or a
    replica's shard) without labelled examples gives 0, never 0 / 0.
    """
    if labels is None:
        return None, ops.zeros((), "float32")
    num_classes = student_logits.shape[-1]
    mask = losses.labelled_mask(labels, num_classes)  # (batch,)
    per_example = losses.hard_target_loss(labels, student_logits)  # (batch,)
    if weights is not None:
        per_example = per_example * weights
    labelled = ops.sum(mask)
    return ops.sum(per_example) / ops.maximum(labelled, 1.0), labelled


class _LabelledMask(keras.layers.Layer):
    """Attaches "which examples are labelled" to the logits as a Keras mask.

    `compute_metrics` hands sample weights only to `weighted_metrics`; the
    plain `metrics` (`"accuracy"`, ...) honour a Keras mask on the
    predictions instead, so this is how unlabelled examples leave both
    (Keras's metrics built on `MeanMetricWrapper`: the accuracies and
    cross-entropies).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        logits, _ = inputs
        return ops.copy(logits)  # a new tensor, so the mask is its own

    def compute_mask(self, inputs, previous_mask=None):
        _, mask = inputs
        return mask > 0.0  # (batch,) bool


def _metric_targets(labels, logits, sparse_labels):
    """`(labels, logits)` for `compute_metrics`; unlabelled examples masked.

    Metrics get the labels in the form the data has (class ids for sparse
    data, also after mixing made them rows), with -1 replaced by a valid
    class id (some metrics fail on -1) that the mask then leaves out.
    """
    num_classes = logits.shape[-1]
    mask = losses.labelled_mask(labels, num_classes)  # (batch,)
    # Made per trace rather than held by the Distiller: it has no state,
    # and the Distiller's tracked layers are what `.keras` files save.
    logits = _LabelledMask(name="labelled_mask")((logits, mask))
    if losses.is_one_hot(ops.convert_to_tensor(labels), num_classes):
        if not sparse_labels:
            return labels, logits
    ids = losses.class_ids(labels, num_classes)  # (batch,)
    return ops.where(mask > 0.0, ids, ops.zeros_like(ids)), logits


def _class_count(logits):
    """The static class count of `(batch, classes)` logits, or `None`."""
    return None if logits is None else logits.shape[-1]


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
    the labels and the teacher's softened predictions. Per batch of N
    examples with sample weights w_i (1 by default):

        loss = α · hard + (1 − α) · soft + Σ_k weight_k · term_k
        hard = Σ_i w_i · m_i · CE(y_i, s_i) / max(L, 1),   L = Σ_i m_i
        soft = Σ_i w_i · T² · KL(softmax(t_i/T) ‖ softmax(s_i/T)) / N

    m_i is 1 for a labelled example and 0 for an unlabelled one, so the
    hard term is the mean cross-entropy over the labelled examples (L = N
    for fully labelled data: Keras's "sum_over_batch_size") and the soft
    term covers every example.

    Unlabelled data (semi-supervised distillation, a larger unlabelled
    transfer set): a batch without labels (a dataset of inputs only, or
    `fit(x)` without `y`) trains on `(1 − α) · soft` alone, and inside a
    labelled batch a label of -1 (`tfkd.losses.UNLABELLED`; with one-hot
    labels, a row of zeros) marks an unlabelled example. It is left out of
    the hard term and of the compiled metrics (they get it with sample
    weight 0) and kept in the soft term and the extra terms. A batch whose
    examples are all unlabelled gives `hard = 0`, never 0 / 0; so does a
    replica's shard under `tf.distribute`, where (as for Keras's own
    losses) each replica averages its shard and the replicas' losses are
    averaged: exact when the shards hold equally many labelled examples.
    With `α = 0` (function matching) the labels only feed the metrics.

    The optional `extra_losses` terms go beyond the logits: FitNets hints
    (`tfkd.FitNetHint`), attention transfer (`tfkd.AttentionTransfer`),
    relational KD (`tfkd.RKDDistance`, `tfkd.RKDAngle`), similarity-
    preserving KD (`tfkd.SP`), PKT (`tfkd.PKT`), contrastive
    representation distillation (`tfkd.CRD`, whose batches carry example
    indices), decoupled KD (`tfkd.DecoupledKD`), DIST (`tfkd.DIST`) and
    WTTM (`tfkd.WTTM`; with `alpha=1.0` these three replace the KL term). Terms
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

    `fit` reports `loss`, `student_loss` (the hard-label CE, averaged over
    labelled examples; absent without labels),
    `distillation_loss` (the T²-scaled KL), each extra term's unweighted
    value under its name, and the compiled metrics, computed on the
    student's predictions. `predict`, `evaluate` and `__call__`
    behave as the student; `distiller.student` is a plain Keras model to
    save and ship.

    Teacher ensembles: with `teacher=[t1, t2, ...]` the soft target is the
    weighted mean of the teachers' tempered probabilities (Hinton et al.,
    2015, section 2), `p_ens = Σ_i w_i softmax(z_i / T)`, and the soft term
    is `T² · KL(p_ens ‖ softmax(s / T))`. Each teacher runs once per step
    (`tfkd.ensembles.TeacherEnsemble`, `distiller.teacher`; the list is
    `distiller.teachers`); `teacher_outputs` may give one kind per
    teacher; `teacher_class_indices` select classes of the mixture; with
    `logit_standardization` each teacher is standardized before mixing.
    Extra terms on the logits (DKD, DIST, WTTM) read the mixture's logits
    `T · log p_ens` (of the standardized teachers, with
    `logit_standardization`); terms on teacher layers are refused. A list of one
    teacher is that teacher.

    Before the first step, `fit` and `evaluate` look at one batch: they
    check the data fits both models and the labels fit the student, and
    resolve `teacher_outputs="auto"`, so that a mistake is a clear error
    and not a silently collapsed student. Every later batch is checked
    inside the compiled step (`tfkd.step_guard`): a non-finite loss or
    gradient, or a sparse label that is fractional, below -1 or not a
    class id, never updates the weights, and with the default
    `on_nonfinite="raise"` stops `fit` with an error naming the epoch and
    the batch.

    Args:
        student: The `keras.Model` to train. It must output logits of
            shape `(batch, classes)` (no final softmax).
        teacher: A trained `keras.Model` taking the same inputs, or `None`
            when every training batch carries precomputed teacher logits.
            It is frozen (`teacher.trainable = False`). Defaults to `None`.
        temperature: Float in [0.01, 100] (`tfkd.hyperparameters`: where
            the float32 soft loss stays finite and exact), the softmax
            temperature T of the soft targets. Defaults to `4.0`.
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
        mixing: Optional batch-mixing layer, `keras.layers.MixUp` or
            `keras.layers.CutMix`, applied during training after
            `augmentation`, to the one batch both teacher and student see
            ("function matching", Beyer et al., 2022; `tfkd.mixing`). The
            hard term then uses the mixed one-hot targets
            `λ · y_i + (1 − λ) · y_j`; a mixed example with an unlabelled
            share leaves the hard term and the metrics, and stays in the
            soft one. Needs a single image input `(batch, height, width,
            channels)` and a student whose class count is known; compiles
            without XLA (the layers' Beta sampling has no XLA kernel). Not
            allowed with precomputed teacher logits. Defaults to `None`.
        extra_losses: List of `tfkd.DistillationTerm`s added to the loss,
            each times its own `weight`; their names must differ. Terms
            that read teacher layers need a `teacher` model (cached logits
            carry no features; with a cache and a teacher, the teacher runs
            for the features and the cached logits are used as logits).
            Layer names need functional or `keras.Input`-started
            Sequential models. Defaults to `None` (logit KD only).
        teacher_weights: With a list of teachers, one float > 0 per
            teacher (normalised to sum 1), or `None` for equal weights.
            Must be `None` for a single teacher. Defaults to `None`.
        logit_standardization: Whether the KL term z-scores teacher and
            student logits per example (`tfkd.losses.standardize_logits`;
            Sun et al., 2024, "Logit Standardization in Knowledge
            Distillation") before the temperature:
            `soft = T² · KL(softmax(z̃_t/T) ‖ softmax(z̃_s/T))`. The hard
            loss and the extra terms keep the raw logits (`DecoupledKD`
            has its own `logit_standardization` option). Cached teacher
            logits are standardized in the step, like a live teacher's.
            Defaults to `False`.
        on_nonfinite: What a training batch with a non-finite loss or
            gradient, or a bad sparse label, does. `"raise"`: `fit` stops
            with `tfkd.step_guard.NonFiniteLossError` (a
            `FloatingPointError`) or `InvalidLabelsError` (a `ValueError`)
            naming the epoch and batch; the weights keep their values
            from before that batch. `"skip"`: the batch updates nothing
            and leaves the metrics, and `fit`'s logs count such batches
            per epoch as `nonfinite_batches`. `"ignore"`: no checks at
            all, as before the guard existed; unsafe (the weights can turn
            to NaN), for measuring the guard's cost only. Under mixed
            precision the `LossScaleOptimizer` skips its own scaled
            gradient overflows; the guard checks the float32 loss. Bad
            labels in `evaluate` (and validation) raise in every mode but
            `"ignore"`; a non-finite evaluation loss is reported as NaN.
            Defaults to `"raise"`.
        name: Defaults to `"distiller"`.
        **kwargs: Passed on to `keras.Model`.

    Raises:
        TypeError: if `student` or `teacher` is not a `keras.Model`, or a
            hyper-parameter has the wrong type.
        ValueError: for a hyper-parameter out of range (the accepted
            ranges, where the float32 loss stays finite, are in
            `tfkd.hyperparameters`), `teacher is
            student`, an empty teacher list or teachers with different
            class counts, `teacher_weights` that are not finite and > 0
            (or not one per teacher), terms on teacher layers with an
            ensemble, a student ending in softmax, `mixing` for a student
            with several inputs or unknown classes, teacher and student
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
        mixing=None,
        extra_losses=None,
        teacher_weights=None,
        logit_standardization=False,
        on_nonfinite="raise",
        name="distiller",
        **kwargs,
    ):
        validation.check_choice(
            "on_nonfinite", on_nonfinite, step_guard.ON_NONFINITE_CHOICES
        )
        checked = _check_arguments(
            student=student,
            teacher=teacher,
            temperature=temperature,
            alpha=alpha,
            teacher_outputs=teacher_outputs,
            teacher_class_indices=teacher_class_indices,
            augmentation=augmentation,
            mixing=mixing,
            extra_losses=extra_losses,
            teacher_weights=teacher_weights,
            logit_standardization=logit_standardization,
        )
        temperature, alpha, teacher_class_indices, terms, teacher = checked

        super().__init__(name=name, **kwargs)
        self.student = student
        self.logit_standardization = logit_standardization
        self.on_nonfinite = on_nonfinite
        # Not a layer, so its per-`fit` state is neither saved nor listed
        # in `self.variables` (see `tfkd.step_guard`).
        self._step_guard = step_guard.StepGuard(on_nonfinite)
        #: The normalised weights of an ensemble's teachers, else `None`.
        self.teacher_weights = None
        if isinstance(teacher, list):
            # One model that runs every teacher once and returns the
            # logits of their tempered mixture (`tfkd.ensembles`).
            teacher = ensembles.TeacherEnsemble(
                teacher,
                temperature=temperature,
                teacher_weights=teacher_weights,
                teacher_outputs=teacher_outputs,
                logit_standardization=logit_standardization,
            )
            self.teacher_weights = teacher.teacher_weights
        self.teacher = teacher
        if teacher is not None:
            # The teacher only ever runs in inference; freezing it also keeps
            # its weights out of `distiller.trainable_weights`.
            teacher.trainable = False
        self.augmentation = augmentation
        self.mixing = mixing
        self.temperature = temperature
        self.alpha = alpha
        self.teacher_outputs = teacher_outputs
        self.teacher_class_indices = teacher_class_indices
        # "auto" is resolved from the first batch by `preflight`; until then
        # the step decides from the values (see teacher_outputs.to_logits).
        self.resolved_teacher_outputs = (
            "logits"  # an ensemble's mixture logits
            if self.is_ensemble
            else None if teacher_outputs == "auto" else teacher_outputs
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

    @property
    def is_ensemble(self):
        """Whether the teacher is an ensemble (`teacher=[t1, t2, ...]`)."""
        return isinstance(self.teacher, ensembles.TeacherEnsemble)

    @property
    def teachers(self):
        """The teacher models as a list (empty without a teacher)."""
        if self.is_ensemble:
            return list(self.teacher.teachers)
        return [] if self.teacher is None else [self.teacher]

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
                `jit_compile=True`, `steps_per_execution`). With `mixing`,
                `jit_compile="auto"` (the default) means `False`.

        Raises:
            ValueError: if `loss` is given, or `jit_compile=True` with
                Keras's MixUp or CutMix as `mixing`.
        """
        if loss is not None:
            raise validation.invalid_value(
                "loss",
                "None: the Distiller computes alpha * cross-entropy + (1 - "
                "alpha) * T^2 * KL itself; set `alpha` and `temperature` on "
                "the Distiller instead",
                loss,
            )
        kwargs["jit_compile"] = mixing_lib.check_jit_compile(
            self.mixing, kwargs.get("jit_compile", "auto")
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
        arguments = inspect.signature(super().fit).bind(x, y, *args, **kwargs)
        preflight.check_first_batch(
            self,
            x,
            y,
            training=True,
            validation_data=arguments.arguments.get("validation_data"),
        )
        # The guard's callback raises for a refused batch (`on_nonfinite`).
        arguments.arguments["callbacks"] = step_guard.with_guard_callback(
            arguments.arguments.get("callbacks"), self._step_guard, self
        )
        return super().fit(*arguments.args, **arguments.kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        arguments = inspect.signature(super().evaluate).bind(
            x, y, *args, **kwargs
        )
        preflight.check_first_batch(self, x, y, training=False)
        arguments.arguments["callbacks"] = step_guard.with_guard_callback(
            arguments.arguments.get("callbacks"), self._step_guard, self
        )
        return super().evaluate(*arguments.args, **arguments.kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._step_guard.reset_epoch()
        logs = super().train_on_batch(*args, **kwargs)
        self._step_guard.raise_if_refused("train_on_batch")
        return logs

    def test_on_batch(self, *args, **kwargs):
        self._step_guard.reset_evaluation()
        logs = super().test_on_batch(*args, **kwargs)
        self._step_guard.raise_if_bad_evaluation("test_on_batch")
        return logs

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
        sparse_labels = self._is_sparse(labels)
        # Labels are checked before anything (mixing, the cross-entropy)
        # reads them; see `tfkd.step_guard`.
        classes = model_checks.output_classes(self.student)
        if classes is not None:
            labels, label_report = self._step_guard.check_labels(
                labels, classes
            )
        x, labels = self._random_view(x, labels, cached_logits)
        teacher_logits, teacher_features = self._run_teacher(
            x, cached_logits, training=True
        )
        if classes is None:  # a subclassed student: the teacher's count
            labels, label_report = self._step_guard.check_labels(
                labels, _class_count(teacher_logits)
            )
        state = self._step_guard.capture(self.student)

        with tf.GradientTape() as tape:
            student_logits, loss_values = self._student_losses(
                x, labels, teacher_logits, teacher_features, sample_weight,
                training=True,
                teacher_is_mixture=self._is_mixture(cached_logits),
                indices=teacher_outputs_lib.example_indices(y),
            )
            # Each replica's gradient is summed across replicas, so each
            # replica's loss (extra terms included) carries 1 / replicas of
            # the global mean.
            scaled = self.optimizer.scale_loss(
                loss_values.total / _num_replicas_in_sync()
            )

        variables = self._optimized_variables()
        gradients = tape.gradient(scaled, variables)
        # No update from a non-finite or mislabelled batch.
        kept = self._step_guard.apply_gradients(
            self.optimizer, gradients, variables, loss_values.total,
            label_report, state,
        )
        return self._update_metrics(
            x, labels, student_logits, sample_weight, loss_values,
            sparse_labels, kept=kept,
        )

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        sparse_labels = self._is_sparse(labels)
        teacher_logits, teacher_features = self._run_teacher(
            x, cached_logits, training=False
        )
        # Bad labels raise (`tfkd.step_guard`); a non-finite loss needs no
        # guard here, as no weight changes: it shows as a NaN `loss`.
        labels, label_report = self._step_guard.check_labels(
            labels,
            model_checks.output_classes(self.student)
            or _class_count(teacher_logits),
        )
        self._step_guard.record_evaluation(label_report)
        student_logits, loss_values = self._student_losses(
            x, labels, teacher_logits, teacher_features, sample_weight,
            training=False,
            teacher_is_mixture=self._is_mixture(cached_logits),
            indices=teacher_outputs_lib.example_indices(y),
        )
        return self._update_metrics(
            x, labels, student_logits, sample_weight, loss_values,
            sparse_labels,
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

    def _is_mixture(self, cached_logits):
        """Whether this batch's teacher signal is an ensemble's mixture.

        Online, an ensemble's logits are its mixture, built from
        standardized teachers under `logit_standardization` and so never
        standardized again. Cached logits are standardized like a single
        teacher's: `preflight` refuses `logit_standardization` on a cached
        ensemble's mixture (`tfkd.ensembles`).
        """
        return cached_logits is None and self.is_ensemble

    def _random_view(self, x, labels, cached_logits):
        """`(x, labels)` of one random view shared by teacher and student.

        Augmentation draws the view, then mixing blends it with the
        batch's other examples; the labels become mixed one-hot rows
        (see `tfkd.mixing.mix_batch`).
        """
        if self.augmentation is None and self.mixing is None:
            return x, labels
        preflight.refuse_augmentation_on_cached(self, cached_logits)
        if self.augmentation is not None:
            x = self.augmentation(x, training=True)
        if self.mixing is not None:
            x, labels = mixing_lib.mix_batch(
                self.mixing, x, labels, model_checks.output_classes(self.student)
            )  # labels: None or (batch, classes)
        return x, labels

    def _is_sparse(self, labels):
        """Whether `labels` are class ids (static), for the metrics' form."""
        if labels is None:
            return False
        classes = model_checks.output_classes(self.student)
        return not losses.is_one_hot(ops.convert_to_tensor(labels), classes)

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
        training, teacher_is_mixture=False, indices=None,
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
            teacher_is_mixture,
            indices=indices,
            training=training,
        )

    def _loss_terms(
        self,
        labels,
        student_logits,
        teacher_logits,
        sample_weight,
        student_features,
        teacher_features,
        teacher_is_mixture=False,
        indices=None,
        training=False,
    ):
        """This replica's `LossValues` (see the class docstring's formula).

        `terms` maps each extra term's name to its unweighted value; it is
        empty when there is no teacher signal (evaluation without teacher).
        """
        weights = None
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
        hard, labelled = _hard_loss(labels, student_logits, weights)
        if teacher_logits is None:
            if hard is None:
                raise preflight.no_labels_and_no_teacher_error()
            return LossValues(hard, hard, None, {}, labelled)
        soft = losses.soft_target_loss(
            *self._kl_logits(teacher_logits, student_logits, teacher_is_mixture),
            self.temperature,
        )  # (batch,)
        if weights is not None:
            soft = soft * weights
        # Keras's "sum_over_batch_size": weighted sum / examples in batch.
        batch_size = ops.cast(ops.shape(soft)[0], "float32")
        soft = ops.sum(soft) / batch_size
        total = (1.0 - self.alpha) * soft
        if hard is not None:
            total = total + self.alpha * hard
        terms = {}
        for term in self.extra_losses:
            # Terms with a per-example memory (CRD) also get the batch's
            # example indices and whether the step trains.
            memory_arguments = (
                {"indices": indices, "training": training}
                if getattr(term, "needs_example_indices", False)
                else {}
            )
            value = term(
                teacher_features.get(term.teacher_layer, teacher_logits),
                student_features.get(term.student_layer, student_logits),
                labels=labels,
                sample_weight=sample_weight,
                **memory_arguments,
            )  # float32 scalar over this replica's batch
            terms[term.name] = value
            total = total + term.weight * value
        return LossValues(total, hard, soft, terms, labelled)

    def _kl_logits(self, teacher_logits, student_logits, teacher_is_mixture):
        """`(teacher, student)` logits of the KL term, standardized or not.

        Logit standardization (Sun et al., 2024) z-scores both before the
        temperature; only the KL sees it (the hard loss and the extra terms
        read the raw logits). A mixture was built from standardized
        teachers already (`tfkd.ensembles.TeacherEnsemble`).
        """
        if not self.logit_standardization:
            return teacher_logits, student_logits
        if not teacher_is_mixture:
            teacher_logits = losses.standardize_logits(teacher_logits)
        return teacher_logits, losses.standardize_logits(student_logits)

    def _update_metrics(
        self, x, labels, student_logits, sample_weight, loss_values,
        sparse_labels, kept=None,
    ):
        if kept is not None:
            labels, student_logits, loss_values = (
                step_guard.without_refused_batch(
                    kept, labels, student_logits, loss_values
                )
            )
        total, hard, soft, terms, labelled = loss_values
        batch_size = ops.shape(student_logits)[0]
        if kept is not None:  # a refused batch counts for nothing
            batch_size = ops.cast(batch_size, "float32") * kept
        self._loss_tracker.update_state(total, sample_weight=batch_size)
        if hard is not None:
            # Weighted by the labelled examples, so the epoch's value is
            # the mean cross-entropy over labelled examples.
            self.student_loss_tracker.update_state(
                hard, sample_weight=labelled
            )
        if soft is not None:
            self.distillation_loss_tracker.update_state(
                soft, sample_weight=batch_size
            )
        for tracker in self.term_loss_trackers:
            if tracker.name in terms:
                tracker.update_state(
                    terms[tracker.name], sample_weight=batch_size
                )
        if labels is None:  # nothing to measure label metrics against
            return _keras_compat.step_logs(self.get_metrics_result())
        metric_labels, masked_logits = _metric_targets(
            labels, student_logits, sparse_labels
        )
        return _keras_compat.step_logs(
            self.compute_metrics(
                x, metric_labels, masked_logits, sample_weight=sample_weight
            )
        )

    def get_metrics_result(self):
        """Every metric's current value, as Keras's, minus unbuilt ones.

        Data without labels never builds the compiled label metrics (Keras
        builds them from the first labels it sees), and an unbuilt metric
        has no result: they are left out until labels come.
        """
        logs = {}
        for metric in self.metrics:
            if not getattr(metric, "built", True):
                continue
            result = metric.result()
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[metric.name] = result
        # `nonfinite_batches` with on_nonfinite="skip".
        logs.update(self._step_guard.logs())
        return logs

    # -- serialization -------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        serialize = keras.saving.serialize_keras_object
        config.update(
            {
                "student": serialize(self.student),
                "teacher": (
                    [serialize(teacher) for teacher in self.teachers]
                    if self.is_ensemble
                    else None
                    if self.teacher is None
                    else serialize(self.teacher)
                ),
                "teacher_weights": (
                    None
                    if self.teacher_weights is None
                    else list(self.teacher_weights)
                ),
                "logit_standardization": self.logit_standardization,
                "on_nonfinite": self.on_nonfinite,
                "temperature": self.temperature,
                "alpha": self.alpha,
                "teacher_outputs": (
                    self.teacher_outputs
                    if isinstance(self.teacher_outputs, str)
                    else list(self.teacher_outputs)
                ),
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
                "mixing": (
                    None if self.mixing is None else serialize(self.mixing)
                ),
                "extra_losses": [serialize(term) for term in self.extra_losses],
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        for key in ("student", "augmentation", "mixing"):
            if config.get(key) is not None:
                config[key] = deserialize(config[key])
        teacher = config.get("teacher")
        if isinstance(teacher, list):
            config["teacher"] = [deserialize(member) for member in teacher]
        elif teacher is not None:
            config["teacher"] = deserialize(teacher)
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


def _check_arguments(
    *,
    student,
    teacher,
    temperature,
    alpha,
    teacher_outputs,
    teacher_class_indices,
    augmentation,
    mixing,
    extra_losses,
    teacher_weights,
    logit_standardization,
):
    """Validates the `Distiller` arguments before any model is touched.

    Returns:
        The normalised `(temperature, alpha, teacher_class_indices,
        extra_losses, teacher)`, `teacher` a model, `None`, or a list of
        two or more models (a list of one is that model).

    Raises:
        TypeError: for a wrong type (see `Distiller`).
        ValueError: for a wrong value (see `Distiller`).
    """
    validation.check_keras_model("student", student)
    validation.check_bool("logit_standardization", logit_standardization)
    teacher = _check_teacher_or_ensemble(teacher, teacher_weights)
    members = teacher if isinstance(teacher, list) else [teacher]
    if any(member is student for member in members):
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a model "
            "other than the student (distilling a model into itself "
            "trains the teacher too). Received: teacher is student "
            f"(model {student.name!r})"
        )
    temperature = hyperparameters.check_temperature(temperature)
    alpha = validation.check_alpha(alpha)
    if isinstance(teacher, list):
        ensembles.check_member_outputs(teacher_outputs, len(teacher))
    else:
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
    if mixing_lib.check_mixing(mixing) is not None:
        _check_student_for_mixing(student, mixing)
    terms = terms_base.check_terms(extra_losses)
    model_checks.check_student_outputs_logits(student)
    for member in members:
        if member is not None:
            model_checks.check_compatible_inputs(member, student)
            model_checks.check_compatible_classes(
                member, student, teacher_class_indices
            )
    _refuse_teacher_features_without_teacher(terms, teacher)
    _refuse_teacher_features_of_an_ensemble(terms, teacher)
    return temperature, alpha, teacher_class_indices, terms, teacher


def _check_teacher_or_ensemble(teacher, teacher_weights):
    """`teacher` (a model or `None`), or a list of >= 2 models.

    A list of one teacher is that teacher (after its weight is checked):
    an ensemble of one behaves, saves and caches exactly like it.
    """
    if isinstance(teacher, (list, tuple)):
        teachers = ensembles.check_teachers(teacher)
        ensembles.check_teacher_weights(teacher_weights, len(teachers))
        return teachers[0] if len(teachers) == 1 else teachers
    validation.check_keras_model("teacher", teacher, allow_none=True)
    if teacher_weights is not None:
        raise validation.invalid_value(
            "teacher_weights",
            "None unless `teacher` is a list of models (an ensemble)",
            teacher_weights,
        )
    return teacher


def _refuse_teacher_features_of_an_ensemble(terms, teacher):
    """Raises if a term reads teacher layers and the teacher is an ensemble.

    Several teachers have several (differently shaped) layers of one name,
    and no single feature to regress to; only their logits mix.
    """
    readers = [term.name for term in terms if term.teacher_layer is not None]
    if isinstance(teacher, list) and readers:
        raise ValueError(
            "Invalid value for argument `extra_losses`. Expected terms on "
            "the teacher's logits only (teacher_layer=None) with a teacher "
            f"ensemble: the extra losses {readers} read teacher layers, and "
            f"an ensemble of {len(teacher)} teachers has no single feature "
            "tensor (only their probabilities are averaged). Received: "
            f"teacher_layer={[t.teacher_layer for t in terms if t.teacher_layer]}"
        )


def _check_student_for_mixing(student, mixing):
    """Raises unless `mixing` can mix the student's inputs and labels.

    Mixing layers take one image tensor, and mixing the labels needs the
    number of classes before the first step.
    """
    inputs = getattr(student, "inputs", None)
    if inputs is not None and len(inputs) != 1:
        raise validation.invalid_value(
            "mixing",
            "None for a student with several inputs (mixing layers mix "
            f"one image tensor; the student has {len(inputs)} inputs)",
            mixing.name,
        )
    if model_checks.output_classes(student) is None:
        raise validation.invalid_value(
            "mixing",
            "None for a student whose number of classes is unknown before "
            "training (mixing one-hot labels needs it): build the student "
            "as a functional or `keras.Input`-started Sequential model",
            mixing.name,
        )
