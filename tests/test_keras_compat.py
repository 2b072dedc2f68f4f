"""tfkd._keras_compat: each wrapped Keras internal still does its job.

These run in both test environments (Keras 3.12 and the newest Keras), so
a Keras release that renames one of these internals fails here first.
"""

import keras
import numpy as np
import tensorflow as tf

from tfkd import _keras_compat

from conftest import two_replica_strategy


def test_single_process_strategies_are_not_multi_worker():
    assert not _keras_compat.in_multi_worker_mode()
    assert not _keras_compat.reduces_logs_across_workers()
    strategy = two_replica_strategy()
    assert not _keras_compat.in_multi_worker_mode(strategy)
    with strategy.scope():
        assert not _keras_compat.reduces_logs_across_workers()


def test_step_logs_are_unchanged_outside_multi_worker_training():
    logs = {"loss": tf.constant(1.5)}
    assert _keras_compat.step_logs(logs) is logs


class _Holder(keras.layers.Layer):
    """A custom layer that keeps another layer as an attribute."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(2, name="inner")

    def call(self, x):
        return self.inner(x)


def test_all_sublayers_reaches_layers_held_as_attributes():
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, _Holder(name="holder")(inputs), name="m")
    names = [layer.name for layer in _keras_compat.all_sublayers(model)]
    assert names[0] == "m"
    assert {"holder", "inner"} <= set(names)
    assert "inner" not in [layer.name for layer in model.layers]


def test_producing_call_names_the_layer_and_its_inputs():
    inputs = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="out")(hidden)
    operation, node = _keras_compat.producing_call(outputs)
    assert operation.name == "out"
    assert list(node.arguments.keras_tensors) == [hidden]
    assert _keras_compat.producing_call(np.zeros(3)) is None


def test_optimizer_variable_keys_identify_built_variables():
    known = keras.Variable(np.zeros(2, "float32"))
    other = keras.Variable(np.zeros(2, "float32"))
    optimizer = keras.optimizers.Adam()
    optimizer.build([known])
    assert _keras_compat.optimizer_knows(optimizer, known)
    assert not _keras_compat.optimizer_knows(optimizer, other)
    assert _keras_compat.optimizer_variable_key(
        optimizer, known
    ) != _keras_compat.optimizer_variable_key(optimizer, other)


def test_set_initial_epoch_makes_fit_resume_there():
    class ResumeAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _keras_compat.set_initial_epoch(self.model, 2)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    epochs_run = []
    history = model.fit(
        np.zeros((8, 3)), np.zeros((8, 1)), epochs=3, verbose=0,
        callbacks=[
            ResumeAtTwo(),
            keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch)
            ),
        ],
    )
    assert epochs_run == [2]
    assert len(history.history["loss"]) == 1


def test_mixup_mixes_images_and_label_rows_under_mixed_precision():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    layer = keras.layers.MixUp(alpha=1.0, seed=3)
    images = np.random.rand(4, 6, 6, 1).astype("float32")
    rows = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    mixed_images, mixed_rows = _keras_compat.mix_images_and_labels(
        layer, images, rows
    )
    assert tuple(mixed_images.shape) == images.shape
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.sum(mixed_rows, axis=-1)),
        np.ones(4), rtol=1e-2,
    )


class _RecordsCallShapes(_keras_compat.BuildsFromFirstReplica, keras.Model):
    """A subclassed model that notes the batch shapes it is called on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)
        self.shapes = []

    def call(self, inputs):
        self.shapes.append(tuple(inputs.shape))
        return self.dense(inputs)


def test_builds_from_first_replica_builds_from_one_replicas_slice():
    # A global batch of 7 splits 4 + 3 over two replicas; averaging the
    # replicas' slices, as Keras's own hook does, cannot combine them.
    strategy = two_replica_strategy()
    with strategy.scope():
        model = _RecordsCallShapes(name="recorder")
        model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((7, 3), "float32"), np.zeros((7, 2), "float32"))
    ).batch(7)
    model.fit(data, epochs=1, verbose=0)
    assert model.built
    # The symbolic build saw the first replica's 4 examples.
    assert model.shapes[0] == (4, 3)


def test_builds_from_first_replica_changes_nothing_without_a_strategy():
    model = _RecordsCallShapes(name="recorder")
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((8, 3), "float32"), np.zeros((8, 2), "float32"),
              batch_size=8, epochs=1, verbose=0)
    assert model.shapes[0] == (8, 3)


def test_loss_tracker_is_the_compiled_models_loss_metric():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    tracker = _keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    assert model.metrics[0] is tracker
    tracker.update_state(2.0)
    assert float(model.get_metrics_result()["loss"]) == 2.0
