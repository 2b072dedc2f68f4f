"""The benchmark's reference teacher and student CNNs.

Both take float32 images in [0, 1] and output logits. The teacher is a
VGG-style CNN of 1.7 M parameters at its default width (1.6 M in the
`quick` preset's cheaper-to-run configuration, width 16 with a 512-unit
head); the student keeps the same shape of network at a fraction of the
width, about 27 k parameters, so that the benchmark asks the question users ask: how much of
the teacher's accuracy does a ~60x smaller model keep?
"""

import keras


def teacher_cnn(
    input_shape, num_classes, width=32, dense_units=None, name="teacher_cnn"
):
    """A strong CNN teacher: 3 conv blocks and a wide dense head.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        width: Channels of the first block (doubled per block). Defaults
            to `32`.
        dense_units: Units of the dense head. Most parameters sit here and
            cost little compute, while the convolutions' cost grows with
            `width` squared. Defaults to `8 * width`.
        name: Model name. Defaults to `"teacher_cnn"`.

    Returns:
        A `keras.Model` that outputs logits.

    Example:

    >>> teacher_cnn((28, 28, 1), 10).count_params() > 1_000_000
    True
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(4 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(dense_units or 8 * width, activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)


def student_cnn(input_shape, num_classes, width=8, name="student_cnn"):
    """A small CNN student: 2 conv blocks and a narrow dense head.

    Args:
        input_shape: `(height, width, channels)`.
        num_classes: Number of classes.
        width: Channels of the first block (doubled in the second); the
            dense head has `4 * width` units. Defaults to `8`
            (about 27 k parameters on 28x28x1).
        name: Model name. Defaults to `"student_cnn"`.

    Returns:
        A `keras.Model` that outputs logits.

    Example:

    >>> student_cnn((28, 28, 1), 10).count_params() < 50_000
    True
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(4 * width, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=name)
