"""Tests of tfkd/torch_step.py: what the Distiller's PyTorch step accepts.

Its training runs through `tests/test_distiller_backends.py`; here, its
refusal of `jit_compile=True` (`torch.compile` on PyTorch), checked on every
backend as a function and through `Distiller.compile` on PyTorch.
"""

import keras
import pytest

import tfkd
from tfkd import torch_step


def _distiller():
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return tfkd.Distiller(teacher=teacher, student=student)


def test_jit_compile_true_is_refused_by_name():
    for value in (False, "auto"):
        assert torch_step.check_jit_compile(value) == value
    with pytest.raises(ValueError, match=r"`jit_compile`.*jit_compile=True"):
        torch_step.check_jit_compile(True)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="jit_compile=True means XLA off PyTorch, which the Distiller supports")
def test_the_distiller_refuses_jit_compile_on_torch_before_training():
    distiller = _distiller()
    with pytest.raises(ValueError, match=r"PyTorch backend"):
        distiller.compile(optimizer="sgd", jit_compile=True)
    distiller.compile(optimizer="sgd")  # "auto": Keras's False on PyTorch
    assert distiller.jit_compile is False
