"""The training step's guard on Keras's JAX backend (`tfkd.step_guard`'s twin).

The contract is `tfkd.step_guard`'s: a batch whose loss or gradients are
not finite, or whose sparse labels are bad, updates nothing, and
`Distiller(on_nonfinite=...)` decides what follows ("raise": `fit` stops
with an error naming the epoch and the batch; "skip": such batches are
counted as `nonfinite_batches`; "ignore": no guard). Only the mechanics
differ, because JAX's step is a pure function of the state Keras threads
through it (`tfkd.jax_step`):

- The guard's counters are the variables of a `GuardRecord`, a
  `keras.metrics.Metric` whose variables the Distiller lists in
  `metrics_variables`, so Keras hands their values to every step and takes
  the new ones back, like any metric's. It is neither one of the model's
  `metrics` (no log, no `metrics_names` entry) nor tracked as an
  attribute, so it is never saved. `GuardCallback` resets it at each
  epoch and evaluation, the span its counts cover.
- A refused batch is not a `cond`: the step computes the update and keeps
  the old state with `where` (`JaxStepGuard.keep_if`), for the weights, the
  optimizer's variables (its iteration count included) and the float
  non-trainable state (BatchNorm statistics, CRD's memory). Integer state,
  the seed generators of random layers, moves on as on TensorFlow.
- `GuardCallback` (`tfkd.step_guard`) raises after the step, reading the
  record through `tfkd._keras_compat.running_value`.

Under `keras.distribution` the step is one program over the global batch,
so every device agrees without an all-reduce.
"""

import weakref

import keras
from keras import ops

from tfkd import _keras_compat
from tfkd import step_guard

# Why a batch was refused: bits of one int, shared with `tfkd.step_guard`.
_BAD_LABELS = step_guard.BAD_LABELS
_NONFINITE_LOSS = step_guard.NONFINITE_LOSS
_NONFINITE_GRADIENTS = step_guard.NONFINITE_GRADIENTS


class GuardRecord(keras.metrics.Metric):
    """The guard's counters, threaded through JAX's steps as metric state.

    Steps count from 1 and 0 means "none yet", so that Keras's
    `reset_state` (zeros) starts a clean epoch.

    Example:

    >>> record = GuardRecord()
    >>> int(record.first_bad_step.value)
    0
    """

    def __init__(self, name="step_guard"):
        super().__init__(name=name)

        def variable(name, dtype="int32"):
            return self.add_variable(
                shape=(), initializer="zeros", dtype=dtype, name=name
            )

        # Training: batches run and refused this epoch; the first refused
        # one, why, and its first bad label.
        self.step = variable("step")
        self.skipped = variable("skipped")
        self.first_bad_step = variable("first_bad_step")
        self.first_bad_reasons = variable("first_bad_reasons")
        self.first_bad_label = variable("first_bad_label", "float32")
        # Evaluation: the same for bad labels.
        self.test_step = variable("test_step")
        self.first_bad_test_step = variable("first_bad_test_step")
        self.first_bad_test_label = variable("first_bad_test_label", "float32")

    def update_state(self, *args, **kwargs):
        raise NotImplementedError(
            "The step guard's record is written by `JaxStepGuard` only."
        )

    def result(self):
        return {}  # nothing to report: `Distiller.get_metrics_result` skips it


def _record_first(first, step, fields):
    """Writes `(variable, value)` fields where `first` (a bool scalar)."""
    for variable, value in fields:
        variable.assign(ops.where(first, ops.cast(value, variable.dtype), variable.value))


