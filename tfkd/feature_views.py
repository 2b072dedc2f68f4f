"""Multi-output views: a model's logits and named layers from one call.

Feature distillation needs intermediate activations. Calling the model for
its logits and then a feature extractor for its layers runs the network
twice per step (what `keras.distillation.FeatureDistillation` does for the
student); a `FeatureView` builds, once, a functional model over the same
layers and weights whose outputs are `[model output, *chosen layers]`, so
each step runs each network exactly once. The view shares every variable
with the model: training through it trains the model, and saving the model
saves nothing of the view.

This needs symbolic tensors to wire the view: a functional model or a
`keras.Sequential` that starts with `keras.Input`. A subclassed model has
no symbolic outputs, and asking for its layers is an error that says so.
"""

import keras

from tfkd import _keras_compat
from tfkd.utils import validation


def _symbolic_endpoints(model, role, requested_by):
    """The model's symbolic `(inputs, output)`, or a ValueError naming the fix."""
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, ValueError, TypeError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ValueError(
            f"Invalid value for argument `{role}`. Feature distillation "
            f"({requested_by}) reads intermediate layers, which needs a "
            "model with symbolic inputs and outputs so that tfkd can build "
            "one multi-output view of it and run it once per step. "
            f"Received: {role} {model.name!r} ({type(model).__name__}), a "
            "subclassed or unbuilt model without symbolic outputs. Fix: "
            "build it with the functional API or as keras.Sequential("
            "[keras.Input(shape), ...]) (the same layers and weights work), "
            "or distil logits only (teacher_layer=None, student_layer=None, "
            "or no extra_losses)."
        )
    if len(outputs) != 1:
        raise ValueError(
            f"Invalid value for argument `{role}`. Expected a model with one "
            f"output (its logits). Received: {role} {model.name!r} with "
            f"{len(outputs)} outputs"
        )
    return (inputs[0] if len(inputs) == 1 else inputs), outputs[0]


def _nodes_by_layer(output):
    """`{id(layer): [its call nodes]}` on the graph that computes `output`.

    Walks back from the model's current output through each symbolic
    tensor's producing call (`_keras_compat.producing_call`). `layer.output`
    is not enough: it is the layer's *first* call, and a Sequential model
    rebuilt layer by layer (as every loaded one is) keeps stale calls from
    earlier builds. A view wired to those would run parts of the network
    twice.
    """
    nodes = {}
    seen = set()
    stack = [output]
    while stack:
        call = _keras_compat.producing_call(stack.pop())
        if call is None:
            continue
        operation, node = call
        if (id(operation), id(node)) in seen:
            continue
        seen.add((id(operation), id(node)))
        nodes.setdefault(id(operation), []).append(node)
        stack.extend(node.arguments.keras_tensors)
    return nodes


def _layer_output(model, name, role, nodes):
    argument = f"{role}_layer"
    try:
        layer = model.get_layer(name)
    except ValueError:
        available = [layer.name for layer in model.layers]
        raise validation.invalid_value(
            argument,
            f"the name of a layer of the {role} {model.name!r} (one of "
            f"{available}; layers of a nested model are not reachable, "
            "build the outer model on its layers instead)",
            name,
        ) from None
    calls = nodes.get(id(layer), [])
    # A layer called several times (shared weights) has one output per
    # call: which one is meant is ambiguous, so it is refused, as is a
    # layer that does not lead to the model's output.
    if len(calls) != 1 or len(calls[0].outputs) != 1:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a layer "
            f"called once on the way from the {role} {model.name!r}'s "
            "inputs to its output, with one output tensor. Received: "
            f"{argument}={name!r}, called {len(calls)} times"
        )
    return calls[0].outputs[0]


class FeatureView:
    """A model's output and the outputs of chosen layers, in one call.

    With no layer names the view is the model itself (called directly, so
    logit-only distillation is exactly what it was). Otherwise it wraps a
    functional `keras.Model` built once over the model's own layers.

    Not a Keras object on purpose: a `Distiller` holds its views without
    tracking or saving them (their weights are the models' weights).

    Args:
        model: A `keras.Model`.
        layer_names: Names of the layers to expose; `None` entries (the
            logits) and repeats are ignored.
        role: `"student"` or `"teacher"`, used in error messages.
        requested_by: Who asks for the layers (for error messages).
            Defaults to `"extra_losses"`.

    Raises:
        ValueError: for a subclassed or unbuilt model, a model with several
            outputs, an unknown layer name or a layer called more than once.

    Example:

    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(8, name="hidden"),
    ...                           keras.layers.Dense(3)])
    >>> view = FeatureView(model, ["hidden"], role="student")
    >>> logits, features = view(np.ones((2, 4), "float32"), training=False)
    >>> tuple(logits.shape), tuple(features["hidden"].shape)
    ((2, 3), (2, 8))
    """

    def __init__(self, model, layer_names, role, requested_by="extra_losses"):
        self.model = model
        names = []
        for name in layer_names:
            if name is not None and name not in names:
                names.append(name)
        self.layer_names = tuple(names)
        self._shapes = {}
        self._view = None
        if not names:
            return
        inputs, output = _symbolic_endpoints(model, role, requested_by)
        nodes = _nodes_by_layer(output)
        features = [_layer_output(model, name, role, nodes) for name in names]
        self._shapes = {None: tuple(output.shape)}
        self._shapes.update(
            {name: tuple(tensor.shape) for name, tensor in zip(names, features)}
        )
        self._view = keras.Model(
            inputs=inputs,
            outputs=[output, *features],
            name=f"{model.name}_feature_view",
        )

    @property
    def is_multi_output(self):
        """Whether calls go through a multi-output view (layers requested)."""
        return self._view is not None

    def feature_shape(self, name):
        """Static shape `(None, ...)` of layer `name` (`None`: the output).

        Returns `None` when no view was built and `name` is `None` (the
        output shape of a subclassed model is not known statically).
        """
        if name is None and self._view is None:
            try:
                return tuple(self.model.outputs[0].shape)
            except (AttributeError, ValueError, TypeError, IndexError):
                return None
        return self._shapes[name]

    def __call__(self, x, training=False):
        """Runs the model once.

        Args:
            x: A batch of inputs.
            training: Passed to the model. Defaults to `False`.

        Returns:
            A tuple `(output, features)`: the model's output and a dict
            from layer name to that layer's output on `x`.
        """
        if self._view is None:
            return self.model(x, training=training), {}
        outputs = self._view(x, training=training)
        return outputs[0], dict(zip(self.layer_names, outputs[1:]))

    @property
    def inference_model(self):
        """The `keras.Model` whose outputs are `[output, *layers]`.

        The model itself when no layer is requested. For computing outputs
        ahead of training with a traced function of one's own
        (`tfkd.Distiller.precompute_targets`); `named_outputs` reads what
        it returns.
        """
        return self.model if self._view is None else self._view

    def named_outputs(self, outputs):
        """`(output, features)` from the outputs of `inference_model`.

        Args:
            outputs: What `inference_model` returned for a batch.

        Returns:
            A tuple: the model's output and a dict from layer name to that
            layer's output.
        """
        if self._view is None:
            return outputs, {}
        return outputs[0], dict(zip(self.layer_names, outputs[1:]))
