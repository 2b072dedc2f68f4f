"""Builds a teacher: a `keras.applications` backbone adapted to the user's data.

The built model takes tfkd's standard input, float32 images in `[0, 1]` of
shape `(H, W, C)` with `C` in `{1, 3}`, and outputs logits. Inside, in order:

1. `GrayscaleToRGB` if `C == 1` (ImageNet backbones need 3 channels);
2. `Resizing` to the family's working size (see `resolve_image_size`);
3. `Rescaling(255)`: keras.applications preprocessing expects `[0, 255]`;
4. `ApplicationPreprocessing`: the family's own `preprocess_input`;
5. the backbone (layer name `"backbone"`). With pretrained weights it is
   wrapped in `InferenceMode` so its BatchNormalization layers stay in
   inference mode while frozen *and* after unfreezing, as the Keras
   transfer-learning guide intends: updating ImageNet statistics with a few
   small batches of a new domain wrecks the features. With `weights=None`
   there are no statistics to protect; they must be learned, and the
   builder lowers the backbone's BatchNorm momentum to
   `FROM_SCRATCH_BATCHNORM_MOMENTUM` so they are learned within an epoch;
6. a fresh head: global average pooling, dropout, `Dense(num_classes)` logits.
"""

import keras

from tfkd.utils import validation
from . import layer_groups as groups_lib
from . import layers as teacher_layers
from . import registry
from . import weights as weights_lib

#: BatchNorm momentum of a backbone built with `weights=None` (the default of
#: `build(batchnorm_momentum=None)`). keras.applications use 0.999
#: (MobileNetV2, MobileNetV3) or 0.99 (EfficientNetB*, ResNets, DenseNet,
#: InceptionV3): the moving statistics then need hundreds to thousands of
#: steps to catch up with weights being learned, so the validation accuracy
#: of a from-scratch teacher sits near chance for the first epochs of a small
#: dataset while its training accuracy rises. 0.9 (EfficientNetV2's own value)
#: lets them follow within an epoch.
FROM_SCRATCH_BATCHNORM_MOMENTUM = 0.9

# Constructor arguments the builder sets itself.
_RESERVED_BACKBONE_KWARGS = (
    "include_top", "weights", "input_shape", "input_tensor", "pooling",
    "classes", "classifier_activation",
)


def _validate_input_shape(input_shape):
    valid = (
        isinstance(input_shape, (tuple, list))
        and len(input_shape) == 3
        and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0
            for d in input_shape
        )
        and input_shape[-1] in (1, 3)
    )
    if not valid:
        raise validation.invalid_value(
            "input_shape",
            "a tuple (H, W, C) of positive integers with C = 1 (grayscale) "
            "or C = 3 (RGB)",
            input_shape,
        )
    return tuple(input_shape)


def resolve_image_size(spec, input_shape, image_size=None):
    """Returns the `(height, width)` the backbone runs at.

    Args:
        spec: A `tfkd.teachers.FamilySpec`.
        input_shape: `(H, W, C)` of the teacher's input.
        image_size: One of:
            - `None` or `"auto"`: the smallest size that is at least both the
              input and the family minimum, per side, i.e.
              `(max(H, min_size), max(W, min_size))`. It never throws away
              pixels and keeps CPU cost low: Fashion-MNIST's 28x28 becomes 32x32
              for most families and 75x75 for InceptionV3.
            - `"minimum"`: the family minimum (downscales larger inputs).
            - `"native"`: the resolution the ImageNet weights were trained at
              (224 for most families, 299 for InceptionV3). Most accurate with
              `weights="imagenet"`, and (224 / 32)^2 = 49 times the compute of
              32x32.
            - an int `n` for `(n, n)`, or a `(height, width)` tuple.
            Defaults to `None`.

    Returns:
        A `(height, width)` tuple of ints.

    Raises:
        ValueError: If `image_size` is malformed or below the family minimum.

    Example:

    >>> spec = registry.get_family("resnet50")
    >>> resolve_image_size(spec, (28, 28, 1))
    (32, 32)
    >>> resolve_image_size(spec, (28, 28, 1), "native")
    (224, 224)
    """
    height, width = input_shape[0], input_shape[1]
    if image_size is None or image_size == "auto":
        return (max(height, spec.min_size), max(width, spec.min_size))
    if image_size == "minimum":
        return (spec.min_size, spec.min_size)
    if image_size == "native":
        return (spec.native_size, spec.native_size)
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(
            isinstance(d, int) and not isinstance(d, bool) for d in image_size
        )
    ):
        size = tuple(image_size)
    else:
        raise validation.invalid_value(
            "image_size",
            "None, 'auto', 'minimum', 'native', an int or a (height, width) "
            "tuple",
            image_size,
        )
    if min(size) < spec.min_size:
        raise validation.invalid_value(
            "image_size",
            f"sides of at least {spec.min_size} (the minimum input size of "
            f"'{spec.name}')",
            image_size,
        )
    return size