class JaxStepGuard(step_guard.KerasOpsLabelCheck):
    """The guard's state and checks for one `Distiller` on JAX.

    Offers `tfkd.step_guard.StepGuard`'s interface (`check_labels`,
    `record_evaluation`, `logs`, `reset_epoch`, `reset_evaluation`,
    `raise_if_refused`, `raise_if_bad_evaluation`) and, for the stateless
    step, `refusal_code`, `record_training` and `keep_if`.

    Args:
        on_nonfinite: One of `tfkd.step_guard.ON_NONFINITE_CHOICES`.
        model: The `Distiller`, whose running state the Python side reads.

    Example:

    >>> guard = JaxStepGuard("skip", model=None)
    >>> guard.active, [m.name for m in guard.metrics]
    (True, ['step_guard'])
    """

    #: The callback reads the record after each step, on the training
    #: thread (the state it reads is the step's, see `running_value`).
    async_safe = False

    def __init__(self, on_nonfinite, model):
        self.mode = on_nonfinite
        self.num_classes = None
        self._model = None if model is None else weakref.ref(model)
        self.record = None if self.mode == "ignore" else GuardRecord()

    @property
    def active(self):
        """Whether the guard checks anything (`on_nonfinite != "ignore"`)."""
        return self.mode != "ignore"

    @property
    def metrics(self):
        """`[GuardRecord]`, whose variables Keras threads through the steps."""
        return [] if self.record is None else [self.record]

    # -- in the step (traced) --------------------------------------------

    def refusal_code(self, optimizer, gradients, loss, label_report):
        """Why the batch is refused: an int32 scalar of bits, 0 if it is not.

        The gradients are not checked under a `LossScaleOptimizer`, which
        skips its own overflows (as in `tfkd.step_guard`).
        """
        code = ops.where(ops.isfinite(loss), 0, _NONFINITE_LOSS)
        if label_report is not None:
            code = code + ops.where(label_report[0] > 0.0, _BAD_LABELS, 0)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            finite = [ops.all(ops.isfinite(g)) for g in gradients if g is not None]
            if finite:
                all_finite = ops.all(ops.stack(finite))
                code = code + ops.where(all_finite, 0, _NONFINITE_GRADIENTS)
        return ops.cast(code, "int32")

    def record_training(self, code, label_report):
        """Counts a training step; returns `kept` (1.0 or 0.0 float32).

        Run inside a `StatelessScope` over the metrics variables. With
        "raise" nothing updates after a refused batch, until `fit` raises.
        """
        record = self.record
        step = record.step.value + 1
        record.step.assign(step)
        bad = code > 0
        proceed = ops.logical_not(bad)
        if self.mode == "raise":
            proceed = ops.logical_and(proceed, record.first_bad_step.value == 0)
        record.skipped.assign(record.skipped.value + ops.cast(bad, "int32"))
        first = ops.logical_and(bad, record.first_bad_step.value == 0)
        bad_value = 0.0 if label_report is None else label_report[1]
        _record_first(first, step, [
            (record.first_bad_step, step),
            (record.first_bad_reasons, code),
            (record.first_bad_label, bad_value),
        ])
        return ops.cast(proceed, "float32")

    @staticmethod
    def keep_if(kept, new_values, old_values, floats_only=False):
        """`new_values` where `kept` is 1.0, else `old_values`.

        With `floats_only`, integer values (seed generators' states) take
        their new value either way.
        """
        keep = kept > 0.0
        return [
            new if floats_only and "float" not in str(new.dtype)
            else ops.where(keep, new, old)
            for new, old in zip(new_values, old_values)
        ]

    def record_evaluation(self, label_report):
        """Counts an evaluation batch; keeps where its first bad label was."""
        if not self.active:
            return
        record = self.record
        step = record.test_step.value + 1
        record.test_step.assign(step)
        if label_report is None:
            return
        count, value = label_report
        first = ops.logical_and(
            count > 0.0, record.first_bad_test_step.value == 0
        )
        _record_first(first, step, [
            (record.first_bad_test_step, step),
            (record.first_bad_test_label, value),
        ])

    def logs(self):
        """`{"nonfinite_batches": count}` with `"skip"`, else `{}`."""
        if self.mode != "skip":
            return {}
        return {
            step_guard.SKIPPED_LOG_KEY: ops.cast(self.record.skipped.value, "float32")
        }

    # -- between steps (Python) ------------------------------------------

    def reset_epoch(self):
        """Starts a new epoch's counts (eagerly, between executions)."""
        if self.active:
            for variable in (self.record.step, self.record.skipped,
                             self.record.first_bad_step):
                variable.assign(0)

    def reset_evaluation(self):
        """Starts a new evaluation's counts."""
        if self.active:
            self.record.test_step.assign(0)
            self.record.first_bad_test_step.assign(0)

    def _read(self, variable, kind=int):
        model = None if self._model is None else self._model()
        if model is None:
            return kind(variable.value)
        return kind(_keras_compat.running_value(model, variable))

    def raise_if_refused(self, where):
        """Raises for the epoch's first refused batch, with `"raise"`.

        Raises:
            InvalidLabelsError: if its labels were bad.
            NonFiniteLossError: if its loss or gradients were not finite.
        """
        if self.mode != "raise":
            return
        step = self._read(self.record.first_bad_step)
        if step == 0:
            return
        step_guard.raise_refusal(
            where, step - 1, self._read(self.record.first_bad_reasons),
            self._read(self.record.first_bad_label, float), self.num_classes,
        )

    def raise_if_bad_evaluation(self, where):
        """Raises for the evaluation's first batch with bad labels."""
        if not self.active:
            return
        step = self._read(self.record.first_bad_test_step)
        if step == 0:
            return
        step_guard.raise_bad_evaluation(
            where, step - 1, self._read(self.record.first_bad_test_label, float),
            self.num_classes,
        )
