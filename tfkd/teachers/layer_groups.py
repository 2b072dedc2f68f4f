"""Splits a teacher into layer groups, head first, for ULMFiT-style fine-tuning.

Group 0 is the head (the new classifier), group 1 the top of the backbone, and
each further group lies deeper. Gradual unfreezing unfreezes groups in this
order; discriminative learning rates give group `i` the rate `lr / factor**i`.

For teachers built by `tfkd.teachers.build` (and any model containing a
registered `keras.applications` backbone) the backbone is split at its
published stages (ResNet50: conv1..conv5, EfficientNet: block1..block7, ...).
For other models every layer with trainable weights is a unit, a normalization
layer staying with the layer before it.
"""

import keras
import numpy as np

from tfkd import _keras_compat
from tfkd.utils import validation
from . import layers as teacher_layers
from . import registry

_NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


def all_sublayers(layer):
    """Returns `layer` and all layers nested in it, at any depth.

    Args:
        layer: A `keras.layers.Layer` (models included).

    Returns:
        A list of layers, `layer` first.

    Example:

    >>> import keras
    >>> inputs = keras.Input((2,), name="x")
    >>> model = keras.Model(inputs, keras.layers.Dense(1, name="dense")(inputs),
    ...                     name="model")
    >>> [layer.name for layer in all_sublayers(model)]
    ['model', 'x', 'dense']
    """
    # Also reaches layers held as attributes of custom layers, which
    # `Model.layers` does not list.
    return _keras_compat.all_sublayers(layer)


def has_trainable_weights(layer):
    """Whether `layer` (or a layer inside it) owns weights that can be trained.

    Unlike `layer.trainable_weights`, this is also true while the layer is
    frozen, and false for layers holding only state (BatchNorm moving
    statistics are not enough, Normalization's mean/variance neither).

    Args:
        layer: A `keras.layers.Layer`.

    Returns:
        A bool.

    Example:

    >>> import keras
    >>> dense = keras.layers.Dense(2)
    >>> dense.build((None, 3))
    >>> dense.trainable = False
    >>> has_trainable_weights(dense)
    True
    """
    # `_trainable_variables` lists the variables a layer created as
    # trainable; it does not change when the layer is frozen.
    return any(
        getattr(sublayer, "_trainable_variables", None)
        for sublayer in all_sublayers(layer)
    )


def _unwrap(layer):
    # Teachers from `build` hold their backbone inside `InferenceMode`.
    while isinstance(layer, keras.layers.Wrapper):
        layer = layer.layer
    return layer


def _backbone_position(model):
    """Returns `(index in model.layers, backbone model)` or `(None, None)`."""
    total = model.count_params() if model.built else 0
    candidates = [
        (index, _unwrap(layer)) for index, layer in enumerate(model.layers)
        if isinstance(_unwrap(layer), keras.Model) and _unwrap(layer).built
    ]
    if not candidates or total == 0:
        return None, None
    index, best = max(candidates, key=lambda item: item[1].count_params())
    if best.count_params() * 2 < total:
        return None, None
    return index, best


def find_backbone(model):
    """Returns the nested model holding most of `model`'s weights, or `None`.

    Args:
        model: A `keras.Model`.

    Returns:
        The direct sub-layer of `model` that is a `keras.Model` (looking
        inside wrappers such as `InferenceMode`) and holds at least half of
        `model`'s parameters, or `None` if there is none.

    Example:

    >>> from tfkd.teachers import build
    >>> teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
    ...                 inference_mode=True)
    >>> find_backbone(teacher).name  # the model inside InferenceMode
    'MobileNetV3Small'
    """
    return _backbone_position(model)[1]


def _family_of(model, backbone, family):
    if family is not None:
        return registry.get_family(family)
    for layer in all_sublayers(model):
        if isinstance(layer, teacher_layers.ApplicationPreprocessing):
            return registry.get_family(layer.family)
    if backbone is None:
        return None
    # A user-assembled model around a keras.applications backbone: the rule
    # that recognizes the most layer names is the backbone's family.
    names = [layer.name for layer in backbone.layers]
    best, best_stages = None, 1
    for name in registry.list_families():
        spec = registry.get_family(name)
        stages = spec.stages_of(names)
        if stages is not None and len(set(stages)) > best_stages:
            best, best_stages = spec, len(set(stages))
    return best


