"""The two-stage fine-tuning recipe for teachers.

Stage 1 trains only the new head, the backbone frozen: a random head would
otherwise send large, random gradients into the pretrained features. Stage 2
unfreezes the top backbone groups and trains them at a lower rate, with the
ULMFiT options of Howard & Ruder (2018): slanted triangular learning rates,
discriminative rates (group `i` at `lr / 2.6**i`) and gradual unfreezing.
The BatchNorm statistics of a pretrained backbone never move in either stage.
"""

import dataclasses
import warnings

import keras

from tfkd import backend_support
from tfkd.utils import validation
from . import discriminative
from . import layer_groups as groups_lib
from . import layers as teacher_layers
from . import schedules
from . import unfreezing


class FineTuneHistory(keras.callbacks.History):
    """History of both fine-tuning stages, merged as if from one `fit` call.

    `history` maps each metric to one value per epoch of stage 1 followed by
    stage 2 (so `len(history["loss"]) == sum(epochs)`); `epoch` lists the global
    epoch indices `0 .. sum(epochs) - 1`; `stages` holds the two `History`
    objects returned by `fit` (`None` for a stage with 0 epochs) and
    `stage_of_epoch` says which stage (1 or 2) each epoch belongs to.

    Args:
        model: The fine-tuned model.
        stages: Pair of `keras.callbacks.History` or `None`.

    Example:

    ```python
    history = tfkd.teachers.fine_tune(teacher, train_ds, val_ds, epochs=(3, 10))
    plt.plot(history.epoch, history.history["val_accuracy"])
    ```
    """

    def __init__(self, model, stages):
        super().__init__()
        self.set_model(model)
        self.stages = tuple(stages)
        self.epoch = []
        self.history = {}
        self.stage_of_epoch = []
        self.params = {}
        for stage_number, stage in enumerate(self.stages, start=1):
            if stage is None:
                continue
            self.params = dict(stage.params or {})
            self.epoch.extend(stage.epoch)
            self.stage_of_epoch.extend([stage_number] * len(stage.epoch))
            for key, values in stage.history.items():
                self.history.setdefault(key, []).extend(values)


def _validate_pair(value, argument, check, expected):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(check(v) for v in value)
    ):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a pair "
            f"(stage 1, stage 2) of {expected}. Received: {argument}={value!r}"
        )
    return tuple(value)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_rate(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
    )


def _infer_steps_per_epoch(train_ds, steps_per_epoch):
    if steps_per_epoch is not None:
        return steps_per_epoch
    if backend_support.is_tf_dataset(train_ds):
        cardinality = int(train_ds.cardinality())
        if cardinality > 0:
            return cardinality
    elif hasattr(train_ds, "__len__"):
        return len(train_ds)
    raise ValueError(
        "Cannot infer the number of steps per epoch of `train_ds` (its "
        "cardinality is unknown or infinite), which the slanted triangular "
        "schedule needs. Pass `steps_per_epoch=` or `schedule='constant'`. "
        f"Received: train_ds={train_ds!r}"
    )


def _template(optimizer, learning_rate):
    """A fresh copy of `optimizer` with `learning_rate`, per stage."""
    optimizer = keras.optimizers.get(optimizer)
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    config.pop("name", None)
    return optimizer.__class__.from_config(config)


def _built_from_scratch(teacher):
    # `build` wraps the backbone in InferenceMode exactly when it loaded
    # weights; its preprocessing layer marks a teacher built by tfkd.
    built_here = any(
        isinstance(layer, teacher_layers.ApplicationPreprocessing)
        for layer in teacher.layers
    )
    protected = any(
        isinstance(layer, teacher_layers.InferenceMode)
        for layer in teacher.layers
    )
    return built_here and not protected


