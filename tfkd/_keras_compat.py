"""Every place tfkd reaches into Keras internals, in one module.

Keras's public API does not cover a few things a distiller needs: averaging
step logs across worker processes, walking the graph of a functional model,
the optimizer's variable keys. Each function below wraps one private Keras
name, says why, which Keras issue (if any) it works around and the Keras
versions it is tested on (3.12 in the benchmark environment and 3.15, the
newest release, in the other: `make test` runs both). When a Keras release
changes one of these names, `tests/test_keras_compat.py` fails here first,
and only this module needs a change.
"""

import keras
from keras import ops

from tfkd import backend_support

tf = backend_support.lazy_tensorflow(
    "tf.distribute training (tfkd._keras_compat)",
    "keras.distribution (DataParallel) on JAX",
)

#: The Keras versions every workaround here is tested on (`make test`).
TESTED_KERAS_VERSIONS = ("3.12", "3.15")


def in_multi_worker_mode(strategy=None):
    """Whether `strategy` spans several worker processes.

    Keras asks `strategy.extended._in_multi_worker_mode()` itself (there is
    no public equivalent); a `MultiWorkerMirroredStrategy` with a single
    worker is not in multi-worker mode.

    Args:
        strategy: A `tf.distribute.Strategy`. Defaults to the current one.

    Returns:
        A bool.
    """
    strategy = strategy or tf.distribute.get_strategy()
    method = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return method is not None and bool(method())


def reduces_logs_across_workers():
    """Whether Keras averages each step's logs across worker processes."""
    if not backend_support.tensorflow_is_backend():
        return False  # `tf.distribute` only exists on TensorFlow
    strategy = tf.distribute.get_strategy()
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and in_multi_worker_mode(strategy)


def step_logs(logs):
    """The logs a train/test step returns, in a shape Keras can reduce.

    Works around keras-team/keras#20585 (Keras 3.12-3.15): under
    MultiWorkerMirroredStrategy Keras averages step outputs with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
    losses and metrics every step returns; one-element vectors average to
    the same scalar.

    Args:
        logs: Dict of scalar tensors, as `compute_metrics` returns.

    Returns:
        `logs`, or the same values as shape-`(1,)` tensors when Keras will
        reduce them across workers.
    """
    if not reduces_logs_across_workers():
        return logs
    return {
        name: keras.ops.reshape(value, (1,)) for name, value in logs.items()
    }


def first_replica_batch(model, iterator):
    """This worker's first replica's slice of the iterator's next batch.

    Works around keras-team/keras#20585 (Keras 3.12-3.15): a model created
    under a strategy is built from its first distributed batch, reduced to
    one tensor with `strategy.reduce`, which MultiWorkerMirroredStrategy
    cannot do for a nested batch. Building needs only shapes and dtypes, so
    one replica's slice serves as well. `BuildsFromFirstReplica` (an
    override of Keras's private build hook) calls this.

    Args:
        model: The `keras.Model` being built.
        iterator: Keras's epoch iterator, yielding
            `(step, steps, replica iterator)`.

    Returns:
        A nested batch of local tensors, or `None` if the iterator is empty.
    """
    strategy = model.distribute_strategy
    for _, _, replica_iterator in iterator:
        return tf.nest.map_structure(
            lambda value: strategy.experimental_local_results(value)[0],
            next(replica_iterator),
        )
    return None