def _generic_units(layers):
    # A normalization layer has no meaning apart from the layer it normalizes.
    units = []
    for layer in layers:
        if units and isinstance(layer, _NORMALIZATION_LAYERS):
            units[-1].append(layer)
        else:
            units.append([layer])
    return units


def _backbone_stages(backbone, spec):
    """Lists the stages of `backbone`, bottom first, each a list of layers."""
    weighted = [
        layer for layer in backbone.layers if has_trainable_weights(layer)
    ]
    stage_ids = (
        spec.stages_of([layer.name for layer in backbone.layers])
        if spec is not None else None
    )
    if stage_ids is None:
        return _generic_units(weighted)
    stage_of = {
        id(layer): stage
        for layer, stage in zip(backbone.layers, stage_ids)
    }
    stages = {}
    for layer in weighted:
        stages.setdefault(stage_of[id(layer)], []).append(layer)
    return [stages[key] for key in sorted(stages)]


def _split_evenly(items, num_chunks):
    # Contiguous chunks whose sizes differ by at most one; the first (top)
    # chunks get the extra item, as in `np.array_split`.
    bounds = np.cumsum(
        [0] + [len(chunk) for chunk in np.array_split(np.arange(len(items)),
                                                      num_chunks)]
    )
    return [
        [layer for stage in items[start:end] for layer in stage]
        for start, end in zip(bounds[:-1], bounds[1:])
    ]


def layer_groups(model, num_groups=None, family=None):
    """Splits a model into layer groups: the head first, then deeper and deeper.

    Args:
        model: A built `keras.Model`, typically from `tfkd.teachers.build` or
            `tfkd.teachers.as_teacher`.
        num_groups: Total number of groups including the head, an int >= 2, or
            `None` for one group per backbone stage (per unit for models
            without a registered backbone). With fewer groups than stages,
            neighbouring stages are merged into contiguous groups of nearly
            equal numbers of stages. Defaults to `None`.
        family: Registered family whose stage rule splits the backbone.
            Defaults to `None`: read from the teacher's
            `ApplicationPreprocessing` layer, else guessed from layer names.

    Returns:
        A list of lists of layers. `groups[0]` holds the layers with weights
        after the backbone (the head); for a model without a nested backbone,
        the last layer with weights. `groups[1]` is the top of the backbone and
        `groups[-1]` its bottom (the stem). Only layers owning trainable
        weights are listed.

    Raises:
        ValueError: If the model is not built, has fewer than two units with
            trainable weights, or `num_groups` is out of range.

    Example:

    >>> from tfkd.teachers import build
    >>> teacher = build("resnet50", 10, (32, 32, 3), weights=None)
    >>> groups = layer_groups(teacher)
    >>> [group[0].name for group in groups]
    ['logits', 'conv5_block1_1_conv', 'conv4_block1_1_conv', \
'conv3_block1_1_conv', 'conv2_block1_1_conv', 'conv1_conv']
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise validation.invalid_value(
            "model",
            "a built `keras.Model`",
            model,
        )
    position, backbone = _backbone_position(model)
    if backbone is not None:
        head = [
            layer for layer in model.layers[position + 1:]
            if has_trainable_weights(layer)
        ]
        # Trainable layers before the backbone (rare: e.g. a learned stem a
        # user added) are treated as the bottom of the backbone.
        before = [
            layer for layer in model.layers[:position]
            if has_trainable_weights(layer)
        ]
        stages = _backbone_stages(backbone, _family_of(model, backbone, family))
        if before:
            stages = [before] + stages
    else:
        weighted = [
            layer for layer in model.layers if has_trainable_weights(layer)
        ]
        head = weighted[-1:]
        stages = _generic_units(weighted[:-1])
    if not head or not stages:
        raise validation.invalid_value(
            "model",
            "a model with a head and at least one more layer with trainable "
            "weights",
            model.name,
        )
    stages = stages[::-1]  # top first
    if num_groups is None:
        return [head] + stages
    validation.check_int(
        "num_groups", num_groups, 2, len(stages) + 1,
        expected=f"None or an int in [2, {len(stages) + 1}] for model "
        f"{model.name!r} (the head plus {len(stages)} stages)",
    )
    return [head] + _split_evenly(stages, num_groups - 1)
