"""`Distiller`: a `keras.Model` that trains a student from a teacher."""

import collections
import dataclasses
import inspect

import keras
from keras import ops

from tfkd import _keras_compat
from tfkd import backend_support
from tfkd import distiller_settings
from tfkd import ensembles
from tfkd import feature_views
from tfkd import jax_step
from tfkd import jax_step_guard
from tfkd import label_metrics
from tfkd import losses
from tfkd import mixing as mixing_lib
from tfkd import model_checks
from tfkd import precomputed_targets
from tfkd import preflight
from tfkd import step_guard
from tfkd import step_losses
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd import torch_step
from tfkd import torch_step_guard
from tfkd.terms import soft_targets
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "the Distiller's TensorFlow train_step", backend=True
)


class _Batch(collections.namedtuple("_Batch", [
    "x", "labels", "sample_weight", "sparse_labels", "label_report",
    "inputs", "teacher", "step_values",
])):
    """One step's batch, ready for the student.

    `x` the (augmented, mixed) inputs, `labels` checked (and mixed),
    `inputs` `{view: inputs}` (`None` is `x`), `teacher` `{view: teacher
    ModelOutputs}`, `step_values` what terms may ask for
    (`DistillationTerm.step_arguments`).
    """


def _class_count(logits):
    """The static class count of `(batch, classes)` logits, or `None`."""
    return None if logits is None else logits.shape[-1]


