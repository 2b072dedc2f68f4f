"""Tests for tfkd/teachers/discriminative.py."""


import keras
import numpy as np
import pytest

import conftest
from tfkd.teachers import DiscriminativeOptimizer
from tfkd.teachers import SlantedTriangularLR

FACTOR = 2.6


def _mlp():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, activation="tanh", name="deep")(inputs)
    x = keras.layers.Dense(6, activation="tanh", name="middle")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def _groups(model):
    return [[model.get_layer("head")], [model.get_layer("middle")],
            [model.get_layer("deep")]]


def _data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(32, 5)).astype("float32"),
            rng.normal(size=(32, 3)).astype("float32"))


def _one_fit_step(model, optimizer):
    """One real `model.fit` step (traced train function); returns |delta w|."""
    model.compile(optimizer=optimizer, loss="mse")
    before = {layer.name: [w.copy() for w in layer.get_weights()]
              for layer in model.layers if layer.weights}
    x, y = _data()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return {
        name: np.concatenate([
            np.abs(after - old).ravel()
            for after, old in zip(model.get_layer(name).get_weights(), weights)
        ])
        for name, weights in before.items()
    }


def test_one_adam_step_sizes_differ_by_the_factor():
    model = _mlp()
    lr = 1e-2
    deltas = _one_fit_step(
        model, DiscriminativeOptimizer(keras.optimizers.Adam(lr),
                                       _groups(model), factor=FACTOR))
    # Adam's first step is lr * g / (|g| + eps) ~ lr per element, so each
    # group moves by its own rate: lr, lr / 2.6, lr / 2.6**2.
    for depth, name in enumerate(["head", "middle", "deep"]):
        np.testing.assert_allclose(
            np.median(deltas[name]), lr / FACTOR**depth, rtol=1e-3)
    ratio_01 = np.median(deltas["head"]) / np.median(deltas["middle"])
    ratio_12 = np.median(deltas["middle"]) / np.median(deltas["deep"])
    np.testing.assert_allclose([ratio_01, ratio_12], [FACTOR, FACTOR],
                               rtol=1e-3)


def test_scaling_gradients_would_not_change_adams_step():
    # Why per-group optimizers: Adam normalizes the gradient away.
    a = keras.Variable(np.zeros(4, "float32"))
    b = keras.Variable(np.zeros(4, "float32"))
    gradient = np.array([0.3, -1.2, 2.0, -0.05], "float32")
    keras.optimizers.Adam(1e-2).apply(
        [gradient, gradient / FACTOR], [a, b])
    # Equal up to the epsilon in the denominator.
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3)


def test_factor_one_equals_a_plain_optimizer():
    model = _mlp()
    grouped = _one_fit_step(
        model, DiscriminativeOptimizer(keras.optimizers.Adam(1e-2),
                                       _groups(model), factor=1.0))
    plain_model = _mlp()
    plain = _one_fit_step(plain_model, keras.optimizers.Adam(1e-2))
    for name in grouped:
        np.testing.assert_allclose(grouped[name], plain[name], rtol=1e-4,
                                   atol=1e-7)


def test_variables_outside_groups_train_at_the_head_rate():
    model = _mlp()
    deltas = _one_fit_step(
        model, DiscriminativeOptimizer(
            keras.optimizers.Adam(1e-2),
            [[model.get_layer("head")], [model.get_layer("middle")]],
            factor=FACTOR))
    np.testing.assert_allclose(np.median(deltas["deep"]), 1e-2, rtol=1e-3)


def test_schedule_is_stepped_by_the_global_iterations():
    model = _mlp()
    schedule = SlantedTriangularLR(1e-2, total_steps=10, cut_frac=0.5)
    optimizer = DiscriminativeOptimizer(keras.optimizers.Adam(schedule),
                                        _groups(model), factor=FACTOR)
    model.compile(optimizer=optimizer, loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert int(optimizer.iterations) == 4
    rates = [float(rate) for rate in optimizer.group_learning_rates]
    expected = float(schedule(4))
    np.testing.assert_allclose(
        rates, [expected, expected / FACTOR, expected / FACTOR**2], rtol=1e-6)


def test_config_round_trip_resolves_groups_by_variable_path():
    model = _mlp()
    optimizer = DiscriminativeOptimizer(keras.optimizers.Adam(1e-2),
                                        _groups(model), factor=FACTOR)
    config = optimizer.get_config()
    assert config["factor"] == FACTOR
    assert config["groups"][0] == ["head/kernel", "head/bias"]
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    assert isinstance(restored, DiscriminativeOptimizer)
    assert restored.get_config() == config
    deltas = _one_fit_step(model, restored)  # groups from paths only
    np.testing.assert_allclose(
        np.median(deltas["head"]) / np.median(deltas["deep"]), FACTOR**2,
        rtol=1e-3)


def test_saved_model_restores_optimizer_state(tmp_path):
    model = _mlp()
    optimizer = DiscriminativeOptimizer(keras.optimizers.Adam(1e-2),
                                        _groups(model), factor=FACTOR)
    _one_fit_step(model, optimizer)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.optimizer, DiscriminativeOptimizer)
    assert len(restored.optimizer.variables) == len(optimizer.variables)
    for a, b in zip(restored.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_variable_unfrozen_inside_a_built_group_is_rejected():
    model = _mlp()
    model.get_layer("head").trainable = True
    optimizer = DiscriminativeOptimizer(
        "adam", [[model.get_layer("head"), model.get_layer("middle")]])
    optimizer.build(model.get_layer("head").trainable_weights)
    with pytest.raises(ValueError, match="Unfreeze whole groups"):
        optimizer.build(model.trainable_weights)


_assert_each_rejected = conftest.assert_each_rejected

def test_invalid_arguments():
    _assert_each_rejected(
        DiscriminativeOptimizer,
        dict(optimizer="adam", groups=[["head/kernel"]]),
        [
            ({"factor": 0}, "factor"),
            ({"factor": True}, "factor"),
            ({"groups": []}, "groups"),
            ({"groups": [[1.5]]}, "groups"),
            ({"optimizer": keras.optimizers.Adam(
                gradient_accumulation_steps=2)},
             "gradient_accumulation_steps"),
            ({"optimizer": keras.optimizers.LossScaleOptimizer(
                keras.optimizers.Adam())}, "plain Keras optimizer"),
            ({"clipnorm": 1.0}, "set them on the wrapped"),
        ],
        errors=(ValueError, TypeError),
    )