def _warn_about_random_backbone(epochs, unfreeze, num_backbone_groups):
    """Warns when a random backbone would stay (partly) frozen."""
    problems = []
    if epochs[0] > 0:
        problems.append(
            f"stage 1 trains the head for {epochs[0]} epoch(s) on the frozen "
            "random backbone's features"
        )
    if epochs[1] > 0 and unfreeze < num_backbone_groups:
        problems.append(
            f"stage 2 unfreezes only the top {unfreeze} of "
            f"{num_backbone_groups} backbone groups, so the others stay random"
        )
    if problems:
        warnings.warn(
            "This teacher was built with `weights=None`, so its backbone is "
            "randomly initialized: " + "; ".join(problems) + ". To train it "
            "from scratch, call `fine_tune(teacher, ..., epochs=(0, N), "
            "unfreeze='all', discriminative_factor=None, "
            "learning_rate=(1e-3, 1e-3))`.",
            UserWarning,
            stacklevel=3,
        )


def fine_tune(
    teacher,
    train_ds,
    val_ds=None,
    epochs=(3, 10),
    learning_rate=(1e-3, 1e-4),
    optimizer="adam",
    unfreeze=2,
    num_groups=None,
    discriminative_factor=2.6,
    gradual_unfreezing=False,
    schedule="stlr",
    cut_frac=0.1,
    ratio=32.0,
    train_batchnorm=None,
    loss=None,
    metrics=("accuracy",),
    callbacks=None,
    steps_per_epoch=None,
    jit_compile="auto",
    run_eagerly=False,
    verbose="auto",
):
    """Fine-tunes a teacher in two stages: head first, then the top blocks.

    Stage 1 (`epochs[0]` epochs) freezes everything but the head (layer group 0)
    and trains it at `learning_rate[0]`. Stage 2 (`epochs[1]` epochs) also
    unfreezes the top `unfreeze` backbone groups and trains them at
    `learning_rate[1]`, group `i` at `learning_rate[1] / discriminative_factor
    ** i` (`tfkd.teachers.DiscriminativeOptimizer`). With
    `gradual_unfreezing=True`, stage 2 starts with the head and the top group
    and adds one deeper group per epoch (`tfkd.teachers.GradualUnfreezing`).
    With `schedule="stlr"` each stage follows a slanted triangular schedule
    peaking at its rate (`tfkd.teachers.SlantedTriangularLR`). The BatchNorm
    layers of a pretrained backbone stay in inference mode throughout, so
    their statistics never move.

    Training from scratch (`build(..., weights=None)`, e.g. offline): a frozen
    random backbone is useless, so skip stage 1 and train everything,
    `fine_tune(teacher, train_ds, val_ds, epochs=(0, 20), unfreeze="all",
    discriminative_factor=None, learning_rate=(1e-3, 1e-3))`; BatchNorm then
    trains by default (see `train_batchnorm`), with the momentum 0.9 that
    `build` sets for `weights=None`. (With keras.applications' own 0.999, a
    MobileNetV3Small trained this way on 6,000 Fashion-MNIST images stayed at
    10.1 % validation accuracy for 4 epochs while its training accuracy rose
    to 86 %; with 0.9 it reached 73.7 % after the first epoch and 80.1 %
    after the fourth.)

    Works for teachers from `tfkd.teachers.build` and for any Keras classifier
    prepared with `tfkd.teachers.as_teacher` (then a "group" is a layer; see
    `tfkd.teachers.layer_groups`). The teacher is compiled here (loss on
    logits) and is left compiled, with its stage-2 trainable state.

    Args:
        teacher: A built `keras.Model` that outputs logits.
        train_ds: Training data as `model.fit` accepts it, typically a
            `tf.data.Dataset` of `(images, labels)` batches from `tfkd.data`.
        val_ds: Validation data, or `None`. Defaults to `None`.
        epochs: Pair `(stage 1 epochs, stage 2 epochs)` of ints >= 0.
            Defaults to `(3, 10)`.
        learning_rate: Pair of peak rates `(head stage, fine-tuning stage)`.
            Defaults to `(1e-3, 1e-4)`.
        optimizer: Optimizer identifier or instance used as a template; each
            stage gets a fresh copy with its own rate. Defaults to `"adam"`.
        unfreeze: Number of backbone groups unfrozen in stage 2 (top first),
            an int >= 1, or `"all"`. Defaults to `2`.
        num_groups: Passed to `tfkd.teachers.layer_groups`: the number of groups
            including the head, or `None` for one per backbone stage. Defaults
            to `None`.
        discriminative_factor: Rate ratio between consecutive groups in stage 2,
            a float > 0, or `None` for one rate everywhere. Defaults to `2.6`.
        gradual_unfreezing: Whether stage 2 unfreezes one group per epoch.
            Defaults to `False`.
        schedule: `"stlr"` (slanted triangular) or `"constant"`. Defaults to
            `"stlr"`.
        cut_frac: STLR rise fraction. Defaults to `0.1`.
        ratio: STLR peak-to-floor ratio. Defaults to `32.0`.
        train_batchnorm: Whether BatchNorm layers of unfrozen groups train:
            their scale and offset, and, unless the backbone runs in
            `InferenceMode`, their statistics. Defaults to `None`: `True` for
            a teacher from `build(..., weights=None)` (nothing pretrained to
            protect), `False` otherwise.
        loss: Loss on logits. Defaults to `None`:
            `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` for
            integer labels.
        metrics: Metrics for `compile`. Defaults to `("accuracy",)`.
        callbacks: List of callbacks used in both stages. Defaults to `None`.
        steps_per_epoch: Steps per epoch; needed with `schedule="stlr"` if
            `train_ds` has no known length. Defaults to `None`.
        jit_compile: Passed to `compile`. Defaults to `"auto"`.
        run_eagerly: Passed to `compile`. Tracing the train step of a large
            backbone takes tens of seconds on a CPU; for runs of a few steps
            (smoke tests, debugging) eager execution is faster. Defaults to
            `False`.
        verbose: Passed to `fit`. Defaults to `"auto"`.

    Returns:
        A `tfkd.teachers.FineTuneHistory`: `history.history` holds every metric
        for all `sum(epochs)` epochs, stage 1 first; `history.stages` holds the
        two per-stage `History` objects.

    Raises:
        ValueError: On invalid arguments, before any training.

    Example:

    ```python
    teacher = tfkd.teachers.build("efficientnetv2b0", num_classes=10,
                                  input_shape=(28, 28, 1), weights="imagenet")
    history = tfkd.teachers.fine_tune(teacher, train_ds, val_ds, epochs=(3, 10))
    print(history.history["val_accuracy"][-1])
    ```
    """
    plan = _plan(
        teacher, train_ds, epochs, learning_rate, optimizer, unfreeze,
        num_groups, discriminative_factor, schedule, steps_per_epoch,
        train_batchnorm,
    )
    plan = dataclasses.replace(
        plan,
        gradual_unfreezing=gradual_unfreezing,
        cut_frac=cut_frac,
        ratio=ratio,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        ),
        compile_kwargs={
            "metrics": list(metrics or []),
            "jit_compile": jit_compile,
            "run_eagerly": run_eagerly,
        },
        fit_kwargs={
            "validation_data": val_ds,
            "steps_per_epoch": steps_per_epoch,
            "verbose": verbose,
        },
        callbacks=tuple(callbacks or ()),
    )
    stage1 = _train_head(teacher, train_ds, plan) if plan.epochs[0] else None
    stage2 = _train_top_groups(teacher, train_ds, plan) if plan.epochs[1] else None
    return FineTuneHistory(teacher, (stage1, stage2))


