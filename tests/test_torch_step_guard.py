"""Tests of tfkd/torch_step_guard.py: the PyTorch step's guard, step by step.

The guard is eager Python over `keras.ops`, so these run on every backend
(`conftest.BACKEND_INDEPENDENT_FILES`); the Distiller's step uses it on
PyTorch (`tfkd.torch_step`), where `tests/test_distiller_backends.py` trains
through it.
"""

import keras
import numpy as np
import pytest

from tfkd import step_guard
from tfkd import torch_step_guard


def _setup(mode, optimizer=None):
    """`(guard, optimizer, [weight], [moving statistic], state)`."""
    guard = torch_step_guard.TorchStepGuard(mode)
    weight = keras.Variable(np.ones(3, "float32"), name="w")
    layer = keras.layers.BatchNormalization()
    layer.build((None, 3))
    optimizer = optimizer or keras.optimizers.SGD(0.5)
    optimizer.build([weight])
    state = guard.capture([layer])
    return guard, optimizer, weight, layer, state


def _step(guard, optimizer, weight, state, loss=1.0, gradient=1.0, labels=None):
    """One guarded update of `weight` by `gradient`; returns `kept`."""
    report = None
    if labels is not None:
        _, report = guard.check_labels(np.asarray(labels), 3)
    gradients = [keras.ops.full((3,), gradient, "float32")]
    kept = guard.apply_gradients(
        optimizer, gradients, [weight], keras.ops.convert_to_tensor(loss),
        report, state,
    )
    return float(kept)


def test_a_good_batch_updates_and_a_non_finite_one_does_not():
    guard, optimizer, weight, layer, state = _setup("raise")

    assert _step(guard, optimizer, weight, state) == 1.0
    np.testing.assert_allclose(weight.numpy(), 0.5)
    guard.raise_if_refused("epoch 1")  # nothing to raise
    # The forward pass moved the statistics; the guard writes them back.
    layer.moving_mean.assign(np.full(3, 7.0, "float32"))
    assert _step(guard, optimizer, weight, state, loss=float("nan")) == 0.0

    np.testing.assert_allclose(weight.numpy(), 0.5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.0)
    assert int(optimizer.iterations.numpy()) == 1
    with pytest.raises(step_guard.NonFiniteLossError,
                       match="Non-finite loss in epoch 1, batch 2 "):
        guard.raise_if_refused("epoch 1")


def test_with_raise_nothing_updates_after_a_refused_batch():
    guard, optimizer, weight, _, state = _setup("raise")
    _step(guard, optimizer, weight, state, gradient=float("inf"))

    assert _step(guard, optimizer, weight, state) == 0.0

    np.testing.assert_allclose(weight.numpy(), 1.0)
    with pytest.raises(step_guard.NonFiniteLossError,
                       match="Non-finite gradient in epoch 2, batch 1 "):
        guard.raise_if_refused("epoch 2")
    guard.reset_epoch()
    guard.raise_if_refused("epoch 3")  # a new epoch starts clean


def test_skip_counts_refused_batches_and_goes_on():
    guard, optimizer, weight, _, state = _setup("skip")

    _step(guard, optimizer, weight, state, loss=float("inf"))
    _step(guard, optimizer, weight, state, labels=[0, 3, -1])
    assert _step(guard, optimizer, weight, state, labels=[0, 2, -1]) == 1.0

    np.testing.assert_allclose(weight.numpy(), 0.5)
    assert float(guard.logs()[step_guard.SKIPPED_LOG_KEY]) == 2.0
    guard.raise_if_refused("epoch 1")  # skip never raises


def test_bad_labels_are_named_in_training_and_evaluation():
    guard, optimizer, weight, _, state = _setup("raise")
    safe, report = guard.check_labels(np.array([0, 5, 1.5]), 3)
    assert keras.ops.convert_to_numpy(safe).tolist() == [0.0, -1.0, -1.0]

    _step(guard, optimizer, weight, state, labels=[2, 9, 0])
    with pytest.raises(step_guard.InvalidLabelsError,
                       match=r"batch 1 .*\[0, 2\].*label of 9"):
        guard.raise_if_refused("epoch 1")
    guard.record_evaluation(report)
    with pytest.raises(step_guard.InvalidLabelsError, match="batch 1 .*label of 5"):
        guard.raise_if_bad_evaluation("the evaluation data")


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="Keras's LossScaleOptimizer applies inside a traced step on JAX",
)
def test_a_loss_scale_optimizer_keeps_its_own_gradient_checks():
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.5))
    guard, optimizer, weight, _, state = _setup("raise", optimizer)

    # An overflowing scaled gradient is the optimizer's to skip.
    assert _step(guard, optimizer, weight, state, gradient=float("inf")) == 1.0
    np.testing.assert_allclose(weight.numpy(), 1.0)
    guard.raise_if_refused("epoch 1")


def test_ignore_checks_nothing():
    guard, optimizer, weight, _, state = _setup("ignore")

    assert state is None
    assert guard.check_labels(np.array([9]), 3)[1] is None
    assert _step(guard, optimizer, weight, state, loss=float("nan")) == 1.0
    np.testing.assert_allclose(weight.numpy(), 0.5)
