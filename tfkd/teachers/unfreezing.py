"""Freezing and unfreezing layer groups, at once or gradually (ULMFiT).

Howard & Ruder (2018), "Universal Language Model Fine-tuning for Text
Classification", section 3.3: unfreeze the top group first and one more group
per epoch, so the pretrained features are not overwritten while the new head's
gradients are still large and random.
"""

import keras

from tfkd.utils import validation
from . import layer_groups as groups_lib


def set_trainable_groups(model, groups, num_trainable, train_batchnorm=False):
    """Makes the first `num_trainable` groups trainable and freezes the rest.

    Every layer of `model` outside `groups[:num_trainable]` is frozen, whether
    it is listed in a later group or not listed at all. BatchNormalization
    layers stay frozen (`trainable=False`) unless `train_batchnorm=True`; a
    frozen BatchNorm runs in inference mode in Keras 3, so its moving
    statistics never move (teachers from `tfkd.teachers.build` additionally
    run their backbone in `tfkd.teachers.InferenceMode`). Recompile the model
    afterwards, or call `model.make_train_function(force=True)` inside `fit`.

    Args:
        model: The `keras.Model` the groups belong to.
        groups: Layer groups, head first, from `tfkd.teachers.layer_groups`.
        num_trainable: Number of leading groups to make trainable, an int in
            `[0, len(groups)]`.
        train_batchnorm: Whether BatchNorm scale and offset in trainable groups
            are trained too. Their moving statistics still are not, for
            teachers from `build`. Defaults to `False`.

    Returns:
        `None`.

    Raises:
        ValueError: If `num_trainable` is out of range.

    Example:

    >>> from tfkd.teachers import build, layer_groups
    >>> teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None)
    >>> groups = layer_groups(teacher)
    >>> set_trainable_groups(teacher, groups, 2)
    >>> teacher.get_layer("logits").trainable
    True
    """
    validation.check_int("num_trainable", num_trainable, 0, len(groups))
    # In Keras 3 a frozen container hides all its layers' weights: open every
    # container (this propagates down), close every layer that owns weights,
    # then reopen the chosen groups (this propagates into nested layers).
    model.trainable = True
    layers = groups_lib.all_sublayers(model)
    for layer in layers:
        if getattr(layer, "_trainable_variables", None):
            layer.trainable = False
    for group in groups[:num_trainable]:
        for layer in group:
            layer.trainable = True
    if not train_batchnorm:
        for layer in layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes one more layer group every `epochs_per_group` epochs.

    ULMFiT's gradual unfreezing (Howard & Ruder, 2018): at the first epoch of
    `fit`, groups `0 .. initial_groups - 1` are trainable; after every
    `epochs_per_group` epochs the next deeper group joins, until all `groups`
    train. BatchNorm layers stay in inference mode throughout (see
    `set_trainable_groups`).

    The model must be compiled with `tfkd.teachers.DiscriminativeOptimizer`
    (use `factor=1.0` for equal rates): a plain Keras optimizer creates its
    slots once for the variables that were trainable when it was built, and
    rejects variables unfrozen later, whereas `DiscriminativeOptimizer` builds
    an optimizer per group when the group first trains.

    Args:
        groups: Layer groups, head first, from `tfkd.teachers.layer_groups`.
            Layers in no group stay frozen.
        initial_groups: Number of groups trainable in the first epoch, an int
            in `[1, len(groups)]`. Defaults to `1` (only the head).
        epochs_per_group: Epochs between two unfreezings, an int >= 1.
            Defaults to `1`.
        train_batchnorm: Passed to `set_trainable_groups`. Defaults to `False`.

    Keras does not serialize callbacks, so this one has no `get_config`.

    Raises:
        ValueError: On invalid arguments.
        TypeError: At the start of `fit`, if the model's optimizer is not a
            `DiscriminativeOptimizer`.

    Example:

    ```python
    groups = tfkd.teachers.layer_groups(teacher, num_groups=4)
    teacher.compile(
        optimizer=tfkd.teachers.DiscriminativeOptimizer(
            keras.optimizers.Adam(1e-4), groups, factor=2.6),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(train_ds, epochs=4,
                callbacks=[tfkd.teachers.GradualUnfreezing(groups)])
    ```
    """

    def __init__(
        self, groups, initial_groups=1, epochs_per_group=1,
        train_batchnorm=False,
    ):
        super().__init__()
        groups = [list(group) for group in groups]
        if not groups:
            raise validation.invalid_value(
                "groups",
                "a non-empty list of layer groups",
                groups,
            )
        validation.check_int("initial_groups", initial_groups, 1, len(groups))
        validation.check_int("epochs_per_group", epochs_per_group, minimum=1)
        self.groups = groups
        self.initial_groups = initial_groups
        self.epochs_per_group = epochs_per_group
        self.train_batchnorm = train_batchnorm
        self.num_trainable = None  # groups trainable right now
        self._first_epoch = None

    def on_train_begin(self, logs=None):
        # Imported here: discriminative.py does not depend on this module.
        from .discriminative import DiscriminativeOptimizer

        if not isinstance(self.model.optimizer, DiscriminativeOptimizer):
            raise TypeError(
                "GradualUnfreezing needs the model compiled with "
                "`tfkd.teachers.DiscriminativeOptimizer` (factor=1.0 gives "
                "every group the same rate), because a plain optimizer cannot "
                "train variables unfrozen after it was built. Received: "
                f"optimizer={type(self.model.optimizer).__name__}"
            )
        self._first_epoch = None
        self.num_trainable = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            # `fit(initial_epoch=k)` starts counting at k.
            self._first_epoch = epoch
        elapsed = epoch - self._first_epoch
        wanted = min(
            len(self.groups),
            self.initial_groups + elapsed // self.epochs_per_group,
        )
        if wanted == self.num_trainable:
            return
        set_trainable_groups(
            self.model, self.groups, wanted, self.train_batchnorm
        )
        # Create the optimizer slots of the new group eagerly, then retrace
        # the train step so it differentiates the new trainable variables.
        self.model.optimizer.build(self.model.trainable_variables)
        self.model.make_train_function(force=True)
        self.num_trainable = wanted
