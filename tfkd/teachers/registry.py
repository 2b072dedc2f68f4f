"""Registry of the `keras.applications` families that can become teachers.

Each entry records what the builder needs and users tend to get wrong: the
constructor, the family's own `preprocess_input`, the smallest input the
architecture accepts, its native (ImageNet) input size, and how its layers split
into stages for fine-tuning.
"""

import dataclasses
import difflib
from typing import Callable, Sequence, Tuple

import keras

from . import stage_rules


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What tfkd needs to turn a `keras.applications` family into a teacher.

    Args:
        name: Canonical lower-case name, e.g. `"efficientnetv2b0"`.
        constructor: The `keras.applications` constructor, e.g.
            `keras.applications.EfficientNetV2B0`. It must accept
            `include_top`, `weights`, `input_shape` and `pooling`.
        preprocess_input: The family's own `preprocess_input`. It receives
            RGB images in `[0, 255]`, shape `(batch, H, W, 3)`.
        min_size: Smallest height/width the architecture accepts.
        native_size: Height/width the ImageNet weights were trained at.
        stage_patterns: `(regex, to_stage)` pairs for
            `tfkd.teachers.stage_rules.assign_stages`. Defaults to `()`, in
            which case every layer with weights is its own stage.

    Example:

    >>> spec = get_family("resnet50")
    >>> spec.min_size, spec.native_size
    (32, 224)
    """

    name: str
    constructor: Callable
    preprocess_input: Callable
    min_size: int
    native_size: int
    stage_patterns: Tuple = ()

    def stages_of(self, layer_names):
        """Returns the stage index of each layer name, or `None` if none match.

        Args:
            layer_names: Sequence of layer names in backbone order.

        Returns:
            A list of integers (one per name) or `None`.
        """
        if not self.stage_patterns:
            return None
        return stage_rules.assign_stages(layer_names, self.stage_patterns)


_A = keras.applications
_REGISTRY = {}


def normalize_name(name):
    """Normalizes a family name: lower case, without `_`, `-` and spaces.

    `"EfficientNetV2B0"`, `"efficientnet_v2_b0"` and `"efficientnetv2-b0"`
    (the Keras model name) all normalize to `"efficientnetv2b0"`.

    Args:
        name: A family name.

    Returns:
        The normalized string.

    Raises:
        TypeError: If `name` is not a string.

    Example:

    >>> normalize_name("MobileNet_V3-Small")
    'mobilenetv3small'
    """
    if not isinstance(name, str):
        raise TypeError(
            "Invalid type for argument `name`. Expected a string. "
            f"Received: name={name!r} of type {type(name).__name__}"
        )
    return "".join(ch for ch in name.lower() if ch not in "_- ")


def register_family(spec, overwrite=False):
    """Adds a family to the registry so `tfkd.teachers.build` can use it.

    Register before building *and* before loading a saved teacher of that
    family: the teacher's preprocessing layer looks the family up by name.

    Args:
        spec: A `FamilySpec`.
        overwrite: Whether to replace an existing entry of the same name.
            Defaults to `False`.

    Returns:
        The registered `FamilySpec` (its name normalized).

    Raises:
        TypeError: If `spec` is not a `FamilySpec`.
        ValueError: If the name is taken and `overwrite=False`, or the sizes are
            not positive integers with `min_size <= native_size`.

    Example:

    >>> import keras
    >>> spec = register_family(FamilySpec(
    ...     name="efficientnetb1",
    ...     constructor=keras.applications.EfficientNetB1,
    ...     preprocess_input=keras.applications.efficientnet.preprocess_input,
    ...     min_size=32, native_size=240,
    ...     stage_patterns=stage_rules.EFFICIENTNET_PATTERNS), overwrite=True)
    >>> "efficientnetb1" in list_families()
    True
    """
    if not isinstance(spec, FamilySpec):
        raise TypeError(
            "Invalid type for argument `spec`. Expected a "
            "`tfkd.teachers.FamilySpec`. "
            f"Received: spec={spec!r} of type {type(spec).__name__}"
        )
    for field in ("min_size", "native_size"):
        value = getattr(spec, field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"Invalid value for `spec.{field}`. Expected a positive "
                f"integer. Received: {field}={value!r}"
            )
    if spec.min_size > spec.native_size:
        raise ValueError(
            "Invalid value for argument `spec`. Expected "
            "`min_size <= native_size`. Received: "
            f"min_size={spec.min_size}, native_size={spec.native_size}"
        )
    name = normalize_name(spec.name)
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A teacher family named '{name}' is already registered. Pass "
            "`overwrite=True` to replace it. "
            f"Received: spec.name={spec.name!r}"
        )
    spec = dataclasses.replace(spec, name=name)
    _REGISTRY[name] = spec
    return spec


def list_families():
    """Returns the sorted names of all registered teacher families.

    Returns:
        A list of strings.

    Example:

    >>> "resnet50" in list_families()
    True
    """
    return sorted(_REGISTRY)


def get_family(name):
    """Returns the `FamilySpec` registered under `name`.

    Args:
        name: Family name, in any spelling `normalize_name` accepts.

    Returns:
        A `FamilySpec`.

    Raises:
        ValueError: If no such family is registered; the message lists the
            valid names and the closest match.

    Example:

    >>> get_family("ResNet50V2").name
    'resnet50v2'
    """
    key = normalize_name(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            "Invalid value for argument `family`. Expected one of "
            f"{list_families()}.{hint} Received: family={name!r}"
        )
    return _REGISTRY[key]


def _register_builtin(
    name, constructor, module, min_size, native_size, patterns
):
    register_family(
        FamilySpec(
            name=name,
            constructor=constructor,
            preprocess_input=module.preprocess_input,
            min_size=min_size,
            native_size=native_size,
            stage_patterns=patterns,
        )
    )


# Minimum sizes are those `keras.applications` enforces (`min_size` in each
# constructor); native sizes are the resolutions the ImageNet weights used.
_BUILTIN: Sequence = (
    ("mobilenetv2", _A.MobileNetV2, _A.mobilenet_v2, 32, 224,
     stage_rules.MOBILENET_V2_PATTERNS),
    ("mobilenetv3small", _A.MobileNetV3Small, _A.mobilenet_v3, 32, 224,
     stage_rules.MOBILENET_V3_SMALL_PATTERNS),
    ("mobilenetv3large", _A.MobileNetV3Large, _A.mobilenet_v3, 32, 224,
     stage_rules.MOBILENET_V3_LARGE_PATTERNS),
    ("efficientnetb0", _A.EfficientNetB0, _A.efficientnet, 32, 224,
     stage_rules.EFFICIENTNET_PATTERNS),
    ("efficientnetv2b0", _A.EfficientNetV2B0, _A.efficientnet_v2, 32, 224,
     stage_rules.EFFICIENTNET_PATTERNS),
    ("resnet50", _A.ResNet50, _A.resnet50, 32, 224,
     stage_rules.RESNET_PATTERNS),
    ("resnet50v2", _A.ResNet50V2, _A.resnet_v2, 32, 224,
     stage_rules.RESNET_PATTERNS),
    ("densenet121", _A.DenseNet121, _A.densenet, 32, 224,
     stage_rules.RESNET_PATTERNS),
    ("convnexttiny", _A.ConvNeXtTiny, _A.convnext, 32, 224,
     stage_rules.CONVNEXT_PATTERNS),
    ("inceptionv3", _A.InceptionV3, _A.inception_v3, 75, 299,
     stage_rules.INCEPTION_V3_PATTERNS),
)
for _entry in _BUILTIN:
    _register_builtin(*_entry)
del _entry

#: The families tfkd registers itself, in registration order (users may
#: register more with `register_family`).
BUILTIN_FAMILIES = tuple(entry[0] for entry in _BUILTIN)
