"""Discriminative learning rates: one optimizer per layer group.

Howard & Ruder (2018), "Universal Language Model Fine-tuning for Text
Classification", section 3.2: deeper layers hold more general features and
should change less, so layer group `i` (0 = head) trains at `lr / 2.6**i`.

Why per-group optimizers: the tempting shortcut of multiplying each group's
gradients by `1 / 2.6**i` does nothing under Adam, whose step
`lr * m / (sqrt(v) + eps)` is invariant to rescaling the gradient. Only the
learning rate itself changes Adam's step size, so each group gets its own copy
of the optimizer with its own rate (and its own slots).
"""

import keras
from keras import ops

from tfkd import _keras_compat
from tfkd.utils import validation


def _as_group_paths(groups):
    paths = []
    for group in groups:
        group_paths = []
        for item in group:
            if isinstance(item, str):
                group_paths.append(item)
            elif isinstance(item, keras.layers.Layer):
                group_paths.extend(v.path for v in item.weights)
            elif isinstance(item, keras.Variable):
                group_paths.append(item.path)
            else:
                raise TypeError(
                    "Invalid value in argument `groups`. Expected groups of "
                    "layers, variables or variable paths (str). "
                    f"Received an item {item!r} of type {type(item).__name__}"
                )
        paths.append(group_paths)
    return paths


