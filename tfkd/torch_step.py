"""The Distiller's training and evaluation steps on Keras's PyTorch backend.

Keras's torch trainer (`keras/src/backend/torch/trainer.py`) calls
`train_step(data)` eagerly and `test_step(data)` under `torch.no_grad()`.
Its own step runs the model, clears the gradients (`zero_grad`), calls
`loss.backward()` and hands the variables' `.grad` to
`optimizer.apply` without autograd. `TorchSteps` gives the Distiller that
step around the very code its TensorFlow step runs (`Distiller._batch`,
`_student_outputs`, `_loss_values`, `_update_metrics`, with the loss of
`tfkd.step_losses`):

1. The batch (label checks, augmentation, mixing, views) and the teacher
   run under `torch.no_grad()`, as they run outside the `GradientTape` on
   TensorFlow: the teacher's outputs are also `stop_gradient`-ed by the
   shared code, and no graph is kept for them.
2. The guard (`tfkd.torch_step_guard`) copies the float state the forward
   pass writes (BatchNorm statistics, CRD's memory), then the student runs
   and the loss is computed with autograd on; `backward` fills the
   gradients of the optimized variables, cleared first.
3. The guard looks at the loss, the gradients and the labels and calls
   the optimizer only for a good batch; a refused one writes the copied
   state back. The metrics follow, without autograd.

Evaluation is the shared `Distiller._evaluation_step`, which Keras's
trainer runs under `torch.no_grad()`.

The loss needs no division by a replica count: Keras's torch trainer runs
one process's step over its whole batch.

`jit_compile=True` is refused on PyTorch (`check_jit_compile`): Keras
maps it to `torch.compile`, but this step calls `backward` and decides in
Python, after a transfer to the host, whether the batch updates anything,
so `torch.compile` would break it into pieces and gain nothing (XLA, what
`jit_compile=True` means on TensorFlow and JAX, does not exist here).
"""

from tfkd.utils import validation


def check_jit_compile(jit_compile):
    """The `jit_compile` to compile with on the PyTorch backend.

    Args:
        jit_compile: The value given to `Distiller.compile`.

    Returns:
        `jit_compile`, unchanged (`False` or `"auto"`; Keras turns
        `"auto"` into `False` on PyTorch).

    Raises:
        ValueError: for `jit_compile=True`.

    Example:

    >>> check_jit_compile("auto")
    'auto'
    """
    if jit_compile is True:
        raise validation.invalid_value(
            "jit_compile",
            "False or 'auto' on the PyTorch backend: Keras compiles with "
            "torch.compile there, and the Distiller's PyTorch step (its "
            "`backward` and its guard's decision in Python) does not "
            "compile into one graph; XLA is TensorFlow's and JAX's",
            jit_compile,
        )
    return jit_compile


class TorchSteps:
    """A `keras.Model` mixin: the `Distiller`'s PyTorch steps.

    The Distiller's `train_step` calls `_torch_train_step` on the PyTorch
    backend; its `test_step` is the TensorFlow one, `_evaluation_step`
    (Keras's torch trainer runs it under `torch.no_grad()`). It needs the
    Distiller's step helpers and its guard (`_step_guard`, a
    `TorchStepGuard` on PyTorch).
    """

    def _torch_train_step(self, data):
        import torch  # the PyTorch backend's own dependency

        with torch.no_grad():
            batch = self._batch(data, training=True)
        guard = self._step_guard
        state = guard.capture([self.student, *self.extra_losses])
        variables = self._optimized_variables()
        # Keras's trainer calls `self.zero_grad()`; clearing exactly the
        # variables differentiated here also covers the terms' connectors.
        for variable in variables:
            variable.value.grad = None
        student = self._student_outputs(batch.inputs, training=True)
        loss_values = self._loss_values(batch, student)
        scaled = self.optimizer.scale_loss(loss_values.total)
        if scaled.requires_grad:  # False when nothing trainable is used
            scaled.backward()
        gradients = [variable.value.grad for variable in variables]
        with torch.no_grad():
            kept = guard.apply_gradients(
                self.optimizer, gradients, variables, loss_values.total,
                batch.label_report, state,
            )
            return self._update_metrics(
                batch, student[None].logits, loss_values, kept=kept
            )
