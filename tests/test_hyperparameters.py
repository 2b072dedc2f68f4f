"""Hyper-parameter ranges (`tfkd.hyperparameters`): refused where losses break."""

import keras
import numpy as np
import pytest

import tfkd
from conftest import value_and_gradient
from tfkd import hyperparameters
from tfkd import losses
from tfkd.terms import correlation
from tfkd.terms import decoupled
from tfkd.terms import transformed


def _dense():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _expect_value_error(function, argument, received):
    with pytest.raises(ValueError) as error:
        function()
    message = str(error.value)
    assert message.startswith(f"Invalid value for argument `{argument}`. Expected ")
    assert f"Received: {argument}={received}" in message


@pytest.mark.parametrize(
    "temperature, shown",
    [(1e-300, "1e-300"), (1e300, "1e+300"), (10**400, str(10**400)),
     (0.001, "0.001"), (1000.0, "1000.0"), (float("nan"), "nan")],
)
def test_distiller_refuses_temperatures_outside_the_range(temperature, shown):
    # 1e300 raised a raw OverflowError (T ** 2), 1e-300 trained to NaN.
    _expect_value_error(
        lambda: tfkd.Distiller(
            teacher=_dense(), student=_dense(), temperature=temperature
        ),
        "temperature",
        shown,
    )


def test_every_temperature_and_weight_is_checked():
    cases = [
        (lambda: tfkd.DIST(temperature=1e300), "temperature", "1e+300"),
        (lambda: tfkd.DIST(beta=1e7), "beta", "10000000.0"),
        (lambda: tfkd.DIST(gamma=float("inf")), "gamma", "inf"),
        (lambda: tfkd.WTTM(temperature=1e-300), "temperature", "1e-300"),
        (lambda: tfkd.WTTM(weight=1e7), "weight", "10000000.0"),
        (lambda: tfkd.DecoupledKD(temperature=1e-5), "temperature", "1e-05"),
        (lambda: tfkd.DecoupledKD(non_target_weight=1e9), "non_target_weight",
         "1000000000.0"),
        (lambda: tfkd.DecoupledKD(target_weight=-1.0), "target_weight", "-1.0"),
        (lambda: tfkd.CRD(num_data=8, contrast_temperature=1e-300),
         "contrast_temperature", "1e-300"),
        (lambda: tfkd.FitNetHint(weight=1e300), "weight", "1e+300"),
        (lambda: tfkd.AttentionTransfer("a", "b", p=0.5), "p", "0.5"),
        (lambda: tfkd.AttentionTransfer("a", "b", p=100), "p", "100"),
        (lambda: tfkd.RKDDistance(weight=2e6), "weight", "2000000.0"),
        (lambda: tfkd.SP(weight=1e7), "weight", "10000000.0"),
        (lambda: tfkd.KnowledgeDistillation(temperature=1e300), "temperature",
         "1e+300"),
        (lambda: losses.soft_target_loss(np.zeros((1, 2)), np.zeros((1, 2)), 1e300),
         "temperature", "1e+300"),
        (lambda: tfkd.Distiller(teacher=_dense(), student=_dense(), alpha=1.5),
         "alpha", "1.5"),
        (lambda: tfkd.Distiller(teacher=[_dense(), _dense()], student=_dense(),
                                teacher_weights=[1e308, 1e308]),
         "teacher_weights", "[1e+308, 1e+308]"),
        (lambda: tfkd.recipes.Recipe(name="r", temperature=1e300, alpha=0.5),
         "temperature", "1e+300"),
    ]
    for function, argument, received in cases:
        _expect_value_error(function, argument, received)


# -- gradients on every backend (their TensorFlow-tape originals are in
# tests/test_hyperparameters_tensorflow.py) -----------------------------------


@pytest.mark.parametrize("temperature", [hyperparameters.MIN_TEMPERATURE,
                                         hyperparameters.MAX_TEMPERATURE])
def test_the_accepted_extremes_give_finite_losses_and_gradients_on_every_backend(
    temperature,
):
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(64, 10)).astype("float32") * 30.0
    student = rng.normal(size=(64, 10)).astype("float32") * 30.0
    labels = np.arange(64) % 10

    def total(s):
        ops = keras.ops
        return (
            ops.mean(losses.soft_target_loss(teacher, s, temperature))
            + ops.mean(decoupled.decoupled_kd_loss(labels, s, teacher, temperature, 1e6, 1e6))
            + correlation.dist_loss(teacher, s, temperature, 1e6, 1e6)
            + 1e6 * ops.mean(transformed.wttm_per_example(teacher, s, temperature))
        )

    value, gradient = value_and_gradient(total, student)
    assert np.isfinite(value), temperature
    assert np.all(np.isfinite(gradient)), temperature


@pytest.mark.parametrize("p", hyperparameters.ATTENTION_EXPONENT_RANGE)
def test_attention_exponent_range_keeps_gradients_finite_on_every_backend(p):
    features = np.maximum(
        np.random.default_rng(0).normal(size=(2, 4, 4, 3)) * 1e3, 0.0
    ).astype("float32")  # ReLU-like: exact zeros, large values
    _, gradient = value_and_gradient(
        lambda f: tfkd.terms.features.attention_transfer_loss(f * 0.5, f, p), features
    )
    assert np.all(np.isfinite(gradient)), p
