"""The training step's guard on Keras's PyTorch backend (`tfkd.step_guard`'s twin).

The contract is `tfkd.step_guard`'s: a batch whose loss or gradients are
not finite, or whose sparse labels are bad, updates nothing, and
`Distiller(on_nonfinite=...)` decides what follows ("raise": `fit` stops
with an error naming the epoch and the batch; "skip": such batches are
counted as `nonfinite_batches`; "ignore": no guard). Only the mechanics
differ, because PyTorch's step runs eagerly (`tfkd.torch_step`):

- The decision is Python's: after `backward`, the guard reads whether the
  loss, the gradients and the labels are fine (one transfer to the host
  per step) and either calls the optimizer or does not. There is no
  `cond` and no update to undo: the weights, the optimizer's slots and
  its iteration count are untouched by a refused batch.
- The forward pass writes its state before the loss is known (BatchNorm's
  moving statistics, CRD's memory), so `capture` copies the float
  non-trainable variables of the student and of the terms beforehand, and
  a refused batch writes them back. Integer state, the seed generators of
  random layers, moves on as on TensorFlow. The frozen teacher is never
  written, so it is never copied.
- The counters are plain Python numbers: they are the state of the
  current `fit`, read by `GuardCallback` (`tfkd.step_guard`) after each
  step, and never saved.
"""

import keras
from keras import ops

from tfkd import step_guard


class TorchStepGuard(step_guard.KerasOpsLabelCheck):
    """The guard's state and checks for one `Distiller` on PyTorch.

    Offers `tfkd.step_guard.StepGuard`'s interface (`check_labels`,
    `capture`, `apply_gradients`, `record_evaluation`, `logs`,
    `reset_epoch`, `reset_evaluation`, `raise_if_refused`,
    `raise_if_bad_evaluation`), run eagerly.

    Args:
        on_nonfinite: One of `tfkd.step_guard.ON_NONFINITE_CHOICES`.

    Example:

    >>> guard = TorchStepGuard("skip")
    >>> guard.active, guard.metrics, float(guard.logs()["nonfinite_batches"])
    (True, [], 0.0)
    >>> guard.raise_if_refused("epoch 1")  # nothing refused yet
    """

    #: The callback reads Python numbers the step wrote before it
    #: returned; it runs on the training thread all the same.
    async_safe = False

    def __init__(self, on_nonfinite):
        self.mode = on_nonfinite
        self.num_classes = None
        self.reset_epoch()
        self.reset_evaluation()

    @property
    def active(self):
        """Whether the guard checks anything (`on_nonfinite != "ignore"`)."""
        return self.mode != "ignore"

    @property
    def metrics(self):
        """Metrics the model lists for the guard: none (Python numbers)."""
        return []

    # -- in the step -----------------------------------------------------

    def capture(self, models):
        """`(variables, copies)`: the float state the forward pass may write.

        Args:
            models: The layers whose non-trainable float variables a
                refused batch restores (the student, the terms).

        Returns:
            The variables and copies of their values now, or `None` when
            the guard is off.
        """
        if not self.active:
            return None
        variables = [
            variable
            for model in models
            for variable in model.non_trainable_variables
            if "float" in str(variable.dtype)
        ]
        return variables, [ops.copy(variable.value) for variable in variables]

    def apply_gradients(
        self, optimizer, gradients, variables, loss, label_report, state
    ):
        """Applies `gradients` unless the batch is refused; returns 1.0 or 0.0.

        Run without autograd (`torch.no_grad`), as Keras's torch trainer
        runs its optimizer.

        Args:
            optimizer: The Distiller's optimizer.
            gradients: The (scaled) gradients of `variables`, `None` for an
                unused variable.
            variables: The optimized variables.
            loss: The unscaled float32 total loss.
            label_report: What `check_labels` returned, or `None`.
            state: What `capture` returned.

        Returns:
            A float32 scalar tensor, 1.0 when the batch updated the weights
            (and counts in the metrics), else 0.0.
        """
        if not self.active:
            optimizer.apply(gradients, variables)
            return ops.ones((), "float32")
        self.step += 1
        code = self._refusal_code(optimizer, gradients, loss, label_report)
        proceed = code == 0
        if self.mode == "raise":
            # After a refused batch nothing updates until `fit` raises.
            proceed = proceed and self.first_bad is None
        if proceed:
            optimizer.apply(gradients, variables)
            return ops.ones((), "float32")
        for variable, value in zip(*state):
            variable.assign(value)
        if code:
            self.skipped += 1
            if self.first_bad is None:
                bad_label = 0.0 if label_report is None else float(label_report[1])
                self.first_bad = (self.step, code, bad_label)
        return ops.zeros((), "float32")

    @staticmethod
    def _refusal_code(optimizer, gradients, loss, label_report):
        """Why the batch is refused: `step_guard`'s bits, 0 if it is not.

        One transfer to the host: the checks are stacked first. The
        gradients are not checked under a `LossScaleOptimizer`, which
        skips its own overflows (as in `tfkd.step_guard`).
        """
        bad_labels = (
            ops.zeros((), "float32") if label_report is None else label_report[0]
        )
        checks = [
            ops.cast(bad_labels > 0.0, "float32"),
            ops.cast(ops.logical_not(ops.isfinite(loss)), "float32"),
        ]
        bits = [step_guard.BAD_LABELS, step_guard.NONFINITE_LOSS]
        finite = [ops.all(ops.isfinite(g)) for g in gradients if g is not None]
        if finite and not isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            checks.append(
                ops.cast(ops.logical_not(ops.all(ops.stack(finite))), "float32")
            )
            bits.append(step_guard.NONFINITE_GRADIENTS)
        flags = ops.convert_to_numpy(ops.stack(checks))  # (checks,)
        return sum(bit for bit, flag in zip(bits, flags) if flag > 0.0)

    def record_evaluation(self, label_report):
        """Counts an evaluation batch; keeps where its first bad label was."""
        if not self.active:
            return
        self.test_step += 1
        if label_report is None or self.first_bad_test is not None:
            return
        count, value = label_report
        if float(count) > 0.0:
            self.first_bad_test = (self.test_step, float(value))

    def logs(self):
        """`{"nonfinite_batches": count}` with `"skip"`, else `{}`."""
        if self.mode != "skip":
            return {}
        return {
            step_guard.SKIPPED_LOG_KEY: ops.convert_to_tensor(
                float(self.skipped), "float32"
            )
        }

    # -- between steps ---------------------------------------------------

    def reset_epoch(self):
        """Starts a new epoch's counts."""
        # Steps count from 1; `first_bad` is `(step, reasons, first bad
        # label)` of the epoch's first refused batch, or `None`.
        self.step = 0
        self.skipped = 0
        self.first_bad = None

    def reset_evaluation(self):
        """Starts a new evaluation's counts."""
        self.test_step = 0
        self.first_bad_test = None  # (step, first bad label)

    def raise_if_refused(self, where):
        """Raises for the epoch's first refused batch, with `"raise"`.

        Raises:
            InvalidLabelsError: if its labels were bad.
            NonFiniteLossError: if its loss or gradients were not finite.
        """
        if self.mode != "raise" or self.first_bad is None:
            return
        step, reasons, bad_label = self.first_bad
        step_guard.raise_refusal(
            where, step - 1, reasons, bad_label, self.num_classes
        )

    def raise_if_bad_evaluation(self, where):
        """Raises for the evaluation's first batch with bad labels."""
        if not self.active or self.first_bad_test is None:
            return
        step, bad_label = self.first_bad_test
        step_guard.raise_bad_evaluation(
            where, step - 1, bad_label, self.num_classes
        )