@dataclasses.dataclass(frozen=True)
class _FineTunePlan:
    """The checked arguments of one `fine_tune` call."""

    groups: list
    epochs: tuple
    learning_rate: tuple
    optimizer: object
    unfreeze: int
    discriminative_factor: float | None
    schedule: str
    steps: int | None
    train_batchnorm: bool
    gradual_unfreezing: bool = False
    cut_frac: float = 0.1
    ratio: float = 32.0
    loss: object = None
    compile_kwargs: dict = dataclasses.field(default_factory=dict)
    fit_kwargs: dict = dataclasses.field(default_factory=dict)
    callbacks: tuple = ()

    def stage_optimizer(self, stage):
        """A fresh optimizer at stage `stage`'s (0 or 1) rate or schedule."""
        rate = float(self.learning_rate[stage])
        if self.schedule == "stlr":
            rate = schedules.SlantedTriangularLR(
                rate,
                total_steps=max(1, self.epochs[stage] * self.steps),
                cut_frac=self.cut_frac,
                ratio=self.ratio,
            )
        return _template(self.optimizer, rate)


def _plan(
    teacher, train_ds, epochs, learning_rate, optimizer, unfreeze,
    num_groups, discriminative_factor, schedule, steps_per_epoch,
    train_batchnorm,
):
    """Checks `fine_tune`'s arguments before any training; the plan."""
    if not isinstance(teacher, keras.Model):
        raise validation.invalid_type(
            "teacher", "a built `keras.Model`", teacher
        )
    if not teacher.built:
        raise validation.invalid_value(
            "teacher", "a built `keras.Model`", teacher
        )
    epochs = _validate_pair(epochs, "epochs", _is_count, "ints >= 0")
    learning_rate = _validate_pair(
        learning_rate, "learning_rate", _is_rate, "floats > 0"
    )
    validation.check_choice("schedule", schedule, ("stlr", "constant"))
    if discriminative_factor is not None and not _is_rate(
        discriminative_factor
    ):
        raise validation.invalid_value(
            "discriminative_factor", "None or a float > 0",
            discriminative_factor,
        )
    groups = groups_lib.layer_groups(teacher, num_groups=num_groups)
    num_backbone_groups = len(groups) - 1
    if unfreeze == "all":
        unfreeze = num_backbone_groups
    validation.check_int(
        "unfreeze", unfreeze, 1, num_backbone_groups,
        expected=f"'all' or an int in [1, {num_backbone_groups}] (the "
        f"backbone groups of {teacher.name!r})",
    )
    keras.optimizers.get(optimizer)  # fail early on an unknown identifier
    if steps_per_epoch is not None:
        validation.check_int(
            "steps_per_epoch", steps_per_epoch, minimum=1,
            expected="None or an int >= 1",
        )
    from_scratch = _built_from_scratch(teacher)
    if from_scratch:
        _warn_about_random_backbone(epochs, unfreeze, num_backbone_groups)
    steps = (
        _infer_steps_per_epoch(train_ds, steps_per_epoch)
        if schedule == "stlr" else steps_per_epoch
    )
    return _FineTunePlan(
        groups=groups,
        epochs=epochs,
        learning_rate=learning_rate,
        optimizer=optimizer,
        unfreeze=unfreeze,
        discriminative_factor=discriminative_factor,
        schedule=schedule,
        steps=steps,
        train_batchnorm=(
            from_scratch if train_batchnorm is None else train_batchnorm
        ),
    )


