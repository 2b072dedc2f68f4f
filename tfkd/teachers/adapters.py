"""Turns any Keras classifier, e.g. an AutoKeras export, into a tfkd teacher.

A tfkd teacher is nothing more than a `keras.Model` that takes tfkd's images
(float32 in `[0, 1]`, shape `(H, W, C)`) and outputs logits. Models that end in
a softmax (every AutoKeras classifier does) must have it removed: distillation
softens logits with a temperature, which cannot be undone from probabilities
without loss of precision.

Using your own model:

```python
teacher = tfkd.teachers.as_teacher(my_model)  # strips a final softmax
history = tfkd.teachers.fine_tune(teacher, train_ds, val_ds, epochs=(0, 5),
                                  unfreeze="all")  # optional
```

Using an AutoKeras model: train it on tfkd's `[0, 1]` images so the export
takes the same inputs (AutoKeras keeps its own `Normalization` layer inside),
then export and adapt it:

```python
clf = autokeras.ImageClassifier(max_trials=3, overwrite=True)
# x_train: float32 in [0, 1], shape (N, 28, 28, 1), as tfkd.data yields.
clf.fit(x_train, y_train, epochs=5)
teacher = tfkd.teachers.as_teacher(clf.export_model())
teacher.save("teacher.keras")
# Loading later needs the AutoKeras layers registered: `import autokeras`.
```
"""

import keras

from tfkd import _keras_compat
from tfkd.utils import validation


def _is_softmax_layer(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation) == "softmax"
    return False


def _has_softmax_activation(layer):
    activation = getattr(layer, "activation", None)
    return (
        isinstance(layer, keras.layers.Dense)
        and activation is not None
        and keras.activations.serialize(activation) == "softmax"
    )


def _has_sigmoid_output(layer):
    activation = getattr(layer, "activation", None)
    return activation is not None and (
        keras.activations.serialize(activation) == "sigmoid"
    )


def as_teacher(model, name=None):
    """Returns a view of a Keras classifier that outputs logits.

    - A final `Softmax` layer or `Activation("softmax")` (AutoKeras's
      `ClassificationHead` ends in one) is dropped: the new model outputs its
      input.
    - A final `Dense(..., activation="softmax")` is replaced by the same
      `Dense` without activation, sharing the kernel and bias values.
    - A model already ending in logits is returned as a new model on the same
      layers.

    All other layers are shared with `model`, so training one trains the
    other. Subclassed models have no inspectable graph: they are returned
    unchanged and must already output logits.

    Args:
        model: A built functional or `Sequential` `keras.Model` with a single
            image input and a single `(batch, classes)` output.
        name: Name of the returned model. Defaults to `"<model.name>_logits"`.

    Returns:
        A `keras.Model` that outputs `(batch, classes)` logits.

    Raises:
        TypeError: If `model` is not a `keras.Model`.
        ValueError: If the model is unbuilt, has several inputs or outputs, an
            output that is not `(batch, classes)`, or ends in a sigmoid
            (binary/multi-label heads: convert to two-class logits yourself).

    Example:

    >>> import keras
    >>> probs = keras.Sequential([keras.Input((28, 28, 1)),
    ...     keras.layers.Flatten(), keras.layers.Dense(10),
    ...     keras.layers.Softmax()])
    >>> teacher = as_teacher(probs)
    >>> type(teacher.layers[-1]).__name__
    'Dense'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a `keras.Model`. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not model.built:
        raise validation.invalid_value(
            "model",
            "a built model (call it on a batch or give it an `Input`)",
            model.name,
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        # Subclassed model: nothing to inspect, trust the user.
        return model
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a single image input "
            f"and a single output. Received: {len(inputs)} inputs, "
            f"{len(outputs)} outputs"
        )
    if len(outputs[0].shape) != 2:
        raise ValueError(
            "Invalid value for argument `model`. Expected an output of shape "
            f"(batch, classes). Received: output shape {outputs[0].shape}"
        )
    output = outputs[0]
    # The layer that produced the output (for functional models this need not
    # be `model.layers[-1]`).
    last, _ = _keras_compat.producing_call(output)
    if _is_softmax_layer(last):
        output = last.input
    elif _has_softmax_activation(last):
        config = last.get_config()
        config.update(activation=None, name=f"{last.name}_logits")
        dense = keras.layers.Dense.from_config(config)
        output = dense(last.input)
        dense.set_weights(last.get_weights())
    elif _has_sigmoid_output(last):
        raise ValueError(
            "Invalid value for argument `model`: it ends in a sigmoid "
            "(binary or multi-label head), not softmax over classes. Teachers "
            "must output one logit per class. Received: last layer "
            f"{last.name!r}"
        )
    return keras.Model(inputs[0], output, name=name or f"{model.name}_logits")