def _num_replicas_in_sync():
    """Replicas that each compute a share of the global batch."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


#: The Keras backends the Distiller's training step runs on.
TRAINING_BACKENDS = ("tensorflow", "jax", "torch")


def check_training_backend(backend):
    """Refuses a Keras backend the Distiller cannot train on, before training.

    The loss terms, the losses and the teacher cache are `keras.ops` and run
    on every backend; the training step exists for TensorFlow (a
    `tf.GradientTape`), JAX (a stateless step, `tfkd.jax_step`) and PyTorch
    (`backward` and `optimizer.apply`, `tfkd.torch_step`) only.

    Args:
        backend: The Keras backend's name, `keras.backend.backend()`.

    Raises:
        ValueError: for a backend outside `TRAINING_BACKENDS`.

    Example:

    >>> check_training_backend("torch")
    >>> check_training_backend("numpy")
    Traceback (most recent call last):
        ...
    ValueError: Invalid Keras backend for `tfkd.Distiller`. Expected one of ('tensorflow', 'jax', 'torch') (set KERAS_BACKEND before importing Keras; tfkd's terms and teacher cache also run on the others). Received: backend='numpy'
    """
    if backend not in TRAINING_BACKENDS:
        raise ValueError(
            "Invalid Keras backend for `tfkd.Distiller`. Expected one of "
            f"{TRAINING_BACKENDS} (set KERAS_BACKEND before importing Keras; "
            "tfkd's terms and teacher cache also run on the others). "
            f"Received: backend={backend!r}"
        )


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(
    _keras_compat.BuildsFromFirstReplica,
    jax_step.JaxSteps,
    torch_step.TorchSteps,
    keras.Model,
):
    """Trains a `student` to match a `teacher` and the labels.

    Knowledge distillation (Hinton, Vinyals & Dean, 2015, "Distilling the
    Knowledge in a Neural Network") trains a small student on a mixture of
    the labels and the teacher's softened predictions. Per batch of N
    examples with sample weights w_i (1 by default):

        loss = α · hard + Σ_k weight_k · term_k
             = α · hard + (1 − α) · soft + Σ_k extra weight_k · term_k
        hard = Σ_i w_i · m_i · CE(y_i, s_i) / max(L, 1),   L = Σ_i m_i
        soft = Σ_i w_i · T² · KL(softmax(t_i/T) ‖ softmax(s_i/T)) / N

    m_i is 1 for a labelled example and 0 for an unlabelled one, so the
    hard term is the mean cross-entropy over the labelled examples (L = N
    for fully labelled data: Keras's "sum_over_batch_size") and the soft
    term covers every example.

    Every part of the loss but the hard one is a term
    (`tfkd.DistillationTerm`), and the step is a loop over them
    (`tfkd.step_losses`): the soft term is `tfkd.terms.SoftTargetKL`,
    which the Distiller builds from `temperature`, `alpha` (its weight is
    `1 − alpha`) and `logit_standardization`, named `"distillation_loss"`;
    `extra_losses` follow it. The settings are held, validated once, in
    `distiller.settings` (`tfkd.distiller_settings.DistillerSettings`).

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
    is not run at all, and `teacher` may be `None`. Terms that read teacher
    layers can skip the teacher too: `distiller.precompute_targets(x, y)`
    runs it once over arrays and returns targets that also carry those
    layers' outputs (`"teacher_features"`) and, for CRD, each row's index.

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

    Backends: on TensorFlow the step runs under a `tf.GradientTape` (and
    `tf.distribute` strategies); on JAX it is a stateless function of the
    variables' values (`tfkd.jax_step`), also under `keras.distribution`
    (e.g. `DataParallel`); on PyTorch it is eager, `backward` then
    `optimizer.apply` (`tfkd.torch_step`). All three compute the loss with
    `tfkd.step_losses` and guard it the same way.

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
            that read teacher layers need a `teacher` model, which builds
            them; with cached logits alone the teacher still runs for the
            features, and with the features cached too
            (`precompute_targets`) it does not run at all.
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
        views: Dict of further augmented views of each training batch,
            view name -> `keras.layers.Layer` (e.g. a "strong"
            augmentation), for terms that read one (their `view`
            attribute, e.g. `tfkd.terms.SoftTargetKL(view="strong")`).
            Each view layer is applied (`training=True`) to the batch's
            inputs, teacher and student run once more on it, and only the
            terms naming it read those outputs; evaluation has one view,
            the batch itself, which every term then reads. Needs a
            `teacher` model (cached logits belong to the batch itself) and
            no `mixing` (a view keeps the batch's labels). Defaults to
            `None` (one view: no extra forward pass).
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
            shapes the term cannot compare, a view that no term reads or
            that a term reads and `views` lacks, views without a teacher
            model or with `mixing`.

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

    def __init__(self, *, name="distiller", **kwargs):
        check_training_backend(backend_support.keras_backend())
        settings = distiller_settings.DistillerSettings.pop_arguments(kwargs)
        super().__init__(name=name, **kwargs)
        self.settings = settings
        # Not a layer, so its per-`fit` state is neither saved nor listed
        # in `self.variables` (see `tfkd.step_guard`).
        self._step_guard = _step_guard(settings.on_nonfinite, self)
        self.student = settings.student
        self.teacher = _frozen_teacher(settings)
        self.augmentation = settings.augmentation
        self.mixing = settings.mixing
        self.views = settings.views
        # "auto" is resolved from the first batch by `preflight`; until then
        # the step decides from the values (see teacher_outputs.to_logits).
        self.resolved_teacher_outputs = _known_teacher_outputs(settings)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(
            name=step_losses.SOFT_TERM_NAME
        )
        # Tracked after the student, so that `trainable_variables` lists the
        # student's weights first and the terms' (connectors) after, the
        # order `train_step` optimizes them in: optimizer slots saved in a
        # `.keras` file then load back onto the right variables.
        self.soft_term = soft_targets.SoftTargetKL(
            settings.temperature, settings.logit_standardization,
            weight=1.0 - settings.alpha, name=step_losses.SOFT_TERM_NAME,
        )
        self.extra_losses = settings.extra_losses
        self.term_loss_trackers = [
            keras.metrics.Mean(name=term.name) for term in self.extra_losses
        ]
        self._student_view, self._teacher_view = self._feature_views()
        self._build_terms()
        if self.student.built:
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

    def loss_terms(self):
        """Every term of the loss: the soft-target KL, then `extra_losses`."""
        return [self.soft_term, *self.extra_losses]

    @property
    def teacher_feature_shapes(self):
        """`{teacher layer name: shape (None, ...)}` of the layers terms read.

        Empty when no term reads a teacher layer. These are the layers
        `precompute_targets` stores and a batch's `"teacher_features"` must
        carry.
        """
        view = self._teacher_view
        if view is None or not view.is_multi_output:
            return {}
        return {name: view.feature_shape(name) for name in view.layer_names}

    def precompute_targets(
        self, x, y=None, *, batch_size=256, verbose="auto", max_megabytes=4096
    ):
        """Runs the teacher once over `x`; returns targets that replace it.

        Every training step otherwise runs the teacher again on the same
        images. Without random augmentation its outputs never change, so
        computing them once is exact and makes each step cost the
        student's alone. The returned `y` carries the teacher's logits,
        the outputs of every teacher layer the terms read (CRD, FitNets,
        attention, ...) and, when a term keeps a row per example (CRD),
        each row's index: pass it to `fit` with the same `x`, shuffled or
        not, and the teacher never runs during training.

        Args:
            x: The training inputs: a NumPy array or tensor, or a nest of
                them, one row per example (not a dataset: its order could
                change between passes; see `tfkd.TeacherCache` for data
                that does not fit in memory).
            y: The labels, one per row, -1 marking an unlabelled row, or
                `None` when no row is labelled. Defaults to `None`.
            batch_size: Rows per teacher call. Defaults to `256`.
            verbose: `0` or `2` (silent), `1` or `"auto"` (a progress
                bar). Defaults to `"auto"`.
            max_megabytes: The most memory the outputs may take; checked
                after the first batch, before the rest runs. Defaults to
                `4096`.

        Returns:
            A dict of NumPy arrays (`tfkd.attach_teacher_logits`):
            `"labels"`, `"teacher_logits"` `(rows, teacher classes)`, and
            `"teacher_features"` (layer name -> `(rows, ...)`) and `"index"`
            `(rows,)` when terms need them.

        Raises:
            ValueError: without a teacher model, with a teacher ensemble
                or with `augmentation`, `mixing` or `views` (the teacher's
                outputs would change every step), for an empty `x`, inputs
                or labels of different lengths, a batch size below 1,
                outputs over `max_megabytes`, or non-finite teacher
                outputs.
            TypeError: when `x` is a dataset or generator.

        Example:

        >>> import numpy as np, keras, tfkd
        >>> x = np.random.rand(32, 8).astype("float32")
        >>> y = np.random.randint(0, 3, size=32)
        >>> teacher = keras.Sequential([keras.Input((8,)),
        ...     keras.layers.Dense(16, name="hidden"), keras.layers.Dense(3)])
        >>> student = keras.Sequential([keras.Input((8,)),
        ...     keras.layers.Dense(4, name="hidden"), keras.layers.Dense(3)])
        >>> distiller = tfkd.Distiller(teacher=teacher, student=student,
        ...     extra_losses=[tfkd.FitNetHint("hidden", "hidden")])
        >>> targets = distiller.precompute_targets(x, y, verbose=0)
        >>> sorted(targets), targets["teacher_features"]["hidden"].shape
        (['labels', 'teacher_features', 'teacher_logits'], (32, 16))
        >>> distiller.compile(optimizer="adam")
        >>> history = distiller.fit(x, targets, batch_size=8, verbose=0)
        """
        return precomputed_targets.precompute_targets(
            self, self._teacher_view, x, y, batch_size=batch_size, verbose=verbose,
            max_megabytes=max_megabytes,
        )

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
                Keras's MixUp or CutMix as `mixing` or on the PyTorch
                backend (`tfkd.torch_step.check_jit_compile`).
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
        if backend_support.keras_backend() == "torch":
            kwargs["jit_compile"] = torch_step.check_jit_compile(
                kwargs["jit_compile"]
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
        self._store_resolved(preflight.check_first_batch(
            self,
            x,
            y,
            training=True,
            validation_data=arguments.arguments.get("validation_data"),
        ))
        # The guard's callback raises for a refused batch (`on_nonfinite`).
        arguments.arguments["callbacks"] = step_guard.with_guard_callback(
            arguments.arguments.get("callbacks"), self._step_guard, self
        )
        return super().fit(*arguments.args, **arguments.kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        arguments = inspect.signature(super().evaluate).bind(
            x, y, *args, **kwargs
        )
        self._store_resolved(
            preflight.check_first_batch(self, x, y, training=False)
        )
        arguments.arguments["callbacks"] = step_guard.with_guard_callback(
            arguments.arguments.get("callbacks"), self._step_guard, self
        )
        return super().evaluate(*arguments.args, **arguments.kwargs)

    def _store_resolved(self, resolved):
        """Keeps what `preflight` resolved from the first batch."""
        if resolved.teacher_outputs is not None:
            self.resolved_teacher_outputs = resolved.teacher_outputs

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

    # -- steps ---------------------------------------------------------------

    def train_step(self, *args):
        # Keras's JAX trainer calls `train_step(state, data)`, a pure
        # function of the state (`tfkd.jax_step`); TensorFlow's and
        # PyTorch's `(data)`.
        backend = backend_support.keras_backend()
        if backend == "jax":
            return self._jax_train_step(*args)
        if backend == "torch":
            return self._torch_train_step(*args)
        return self._tensorflow_train_step(*args)

    def test_step(self, *args):
        if backend_support.keras_backend() == "jax":
            return self._jax_test_step(*args)
        return self._evaluation_step(*args)

    def _tensorflow_train_step(self, data):
        batch = self._batch(data, training=True)
        state = self._step_guard.capture(self.student)
        with tf.GradientTape() as tape:
            student = self._student_outputs(batch.inputs, training=True)
            loss_values = self._loss_values(batch, student)
            # Each replica's gradient is summed across replicas, so each
            # replica's loss (every term included) carries 1 / replicas of
            # the global mean.
            scaled = self.optimizer.scale_loss(
                loss_values.total / _num_replicas_in_sync()
            )
        variables = self._optimized_variables()
        gradients = tape.gradient(scaled, variables)
        # No update from a non-finite or mislabelled batch.
        kept = self._step_guard.apply_gradients(
            self.optimizer, gradients, variables, loss_values.total,
            batch.label_report, state,
        )
        return self._update_metrics(
            batch, student[None].logits, loss_values, kept=kept
        )

    def _evaluation_step(self, data):
        batch = self._batch(data, training=False)
        # Bad labels raise (`tfkd.step_guard`); a non-finite loss needs no
        # guard here, as no weight changes: it shows as a NaN `loss`.
        self._step_guard.record_evaluation(batch.label_report)
        student = self._student_outputs(batch.inputs, training=False)
        loss_values = self._loss_values(batch, student)
        return self._update_metrics(batch, student[None].logits, loss_values)

    def _batch(self, data, training):
        """The step's `_Batch`: labels checked, views drawn, teacher run.

        Labels are checked before anything (mixing, the cross-entropy)
        reads them; see `tfkd.step_guard`. The teacher runs here, outside
        the gradient tape.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        labels, cached_logits = teacher_outputs_lib.split_targets(y)
        cached_features = teacher_outputs_lib.cached_teacher_features(y)
        sparse_labels = self._is_sparse(labels)
        classes = model_checks.output_classes(self.student)
        if classes is not None:
            labels, label_report = self._step_guard.check_labels(labels, classes)
        inputs = {None: x}
        if training:
            x, labels = self._random_view(x, labels, cached_logits)
            inputs = {None: x, **self._views_of(inputs[None])}
        teacher = self._teacher_outputs(
            inputs, cached_logits, cached_features, training
        )
        if classes is None:  # a subclassed student: the teacher's count
            labels, label_report = self._step_guard.check_labels(
                labels, _class_count(teacher[None].logits)
            )
        step_values = {
            "indices": teacher_outputs_lib.example_indices(y),
            "training": training,
            "teacher_is_mixture": self._is_mixture(cached_logits),
        }
        return _Batch(x, labels, sample_weight, sparse_labels, label_report,
                      inputs, teacher, step_values)

    def _loss_values(self, batch, student):
        """This replica's `step_losses.LossValues` of the batch."""
        # In evaluation there is one view, the batch, which every term reads.
        pairs = {view: (batch.teacher[view], student[view]) for view in student}
        pairs.update({view: pairs[None] for view in self.views if view not in pairs})
        return step_losses.compute_losses(
            self.loss_terms(), self.alpha, pairs, batch.labels,
            batch.sample_weight, batch.step_values,
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

    def _run_teacher(self, x, cached_logits, cached_features, training):
        """The teacher's `ModelOutputs` for `x` (logits `None`: no signal).

        The teacher runs once, through its multi-output view when terms
        read its layers; with cached logits and no such terms, or with the
        cached features of those layers as well, it does not run at all.
        """
        view = self._teacher_view
        if cached_features is not None:
            features = teacher_outputs_lib.check_cached_features(
                cached_features, self.teacher_feature_shapes
            )
            return step_losses.ModelOutputs(
                self._as_student_logits(cached_logits, "logits"),
                {name: ops.stop_gradient(value)
                 for name, value in features.items()},
            )
        if view is None or not view.is_multi_output:
            logits = self.teacher_logits(x, cached_logits, training)
            return step_losses.ModelOutputs(logits, {})
        outputs, features = view(x, training=False)
        if cached_logits is not None:
            logits = self._as_student_logits(cached_logits, "logits")
        else:
            logits = self._as_student_logits(outputs, None)
        features = {
            name: ops.stop_gradient(value) for name, value in features.items()
        }
        return step_losses.ModelOutputs(logits, features)

    def _teacher_outputs(self, inputs, cached_logits, cached_features, training):
        """`{view: teacher ModelOutputs}`; only the batch itself is cached."""
        return {
            view: self._run_teacher(
                x,
                *((cached_logits, cached_features) if view is None else (None, None)),
                training,
            )
            for view, x in inputs.items()
        }

    def _student_outputs(self, inputs, training):
        """`{view: student ModelOutputs}`, one forward pass per view."""
        return {
            view: step_losses.ModelOutputs(
                *self._student_view(x, training=training)
            )
            for view, x in inputs.items()
        }

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

    def _views_of(self, x):
        """`{name: view}` of the batch's inputs, for terms that read them.

        Empty without `views`: the one-view step draws nothing more.
        """
        return {
            name: layer(x, training=True) for name, layer in self.views.items()
        }

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

    def _feature_views(self):
        """`(student view, teacher view or None)`: each model's outputs.

        Plain Python objects, deliberately untracked: the views share the
        models' layers, which are saved (once) under `student`/`teacher`.
        """
        terms = self.extra_losses
        requested = ", ".join(repr(term.name) for term in terms)
        student = feature_views.FeatureView(
            self.student, [t.student_layer for t in terms], "student", requested
        )
        if self.teacher is None:
            return student, None
        return student, feature_views.FeatureView(
            self.teacher, [t.teacher_layer for t in terms], "teacher", requested
        )

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
        for term in self.loss_terms():
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

    def _update_metrics(self, batch, student_logits, loss_values, kept=None):
        labels = batch.labels
        if kept is not None:
            labels, student_logits, loss_values = (
                step_guard.without_refused_batch(
                    kept, labels, student_logits, loss_values
                )
            )
        batch_size = ops.shape(student_logits)[0]
        if kept is not None:  # a refused batch counts for nothing
            batch_size = ops.cast(batch_size, "float32") * kept
        _keras_compat.loss_tracker(self).update_state(
            loss_values.total, sample_weight=batch_size
        )
        if loss_values.hard is not None:
            # Weighted by the labelled examples, so the epoch's value is
            # the mean cross-entropy over labelled examples.
            self.student_loss_tracker.update_state(
                loss_values.hard, sample_weight=loss_values.labelled
            )
        for tracker in [self.distillation_loss_tracker, *self.term_loss_trackers]:
            if tracker.name in loss_values.terms:
                tracker.update_state(
                    loss_values.terms[tracker.name], sample_weight=batch_size
                )
        if labels is None:  # nothing to measure label metrics against
            return _keras_compat.step_logs(self.get_metrics_result())
        metric_labels, masked_logits = label_metrics.metric_targets(
            labels, student_logits, batch.sparse_labels
        )
        return _keras_compat.step_logs(
            self.compute_metrics(
                batch.x, metric_labels, masked_logits,
                sample_weight=batch.sample_weight,
            )
        )

    @property
    def metrics_variables(self):
        # On JAX the step guard's counters are metric state, which Keras
        # threads through the stateless steps (`tfkd.jax_step_guard`); they
        # are no metric of the model's (`metrics`, `metrics_names`), and
        # the guard's callback resets them.
        guard = getattr(self, "_step_guard", None)  # None during __init__
        variables = list(super().metrics_variables)
        for metric in [] if guard is None else guard.metrics:
            variables.extend(metric.variables)
        return variables

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
        config.update(self.settings.get_config())
        return config

    @classmethod
    def from_config(cls, config):
        arguments, rest = distiller_settings.DistillerSettings.split_config(
            config
        )
        return cls(**arguments, **rest)


def _setting(name):
    """A read-only attribute of the Distiller that reads its settings."""
    return property(
        lambda self: getattr(self.settings, name),
        doc=f"The `{name}` setting (read-only; `Distiller.settings`).",
    )


# The settings the Distiller does not hold as Keras objects of its own
# (those it tracks, so that `.keras` files and `trainable_weights` see
# them) read straight from `distiller.settings`.
for _field in dataclasses.fields(distiller_settings.DistillerSettings):
    if _field.name not in distiller_settings.TRACKED_FIELDS:
        setattr(Distiller, _field.name, _setting(_field.name))


def _keyword_signature():
    """`Distiller.__init__`'s signature, for `help` and editors.

    The settings' fields (with their defaults), then `name` and `**kwargs`:
    the arguments are declared once, in `DistillerSettings`.
    """
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for field in dataclasses.fields(distiller_settings.DistillerSettings):
        default = (
            inspect.Parameter.empty
            if field.default is dataclasses.MISSING
            else field.default
        )
        parameters.append(inspect.Parameter(field.name, keyword, default=default))
    parameters.append(inspect.Parameter("name", keyword, default="distiller"))
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(parameters)


Distiller.__init__.__signature__ = _keyword_signature()


def _step_guard(on_nonfinite, model):
    """The backend's guard of the training step (`tfkd.step_guard`)."""
    backend = backend_support.keras_backend()
    if backend == "jax":
        return jax_step_guard.JaxStepGuard(on_nonfinite, model=model)
    if backend == "torch":
        return torch_step_guard.TorchStepGuard(on_nonfinite)
    return step_guard.StepGuard(on_nonfinite)


def _known_teacher_outputs(settings):
    """What the teacher emits, as far as known before any batch.

    An ensemble emits its mixture's logits; `"auto"` is `None` until
    `preflight` resolves it.
    """
    if settings.is_ensemble:
        return "logits"
    return None if settings.teacher_outputs == "auto" else settings.teacher_outputs


def _frozen_teacher(settings):
    """The teacher model, an ensemble of the list, or `None`; frozen.

    The teacher only ever runs in inference; freezing it also keeps its
    weights out of `distiller.trainable_weights`.
    """
    teacher = settings.teacher
    if settings.is_ensemble:
        # One model that runs every teacher once and returns the logits of
        # their tempered mixture (`tfkd.ensembles`).
        teacher = ensembles.TeacherEnsemble(
            teacher,
            temperature=settings.temperature,
            teacher_weights=settings.teacher_weights,
            teacher_outputs=settings.teacher_outputs,
            logit_standardization=settings.logit_standardization,
        )
    if teacher is not None:
        teacher.trainable = False
    return teacher