def _fit_stage(teacher, train_ds, plan, initial_epoch, stage_epochs,
               stage_callbacks=()):
    return teacher.fit(
        train_ds,
        epochs=initial_epoch + stage_epochs,
        initial_epoch=initial_epoch,
        callbacks=list(plan.callbacks) + list(stage_callbacks),
        **plan.fit_kwargs,
    )


def _train_head(teacher, train_ds, plan):
    """Stage 1: the head alone, backbone frozen."""
    unfreezing.set_trainable_groups(
        teacher, plan.groups, 1, train_batchnorm=plan.train_batchnorm
    )
    teacher.compile(
        optimizer=plan.stage_optimizer(0), loss=plan.loss,
        **plan.compile_kwargs,
    )
    return _fit_stage(teacher, train_ds, plan, 0, plan.epochs[0])


def _train_top_groups(teacher, train_ds, plan):
    """Stage 2: head + top `unfreeze` groups, deeper groups at lower rates."""
    trainable_groups = plan.groups[: plan.unfreeze + 1]
    stage_callbacks = []
    if plan.gradual_unfreezing:
        # The head was trained in stage 1: start with it and the top group.
        stage_callbacks.append(
            unfreezing.GradualUnfreezing(
                trainable_groups,
                initial_groups=min(2, len(trainable_groups)),
                train_batchnorm=plan.train_batchnorm,
            )
        )
    unfreezing.set_trainable_groups(
        teacher, plan.groups, len(trainable_groups),
        train_batchnorm=plan.train_batchnorm,
    )
    teacher.compile(
        optimizer=discriminative.DiscriminativeOptimizer(
            plan.stage_optimizer(1),
            plan.groups,
            factor=plan.discriminative_factor or 1.0,
        ),
        loss=plan.loss,
        **plan.compile_kwargs,
    )
    return _fit_stage(
        teacher, train_ds, plan, plan.epochs[0], plan.epochs[1],
        stage_callbacks,
    )