class BuildsFromFirstReplica:
    """A `keras.Model` mixin: builds from one replica's batch (see below).

    Overrides `Model._maybe_symbolic_build`, Keras's private hook that
    builds a model from its first batch before `fit`/`evaluate`, to work
    around keras-team/keras#20585 (Keras 3.12-3.15): under a
    `tf.distribute` strategy the hook gets this worker's first replica's
    slice (`first_replica_batch`) instead of the distributed iterator.
    Without a strategy it changes nothing. Put it before `keras.Model`:
    `class Distiller(BuildsFromFirstReplica, keras.Model)`.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and uses_distribution(self):
            data_batch = first_replica_batch(self, iterator)
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )


def loss_tracker(model):
    """The `keras.metrics.Mean` that reports a compiled model's `loss`.

    Keras's trainer creates it in `compile` (`Model._loss_tracker`) and
    lists it first in `model.metrics`; a custom `train_step` that does not
    call `compute_loss` updates it itself (Keras 3.12-3.15 have no public
    name for it).

    Args:
        model: A compiled `keras.Model`.

    Returns:
        The tracker, or `None` before `compile`.
    """
    return getattr(model, "_loss_tracker", None)


def running_value(model, variable):
    """A metric variable's value now, also in the middle of a JAX `fit`.

    Keras's JAX trainer threads the state through its stateless steps and
    writes it back to the variables only at the end of an epoch or
    evaluation (`JAXTrainer.jax_state_sync`); in between it keeps the
    latest state in the private `model._jax_state` and empties the
    variables (`_purge_model_variables`). A callback that reads a metric
    variable after each batch reads it there (Keras 3.12-3.15). On other
    backends, or when the state was synced, the variable holds its value.

    Args:
        model: The `keras.Model` being trained or evaluated.
        variable: One of `model.metrics_variables`.

    Returns:
        The variable's current value (a backend tensor).
    """
    state = getattr(model, "_jax_state", None)
    if state and not getattr(model, "_jax_state_synced", True):
        values = state.get("metrics_variables")
        if values:
            for reference, value in zip(model.metrics_variables, values):
                if reference is variable:
                    return value
    return variable.value


def uses_distribution(model):
    """Whether `model` was created under a `tf.distribute` strategy."""
    return getattr(model, "_distribute_strategy", None) is not None


def all_sublayers(layer):
    """`layer` and every layer inside it, depth first, `layer` first.

    `Layer._flatten_layers` also reaches layers held as attributes of
    custom layers, which `Model.layers` does not list.

    Args:
        layer: A `keras.layers.Layer` (a model included).

    Returns:
        A list of layers.
    """
    return list(layer._flatten_layers(include_self=True, recursive=True))


def producing_call(tensor):
    """`(operation, node)` of the call that produced a symbolic tensor.

    Uses the tensor's `_keras_history` (Keras's record of the call that made
    it) and the operation's `_inbound_nodes`. `layer.output` is not enough:
    it is the layer's *first* call, and a Sequential model rebuilt layer by
    layer (as every loaded one is) keeps stale calls from earlier builds.

    Args:
        tensor: A `keras.KerasTensor`, or anything else.

    Returns:
        `(operation, node)`, or `None` when `tensor` has no history (an
        input, or not a symbolic tensor). `node.arguments.keras_tensors`
        are the tensors the call consumed.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    operation, node_index = history[0], history[1]
    return operation, operation._inbound_nodes[node_index]


def optimizer_variable_key(optimizer, variable):
    """The key `optimizer` stores `variable`'s slots under.

    Args:
        optimizer: A `keras.optimizers.Optimizer`.
        variable: A `keras.Variable`.

    Returns:
        A hashable key, stable for the variable's lifetime.
    """
    return optimizer._var_key(variable)


def optimizer_knows(optimizer, variable):
    """Whether a built `optimizer` has slots for `variable`."""
    return (
        optimizer._var_key(variable)
        in optimizer._trainable_variables_indices
    )


def set_initial_epoch(model, epoch):
    """Tells a running `fit` to resume at `epoch`.

    This is how `keras.callbacks.BackupAndRestore` itself resumes: `fit`
    reads `model._initial_epoch` after the callbacks' `on_train_begin`.

    Args:
        model: The model being fitted.
        epoch: The epoch index to resume at.
    """
    model._initial_epoch = epoch


def mix_images_and_labels(mixing, images, rows):
    """Mixed `(images, rows)` with one transformation of `mixing`.

    Keras's image preprocessing layers (MixUp, CutMix) are driven through
    their public `get_random_transformation`/`transform_images`/
    `transform_labels` methods rather than their `{"images", "labels"}`
    call: under a mixed-precision policy that call casts the labels to
    float16/bfloat16 and MixUp then multiplies them by float32 weights,
    which fails (Keras 3.12-3.15). The rows are given the dtype of the
    transformation's `mix_weight` (float32 for MixUp, the compute dtype for
    CutMix). Other layers get the `{"images", "labels"}` call.

    Args:
        mixing: A batch-mixing layer (`keras.layers.MixUp`, `CutMix`, ...).
        images: A batch of images.
        rows: The batch's one-hot (or zero) label rows, `(batch, classes)`.

    Returns:
        `(mixed images, mixed rows)`.
    """
    if not (
        hasattr(mixing, "get_random_transformation")
        and hasattr(mixing, "transform_labels")
    ):
        mixed = mixing({"images": images, "labels": rows}, training=True)
        return mixed["images"], mixed["labels"]
    transformation = mixing.get_random_transformation(images, training=True)
    weight = None
    if isinstance(transformation, dict):
        weight = transformation.get("mix_weight")
    dtype = mixing.compute_dtype if weight is None else weight.dtype
    mixed_images = mixing.transform_images(
        images, transformation=transformation, training=True
    )
    mixed_rows = mixing.transform_labels(
        ops.cast(rows, dtype), transformation=transformation, training=True
    )
    return mixed_images, mixed_rows