def build(
    family,
    num_classes,
    input_shape,
    weights="imagenet",
    image_size=None,
    dropout=0.2,
    inference_mode=None,
    batchnorm_momentum=None,
    backbone_kwargs=None,
    name=None,
):
    """Builds a transfer-learning teacher from a `keras.applications` family.

    The result maps tfkd's images (float32 in `[0, 1]`, shape `(H, W, C)`) to
    logits, with all input adaptation inside the model (see the module
    docstring), so it saves to `.keras` and loads back with
    `keras.saving.load_model` once `tfkd.teachers` is imported. The backbone
    starts frozen; train it with `tfkd.teachers.fine_tune`.

    To use a model that was not built here (your own Keras model, an AutoKeras
    export) as a teacher, see `tfkd.teachers.as_teacher`.

    Args:
        family: A registered family name, e.g. `"efficientnetv2b0"`; spelling
            is forgiving (`"EfficientNetV2B0"`, `"efficientnet_v2_b0"`). See
            `tfkd.teachers.list_families()`.
        num_classes: Number of classes, an int >= 2.
        input_shape: `(H, W, C)` of the images the teacher will receive, with
            `C` = 1 (grayscale, repeated to RGB inside) or 3.
        weights: `"imagenet"` (downloaded and cached by Keras in
            `~/.keras/models`), `None` (random initialization) or the path of a
            local weights file of the backbone without its top (`.h5` such as
            Keras's `*_notop.h5`, `.weights.h5` or `.keras`). Defaults to
            `"imagenet"`.
        image_size: Size the backbone runs at; see `resolve_image_size`.
            Defaults to `None` (the smallest size the family accepts that does
            not shrink the input).
        dropout: Dropout rate before the logits, in `[0, 1)`. Defaults to `0.2`.
        inference_mode: Whether the backbone always runs in inference mode
            (BatchNorm on its stored statistics, its internal dropout off),
            even while the teacher trains. Defaults to `None`: `True` when
            weights are loaded (`"imagenet"` or a file), `False` for
            `weights=None`, where a random backbone's statistics must be
            learned (see "Training from scratch" in
            `tfkd.teachers.fine_tune`).
        batchnorm_momentum: Momentum of the moving statistics of every
            BatchNormalization layer in the backbone: a float in `[0, 1)`,
            `"family"` to keep the family's own values, or `None`. Defaults to
            `None`: `FROM_SCRATCH_BATCHNORM_MOMENTUM` (0.9) for
            `weights=None`, whose statistics start from nothing, and the
            family's own values when weights are loaded (their statistics are
            kept fixed anyway in inference mode).
        backbone_kwargs: Dict of extra arguments for the `keras.applications`
            constructor, e.g. `{"alpha": 0.75}` for MobileNets. Defaults to
            `None`.
        name: Name of the returned model. Defaults to `"<family>_teacher"`.

    Returns:
        A functional `keras.Model` with output `(batch, num_classes)` logits.
        Its backbone, `tfkd.teachers.find_backbone(teacher)` (the layer
        named `"backbone"`, or the model inside it), is frozen
        (`trainable=False`).

    Raises:
        ValueError: On an unknown family (the message lists the valid ones) or
            any invalid argument, before anything is built.
        RuntimeError: If `weights="imagenet"` and the download failed; the
            message says how to pass a local weights file instead.

    Example:

    >>> teacher = build("mobilenetv3small", num_classes=10,
    ...                 input_shape=(28, 28, 1), weights=None)
    >>> tuple(teacher.output.shape)
    (None, 10)
    """
    spec = registry.get_family(family)
    validation.check_int("num_classes", num_classes, minimum=2)
    input_shape = _validate_input_shape(input_shape)
    weights = weights_lib.validate_weights(weights)
    size = resolve_image_size(spec, input_shape, image_size)
    if inference_mode is None:
        inference_mode = weights is not None
    if not isinstance(inference_mode, bool):
        raise validation.invalid_value(
            "inference_mode",
            "None, True or False",
            inference_mode,
        )
    batchnorm_momentum = _validate_batchnorm_momentum(batchnorm_momentum)
    if batchnorm_momentum is None and weights is None:
        batchnorm_momentum = FROM_SCRATCH_BATCHNORM_MOMENTUM
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise validation.invalid_value(
            "dropout",
            "a float in [0, 1)",
            dropout,
        )
    backbone_kwargs = dict(backbone_kwargs or {})
    reserved = sorted(set(backbone_kwargs) & set(_RESERVED_BACKBONE_KWARGS))
    if reserved:
        raise ValueError(
            "Invalid value for argument `backbone_kwargs`. The builder sets "
            f"{reserved} itself. Received: backbone_kwargs={backbone_kwargs!r}"
        )
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "tfkd teachers require keras.config.image_data_format() == "
            "'channels_last' (images are (H, W, C)). Received: "
            f"{keras.config.image_data_format()!r}"
        )

    backbone = weights_lib.instantiate_backbone(
        spec, size + (3,), weights, **backbone_kwargs
    )
    if batchnorm_momentum is not None:
        _set_batchnorm_momentum(backbone, batchnorm_momentum)
    # Stage 1 of fine-tuning trains only the head.
    backbone.trainable = False

    inputs = keras.Input(shape=input_shape, name="images")  # [0, 1]
    x = inputs
    if input_shape[-1] == 1:
        x = teacher_layers.GrayscaleToRGB(name="grayscale_to_rgb")(x)
    if size != input_shape[:2]:
        x = keras.layers.Resizing(*size, interpolation="bilinear",
                                  name="resize")(x)
    x = keras.layers.Rescaling(255.0, name="to_0_255")(x)
    x = teacher_layers.ApplicationPreprocessing(
        spec.name, name=f"{spec.name}_preprocess"
    )(x)
    if inference_mode:
        # Not `backbone(x, training=False)`: Keras 3.12 overrides that flag
        # with the outer call's `training` (see `InferenceMode`).
        x = teacher_layers.InferenceMode(backbone, name="backbone")(x)
    else:
        backbone.name = "backbone"
        x = backbone(x)
    # x: (batch, h, w, features)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 logits also under a mixed-precision policy, for a stable softmax.
    outputs = keras.layers.Dense(num_classes, dtype="float32",
                                 name="logits")(x)  # (batch, num_classes)
    return keras.Model(inputs, outputs, name=name or f"{spec.name}_teacher")


def _validate_batchnorm_momentum(value):
    """Checks `batchnorm_momentum`; returns `None`, `"family"` or a float."""
    if value == "family":
        return "family"
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0 <= value < 1
    ):
        raise validation.invalid_value(
            "batchnorm_momentum",
            "None, 'family' or a float in [0, 1)",
            value,
        )
    return float(value)


def _set_batchnorm_momentum(backbone, momentum):
    """Sets the momentum of every BatchNormalization layer in `backbone`."""
    if momentum == "family":
        return
    for layer in groups_lib.all_sublayers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            # Read in `call` and saved by `get_config`, so a `.keras` file
            # keeps it.
            layer.momentum = momentum
