"""Serializable input-adaptation layers used inside built teachers.

They replace the `Lambda` layers of most transfer-learning recipes: a `Lambda`
stores Python bytecode in the `.keras` file and refuses to load it in safe mode,
while these layers store only their arguments.
"""

import keras
from keras import ops

from . import registry


@keras.saving.register_keras_serializable(package="tfkd")
class GrayscaleToRGB(keras.layers.Layer):
    """Repeats a single-channel image three times to feed an RGB backbone.

    ImageNet backbones expect 3 channels; repeating the gray value gives the
    colour image with the same luminance, which is what their first filters
    respond to.

    Args:
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import numpy as np
    >>> layer = GrayscaleToRGB()
    >>> tuple(layer(np.zeros((2, 28, 28, 1), "float32")).shape)
    (2, 28, 28, 3)
    """

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(
                "Invalid input shape for `GrayscaleToRGB`. Expected 1 channel "
                f"in the last axis. Received: input_shape={input_shape}"
            )
        self.built = True

    def call(self, inputs):
        # (batch, H, W, 1) -> (batch, H, W, 3)
        return ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (3,)


@keras.saving.register_keras_serializable(package="tfkd")
class ApplicationPreprocessing(keras.layers.Layer):
    """Applies a registered family's own `preprocess_input` inside the model.

    Putting the family's preprocessing in the graph means a saved teacher takes
    the same inputs as every other tfkd model and cannot be fed unnormalized
    images by mistake. Families whose `keras.applications` models normalize
    internally (EfficientNet, MobileNetV3, ConvNeXt) have an identity
    `preprocess_input`; the layer is then a no-op, kept so every teacher has the
    same structure.

    Args:
        family: Name of a registered family (see
            `tfkd.teachers.list_families()`).
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Inputs: RGB images in `[0, 255]`, shape `(batch, H, W, 3)`.

    Returns:
        The images as the family's backbone expects them, same shape.

    Raises:
        ValueError: If `family` is not registered.

    Example:

    >>> import numpy as np
    >>> layer = ApplicationPreprocessing("resnet50v2")
    >>> float(layer(np.full((1, 2, 2, 3), 255.0, "float32"))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, family, **kwargs):
        super().__init__(**kwargs)
        # Validates early and stores the canonical spelling in the config.
        self.family = registry.get_family(family).name

    def call(self, inputs):
        preprocess_input = registry.get_family(self.family).preprocess_input
        return preprocess_input(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"family": self.family})
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class InferenceMode(keras.layers.Wrapper):
    """Always calls the wrapped layer (a backbone) with `training=False`.

    Keeps a pretrained backbone's BatchNormalization layers on their ImageNet
    statistics and its internal dropout off, even after it is unfrozen and
    while the rest of the model trains, as the Keras transfer-learning guide
    intends. The guide's recipe, `x = backbone(x, training=False)` inside a
    functional model, does not do this in Keras 3.12: the functional model
    replaces the recorded `training=False` with the outer call's `training`
    (fixed upstream in keras-team/keras#23364). A wrapper whose `call` passes
    `training=False` itself works in every version.

    Args:
        layer: The layer to wrap, typically a `keras.applications` model.
        **kwargs: Standard `keras.layers.Layer` arguments (`name`, `dtype`).

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((4,))
    >>> inner = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    >>> outer_inputs = keras.Input((4,))
    >>> outer = keras.Model(outer_inputs, InferenceMode(inner)(outer_inputs))
    >>> _ = outer(np.full((8, 4), 5.0, "float32"), training=True)
    >>> float(inner.layers[-1].moving_mean.numpy().max())
    0.0
    """

    def call(self, inputs, training=None):
        # `training` is accepted so Keras passes it here instead of guessing,
        # and deliberately ignored.
        del training
        return self.layer(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