@keras.saving.register_keras_serializable(package="tfkd")
class DiscriminativeOptimizer(keras.optimizers.Optimizer):
    """Trains layer group `i` at `learning_rate / factor**i` (ULMFiT).

    Wraps a Keras optimizer (the *template*). Every group gets its own copy of
    the template, created when the group first has trainable variables; at each
    step the wrapper evaluates its learning rate (a float or a schedule such as
    `tfkd.teachers.SlantedTriangularLR`, stepped by the wrapper's global
    `iterations`) and gives group `i` that rate divided by `factor**i`. Each
    copy keeps its own slots, bias correction and clipping, so with Adam the
    step of group `i` is really `factor**i` times smaller (scaling gradients
    instead would leave Adam's step unchanged).

    Works with `model.fit` and `tfkd.teachers.GradualUnfreezing`.

    Args:
        optimizer: The template: a `keras.optimizers.Optimizer` instance or an
            identifier such as `"adam"`. Its learning rate (float or schedule)
            is the head's rate; set clipping and weight decay on it (they apply
            per group). `gradient_accumulation_steps` is not supported.
        groups: List of layer groups, head first, e.g. from
            `tfkd.teachers.layer_groups`. A group lists `keras.layers.Layer`s,
            `keras.Variable`s or variable paths (`variable.path`). Variables in
            no group train at the head's rate.
        factor: Ratio between the rates of consecutive groups, a float > 0.
            Defaults to `2.6` (Howard & Ruder, 2018). `1.0` gives all groups
            the same rate.
        name: Name of the optimizer. Defaults to `"discriminative"`.

    Raises:
        ValueError: On invalid arguments, or if a variable of an already built
            group appears later (unfreeze whole groups).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(2, name="head")])
    >>> optimizer = DiscriminativeOptimizer(
    ...     keras.optimizers.Adam(1e-3),
    ...     [[model.get_layer("head")], [model.get_layer("body")]])
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> _ = model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    >>> [round(float(lr), 7) for lr in optimizer.group_learning_rates]
    [0.001, 0.0003846]
    """

    def __init__(self, optimizer, groups, factor=2.6, name="discriminative",
                 **kwargs):
        if kwargs:
            raise ValueError(
                "DiscriminativeOptimizer does not take base optimizer "
                "arguments; set them on the wrapped `optimizer`. "
                f"Received: {sorted(kwargs)}"
            )
        template = keras.optimizers.get(optimizer)
        if isinstance(template, DiscriminativeOptimizer) or isinstance(
            template, keras.optimizers.LossScaleOptimizer
        ):
            raise validation.invalid_value(
                "optimizer",
                "a plain Keras optimizer (for mixed precision, the "
                "DiscriminativeOptimizer goes inside the LossScaleOptimizer)",
                template,
            )
        if template.gradient_accumulation_steps:
            raise ValueError(
                "Invalid value for argument `optimizer`: "
                "`gradient_accumulation_steps` is not supported by "
                "DiscriminativeOptimizer. Received: gradient_accumulation_steps"
                f"={template.gradient_accumulation_steps}"
            )
        if not isinstance(groups, (list, tuple)) or not groups or not all(
            isinstance(group, (list, tuple)) for group in groups
        ):
            raise validation.invalid_value(
                "groups",
                "a non-empty list of lists",
                groups,
            )
        validation.check_positive_float("factor", factor)
        # Snapshot now: `build` may run while `fit` traces the train step,
        # where reading the template's variables for its config is impossible.
        template_config = template.get_config()
        learning_rate = template_config["learning_rate"]
        if isinstance(learning_rate, dict):  # a serialized schedule
            learning_rate = keras.optimizers.schedules.deserialize(
                learning_rate)
        super().__init__(learning_rate=learning_rate, name=name)
        self.template = template
        self._template_config = template_config
        self.factor = float(factor)
        self._group_paths = _as_group_paths(groups)
        # Layer and variable objects identify variables exactly even if two
        # nested models reuse layer names (and hence variable paths). Only
        # their keys are kept: an optimizer tracks (and saves) every variable
        # stored in its attributes.
        self._key_to_group = {
            _keras_compat.optimizer_variable_key(self, variable): index
            for index, group in enumerate(groups)
            for item in group
            if not isinstance(item, str)
            for variable in (
                item.weights if isinstance(item, keras.layers.Layer) else [item]
            )
        }
        self._path_to_group = {
            path: index
            for index, paths in enumerate(self._group_paths)
            for path in paths
        }
        # Group index -> optimizer, filled lazily by `build`.
        self._group_optimizers = {}

    @property
    def num_groups(self):
        """Number of layer groups."""
        return len(self._group_paths)

    @property
    def group_learning_rates(self):
        """Current learning rate of each group, head first (list of tensors)."""
        base = self._get_current_learning_rate()
        return [
            self._group_rate(base, index) for index in range(self.num_groups)
        ]

    def _group_rate(self, base, index):
        return ops.divide(base, self.factor**index)

    def _group_of(self, variable):
        index = self._key_to_group.get(
            _keras_compat.optimizer_variable_key(self, variable)
        )
        if index is None:
            index = self._path_to_group.get(variable.path, 0)
        return index

    def _partition(self, variables, values=None):
        by_group = {}
        for position, variable in enumerate(variables):
            entry = by_group.setdefault(self._group_of(variable), ([], []))
            entry[0].append(variable)
            if values is not None:
                entry[1].append(values[position])
        return by_group

    def build(self, var_list):
        """Creates the optimizer of each group with variables in `var_list`.

        Safe to call again after more groups were unfrozen: it only builds the
        groups it has not built yet.

        Args:
            var_list: List of trainable variables.
        """
        var_list = list(var_list)
        for index, (variables, _) in sorted(self._partition(var_list).items()):
            group_optimizer = self._group_optimizers.get(index)
            if group_optimizer is None:
                config = dict(self._template_config)
                config.update(
                    # The rate is assigned at every step from the wrapper's.
                    learning_rate=0.0,
                    name=f"{self.name}_group_{index}",
                )
                group_optimizer = self.template.__class__.from_config(config)
                with keras.name_scope(self.name):
                    group_optimizer.build(variables)
                self._group_optimizers[index] = group_optimizer
                continue
            unknown = [v.path for v in variables
                       if not _keras_compat.optimizer_knows(group_optimizer, v)]
            if unknown:
                raise ValueError(
                    f"Variables {unknown[:3]} of layer group {index} became "
                    "trainable after the group's optimizer was built. Unfreeze "
                    "whole groups (see `tfkd.teachers.set_trainable_groups`)."
                )
        if not self.built:
            super().build(var_list)

    @property
    def variables(self):
        variables = list(self._variables)
        for index in sorted(self._group_optimizers):
            variables.extend(self._group_optimizers[index].variables)
        return variables

    def apply(self, grads, trainable_variables=None):
        """Applies `grads` to `trainable_variables`, each group at its rate.

        Args:
            grads: List of gradients.
            trainable_variables: List of variables. Defaults to the variables
                the optimizer was first built with.
        """
        grads = list(grads)
        if not grads:
            return
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        by_group = self._partition(trainable_variables, grads)
        if any(index not in self._group_optimizers for index in by_group):
            self.build(trainable_variables)
        base = self._get_current_learning_rate()
        for index, (variables, group_grads) in sorted(by_group.items()):
            group_optimizer = self._group_optimizers[index]
            group_optimizer.learning_rate = self._group_rate(base, index)
            group_optimizer.apply(group_grads, variables)
        self._iterations.assign_add(1)

    def scale_loss(self, loss):
        # Group optimizers unscale with the template's `loss_scale_factor`.
        return self.template.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        for index, (variables, _) in self._partition(list(var_list)).items():
            if index in self._group_optimizers:
                group_optimizer = self._group_optimizers[index]
                group_optimizer.finalize_variable_values(variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(
            "DiscriminativeOptimizer supports the TensorFlow backend's "
            "stateful `apply` only."
        )

    def get_config(self):
        template = keras.optimizers.serialize(self.template)
        # A callback (e.g. ReduceLROnPlateau) may have changed the rate.
        template["config"]["learning_rate"] = super().get_config()[
            "learning_rate"
        ]
        return {
            "optimizer": template,
            "groups": [list(paths) for paths in self._group_paths],
            "factor": self.factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.optimizers.deserialize(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)
