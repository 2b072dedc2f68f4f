"""The training step's guard: no update from a non-finite or mislabelled batch.

The checks before training (`tfkd.preflight`) see the first batch only. A
NaN in a later batch, or a label out of range there, would otherwise make
`fit` report a normal loss while the student's weights turn to NaN (or
end in a TensorFlow error deep inside the cross-entropy). So every step,
inside the compiled graph:

1. `StepGuard.check_labels` checks sparse labels (integer values in
   `[0, classes)`, or -1 for "unlabelled") before anything gathers with
   them, and hands the loss a sanitized copy (bad labels become -1), so the
   step computes something finite either way. One-hot and soft rows are
   accepted as they are.
2. `StepGuard.capture` reads the student's non-trainable state (BatchNorm
   statistics), which the forward pass updates before the guard can know.
3. `StepGuard.apply_gradients` looks at the unscaled float32 loss and the
   gradients; when a label was bad or one of them is not finite, the
   optimizer does not run (a `tf.cond`, also under `tf.distribute`, where
   all replicas agree through an all-reduce and the `cond` runs in
   cross-replica context, as Keras's `LossScaleOptimizer` does it) and the
   captured state is written back. Under mixed precision a
   `LossScaleOptimizer`'s scaled gradients overflow routinely while it
   searches its scale: the guard then checks the loss only and leaves
   gradient overflow to the optimizer, which skips those steps itself.

What happens next is `Distiller(on_nonfinite=...)`:

- `"raise"` (the default): the step stops updating, and `fit` raises
  `NonFiniteLossError` (a `FloatingPointError`) or `InvalidLabelsError`
  (a `ValueError`) naming the epoch and the batch, with the weights as
  they were after the batch before it. With `steps_per_execution > 1` the
  batch is still named exactly; the rest of that execution updates
  nothing.
- `"skip"`: such batches are skipped (no update, out of the metrics) and
  counted in the logs as `nonfinite_batches` (per epoch).
- `"ignore"`: no guard at all, the step as it was before the guard
  existed. Unsafe (NaN weights, truncated labels); it exists to measure
  what the guard costs (`scripts/nonfinite_guard_cost.py`).

Evaluation (`evaluate`, and validation inside `fit`) changes no weight: a
non-finite loss there shows as a NaN `loss` in its logs, never averaged
into a finite number; bad labels raise `InvalidLabelsError` naming the
batch in every mode but `"ignore"`.

The Python side is `GuardCallback`, which `Distiller.fit`/`evaluate` add
to the callbacks themselves: it reads the guard's state after each
execution and raises.
"""

import keras
from keras import ops

from tfkd import backend_support
from tfkd import losses

tf = backend_support.lazy_tensorflow(
    "the step guard of the TensorFlow train_step"
)

#: The values `Distiller(on_nonfinite=...)` accepts.
ON_NONFINITE_CHOICES = ("raise", "skip", "ignore")

#: Key of the per-epoch count of skipped batches in `fit`'s logs ("skip").
SKIPPED_LOG_KEY = "nonfinite_batches"

# Why a batch was refused: bits of one int (several can be set).
BAD_LABELS = 1
NONFINITE_LOSS = 2
NONFINITE_GRADIENTS = 4


class NonFiniteLossError(FloatingPointError):
    """A training batch gave a non-finite loss or gradient.

    Raised by `fit` (with `Distiller(on_nonfinite="raise")`, the default)
    after the step that met it, which did not update the weights.
    """


class InvalidLabelsError(ValueError):
    """A batch after the first held a fractional or out-of-range label."""


def _checked_sparse_labels(flat, num_classes):
    """`(bad (n,) bool, values float64 (n,), safe labels (n,))`.

    `safe` has every bad label replaced by -1: int32 for integer labels
    (so that an unsigned dtype cannot turn -1 into 255), else the labels'
    own float dtype.
    """
    if flat.dtype.is_integer:
        values = tf.cast(flat, tf.int64)
        bad = values < -1
        if num_classes is not None:
            bad = tf.logical_or(bad, values >= num_classes)
        safe = tf.cast(tf.where(bad, tf.constant(-1, tf.int64), values), tf.int32)
        return bad, tf.cast(values, tf.float64), safe
    values = tf.cast(flat, tf.float64)
    # NaN fails every comparison, so it is bad too.
    good = tf.logical_and(tf.equal(values, tf.floor(values)), values >= -1.0)
    if num_classes is not None:
        good = tf.logical_and(good, values < num_classes)
    bad = tf.logical_not(good)
    return bad, values, tf.where(bad, tf.cast(-1, flat.dtype), flat)



def is_sparse_class_ids(labels, num_classes):
    """Whether `labels` are sparse class ids, the form the guard checks.

    One-hot rows and soft (e.g. mixed) label rows are accepted as they are;
    without a class count, any row wider than 1 counts as such a row.

    Args:
        labels: A tensor of labels.
        num_classes: The student's class count, or `None` if unknown.

    Example:

    >>> import numpy as np
    >>> is_sparse_class_ids(np.array([0, 2, -1]), 3)
    True
    >>> is_sparse_class_ids(np.eye(3, dtype="float32"), 3)
    False
    """
    if losses.is_one_hot(labels, num_classes):
        return False
    return not (
        num_classes is None and len(labels.shape) >= 2 and labels.shape[-1] != 1
    )


def check_sparse_labels(labels, num_classes):
    """`(safe labels, report)`: sparse class ids checked in `keras.ops`.

    The label check of the guards on backends other than TensorFlow
    (`tfkd.jax_step_guard`, `tfkd.torch_step_guard`): the same rules as
    `StepGuard.check_labels`, traceable on JAX and eager on PyTorch.

    Args:
        labels: A tensor of sparse class ids, `(batch,)` or `(batch, 1)`.
        num_classes: The student's class count, or `None` if unknown
            (then only the integer and >= -1 checks apply).

    Returns:
        `labels` with every bad label replaced by -1 (same shape; int32
        for integer labels), and the report `(bad count float32, first bad
        value float32)` (the value is meaningful when the count is > 0).

    Example:

    >>> import numpy as np
    >>> safe, (count, first) = check_sparse_labels(np.array([0, 7, -1]), 3)
    >>> np.asarray(safe).tolist(), float(count), float(first)
    ([0, -1, -1], 1.0, 7.0)
    """
    labels = ops.convert_to_tensor(labels)
    flat = ops.reshape(labels, (-1,))  # (batch,)
    if "int" in str(flat.dtype):
        values = ops.cast(flat, "int32")
        bad = values < -1
        if num_classes is not None:
            bad = ops.logical_or(bad, values >= num_classes)
        safe = ops.where(bad, -1, values)  # int32, so -1 stays -1
    else:
        values = flat
        # NaN fails every comparison, so it is bad too.
        good = ops.logical_and(
            ops.equal(values, ops.floor(values)), values >= -1.0
        )
        if num_classes is not None:
            good = ops.logical_and(good, values < num_classes)
        bad = ops.logical_not(good)
        safe = ops.where(bad, ops.cast(-1, flat.dtype), flat)
    count = ops.sum(ops.cast(bad, "float32"))
    first = ops.cast(values, "float32")[ops.argmax(ops.cast(bad, "int32"))]
    return ops.reshape(safe, ops.shape(labels)), (count, first)


class KerasOpsLabelCheck:
    """`check_labels` of the guards whose steps run `keras.ops` (JAX, PyTorch).

    A mixin: the guard has `active` and sets `num_classes` here, which its
    error messages read.
    """

    def check_labels(self, labels, num_classes):
        """`(labels for the loss, report)`, as `StepGuard.check_labels`.

        The report is `(bad count float32, first bad value float32)`, or
        `None` when nothing was checked (no labels, one-hot or soft rows,
        or the guard is off); bad sparse labels become -1.
        """
        if labels is None or not self.active:
            return labels, None
        labels = ops.convert_to_tensor(labels)
        if not is_sparse_class_ids(labels, num_classes):
            return labels, None
        self.num_classes = num_classes
        return check_sparse_labels(labels, num_classes)


class StepGuard:
    """The guard's state and in-graph checks for one `Distiller`.

    Deliberately a plain object, not a Keras layer: its variables are the
    state of the current `fit`, not of the model, so they are neither
    saved in `.keras` files nor listed in `distiller.variables`. They are
    created with the `Distiller`, under its distribution strategy.

    Args:
        on_nonfinite: One of `ON_NONFINITE_CHOICES`.
    """

    def __init__(self, on_nonfinite):
        self.mode = on_nonfinite
        self.num_classes = None  # set when a step is traced
        if self.mode == "ignore":
            return

        def variable(value, dtype, name):
            return tf.Variable(
                value,
                dtype=dtype,
                trainable=False,
                name=f"step_guard_{name}",
                # Replicas agree on every value written (see
                # `apply_gradients`), so the first one's is everyone's.
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        # Training: batches run this epoch, batches refused this epoch,
        # and where and why the first one was refused (-1: none yet).
        self._step = variable(0, tf.int64, "step")
        self._skipped = variable(0, tf.int64, "skipped")
        self._first_bad_step = variable(-1, tf.int64, "first_bad_step")
        self._first_bad_reasons = variable(0, tf.int32, "first_bad_reasons")
        self._first_bad_label = variable(0.0, tf.float64, "first_bad_label")
        # Evaluation: the same for bad labels.
        self._test_step = variable(0, tf.int64, "test_step")
        self._first_bad_test_step = variable(-1, tf.int64, "first_bad_test")
        self._first_bad_test_label = variable(0.0, tf.float64, "test_label")

    #: `GuardCallback` may run off the training thread (see there).
    async_safe = True

    @property
    def active(self):
        """Whether the guard checks anything (`on_nonfinite != "ignore"`)."""
        return self.mode != "ignore"

    @property
    def metrics(self):
        """Metrics the model lists for the guard: none (TF variables)."""
        return []

    # -- in the step -----------------------------------------------------

    def check_labels(self, labels, num_classes):
        """`(labels for the loss, report)`: sparse labels checked in-graph.

        Args:
            labels: The batch's labels, or `None`.
            num_classes: The student's class count, or `None` if unknown
                (then only the integer and >= -1 checks apply).

        Returns:
            `labels` with every bad sparse label replaced by -1 (same
            shape; int32 for integer labels), and a report `(bad count float32 scalar,
            first bad value float64 scalar)` for `apply_gradients` or
            `record_evaluation`; `None` when nothing was checked (no
            labels, dense labels, or the guard is off).
        """
        if labels is None or not self.active:
            return labels, None
        labels = ops.convert_to_tensor(labels)
        if not is_sparse_class_ids(labels, num_classes):
            return labels, None  # one-hot or soft rows, accepted as today
        self.num_classes = num_classes
        flat = tf.reshape(labels, (-1,))  # (batch,)
        bad, values, safe = _checked_sparse_labels(flat, num_classes)
        count = tf.reduce_sum(tf.cast(bad, tf.float32))
        first = tf.gather(
            values, tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
        )  # a bad value when count > 0
        return tf.reshape(safe, tf.shape(labels)), (count, first)

    def capture(self, model):
        """`(variables, values)`: a model's non-trainable float state now.

        Read before the forward pass, so a refused batch can write back
        what its forward pass changed (BatchNorm's moving statistics).
        """
        if not self.active:
            return None
        variables = [
            v
            for v in model.non_trainable_variables
            if "float" in str(v.dtype)
        ]
        return variables, [tf.identity(v.value) for v in variables]

    def apply_gradients(
        self, optimizer, gradients, variables, loss, label_report, state
    ):
        """Applies `gradients` unless the batch is refused; returns 1.0 or 0.0.

        Args:
            optimizer: The Distiller's optimizer.
            gradients: The (scaled) gradients of `variables`.
            variables: The optimized variables.
            loss: This replica's unscaled float32 total loss.
            label_report: What `check_labels` returned, or `None`.
            state: What `capture` returned.

        Returns:
            A float32 scalar, 1.0 when the batch updated the weights (and
            counts in the metrics), else 0.0; the same on every replica.
        """
        if not self.active:
            optimizer.apply_gradients(zip(gradients, variables))
            return ops.ones((), "float32")
        bad_labels, bad_value = (
            (ops.zeros((), "float32"), tf.zeros((), tf.float64))
            if label_report is None
            else label_report
        )
        checks = [
            bad_labels,
            ops.cast(ops.logical_not(ops.isfinite(loss)), "float32"),
        ]
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            finite = [
                ops.all(ops.isfinite(g)) for g in gradients if g is not None
            ]
            checks.append(
                ops.cast(ops.logical_not(ops.all(ops.stack(finite))), "float32")
            )
        reasons = _agree_across_replicas(ops.stack(checks))  # (checks,)
        code = tf.reduce_sum(
            tf.where(
                reasons > 0.0,
                tf.constant(
                    [BAD_LABELS, NONFINITE_LOSS, NONFINITE_GRADIENTS][
                        : len(checks)
                    ],
                    tf.int32,
                ),
                0,
            )
        )
        proceed = tf.equal(code, 0)
        if self.mode == "raise":
            # After a refused batch nothing updates until `fit` raises.
            proceed = tf.logical_and(proceed, self._first_bad_step < 0)
        gradients = [
            g if g is None else ops.convert_to_tensor(g) for g in gradients
        ]
        saved = state[1]

        def apply_fn(gradients):
            optimizer.apply_gradients(zip(gradients, variables))

        def skip_fn(saved, code, bad_value):
            for variable, value in zip(state[0], saved):
                variable.assign(value)
            self._record_refusal(code, bad_value)

        _cond_across_replicas(
            proceed, apply_fn, (gradients,), skip_fn, (saved, code, bad_value)
        )
        self._step.assign_add(1)
        return ops.cast(proceed, "float32")

    def _record_refusal(self, code, bad_value):
        """Counts a refused batch; keeps where and why the first one was."""
        bad = code > 0
        self._skipped.assign_add(tf.cast(bad, tf.int64))
        first = tf.logical_and(bad, self._first_bad_step < 0)
        self._first_bad_step.assign(
            tf.where(first, self._step.read_value(), self._first_bad_step)
        )
        self._first_bad_reasons.assign(
            tf.where(first, code, self._first_bad_reasons)
        )
        self._first_bad_label.assign(
            tf.where(first, bad_value, self._first_bad_label)
        )

    def record_evaluation(self, label_report):
        """Counts an evaluation batch; keeps where its first bad label was."""
        if not self.active:
            return
        if label_report is not None:
            count, value = label_report
            bad = _agree_across_replicas(count) > 0.0
            first = tf.logical_and(bad, self._first_bad_test_step < 0)
            self._first_bad_test_step.assign(
                tf.where(
                    first, self._test_step.read_value(), self._first_bad_test_step
                )
            )
            self._first_bad_test_label.assign(
                tf.where(first, value, self._first_bad_test_label)
            )
        self._test_step.assign_add(1)

    def logs(self):
        """`{"nonfinite_batches": count}` with `"skip"`, else `{}`."""
        if self.mode != "skip":
            return {}
        return {SKIPPED_LOG_KEY: ops.cast(self._skipped.value(), "float32")}

    # -- between steps (Python) ------------------------------------------

    def reset_epoch(self):
        """Starts a new epoch's counts (eagerly, between executions)."""
        if self.active:
            self._step.assign(0)
            self._skipped.assign(0)
            self._first_bad_step.assign(-1)

    def reset_evaluation(self):
        """Starts a new evaluation's counts."""
        if self.active:
            self._test_step.assign(0)
            self._first_bad_test_step.assign(-1)

    def raise_if_refused(self, where):
        """Raises for the epoch's first refused batch, with `"raise"`.

        Args:
            where: Text naming the epoch, e.g. "epoch 3", to which the
                batch is added.

        Raises:
            InvalidLabelsError: if its labels were bad.
            NonFiniteLossError: if its loss or gradients were not finite.
        """
        if self.mode != "raise":
            return
        step = int(self._first_bad_step.numpy())
        if step < 0:
            return
        raise_refusal(
            where, step, int(self._first_bad_reasons.numpy()),
            float(self._first_bad_label.numpy()), self.num_classes,
        )

    def raise_if_bad_evaluation(self, where):
        """Raises `InvalidLabelsError` if an evaluation batch had bad labels."""
        if not self.active:
            return
        step = int(self._first_bad_test_step.numpy())
        if step < 0:
            return
        raise_bad_evaluation(
            where, step, float(self._first_bad_test_label.numpy()),
            self.num_classes,
        )


def raise_refusal(where, step, reasons, bad_label, num_classes):
    """Raises the error for a refused training batch (every backend's guard).

    Args:
        where: Text naming the epoch, e.g. "epoch 3".
        step: The batch's index in the epoch, from 0.
        reasons: The refusal's bits (bad labels, non-finite loss,
            non-finite gradients).
        bad_label: The first bad label's value, when the labels were bad.
        num_classes: The student's class count, or `None`.

    Raises:
        InvalidLabelsError: if the labels were bad.
        NonFiniteLossError: if the loss or gradients were not finite.
    """
    where = f"{where}, batch {step + 1} (counting from 1)"
    if reasons & BAD_LABELS:
        raise _labels_error(
            where, bad_label, num_classes,
            "The weights were not updated with this batch.",
        )
    what = "loss" if reasons & NONFINITE_LOSS else "gradient"
    raise NonFiniteLossError(
        f"Non-finite {what} in {where}: the Distiller stopped before "
        "updating the weights with this batch, which keep their values "
        "after the batch before it. Check this batch's inputs and "
        "teacher logits for NaN/inf (the checks before training see "
        "the first batch only), a learning rate too high for the "
        "model, and hyper-parameters such as the temperature and the "
        "terms' weights. Pass on_nonfinite='skip' to the Distiller to "
        f"skip such batches instead and count them as "
        f"'{SKIPPED_LOG_KEY}' in the logs."
    )


def raise_bad_evaluation(where, step, bad_label, num_classes):
    """Raises `InvalidLabelsError` for an evaluation batch (from 0: `step`)."""
    raise _labels_error(
        f"{where}, batch {step + 1} (counting from 1)", bad_label,
        num_classes, "",
    )


def _labels_error(where, value, classes, consequence):
    expected = (
        f"class ids in [0, {classes - 1}] for a student with "
        f"{classes} classes"
        if classes is not None
        else "integer class ids"
    )
    return InvalidLabelsError(
        f"Invalid labels in {where}. Expected {expected}, or -1 for an "
        f"unlabelled example (fractional labels are never truncated). "
        f"Received: a label of {value:g}. {consequence}".rstrip()
    )


def without_refused_batch(kept, labels, logits, loss_values):
    """`(labels, logits, loss_values)` with which a refused batch counts for nothing.

    The metrics of a refused batch would average its NaN loss into the
    epoch's: every value becomes 0, every label "unlabelled" (so that
    label metrics mask every example out) and the labelled count 0.

    Args:
        kept: What `StepGuard.apply_gradients` returned (1.0 or 0.0).
        labels: The step's labels (sparse or one-hot), or `None`.
        logits: The student's logits `(batch, classes)`.
        loss_values: The step's `LossValues` namedtuple (`total`, `hard`,
            `soft`, `terms`, `labelled`).

    Returns:
        The three, unchanged when `kept` is 1.0.
    """
    keep = kept > 0.0

    def zero_unless_kept(value):
        if value is None:
            return None
        return ops.where(keep, value, ops.zeros_like(value))

    if labels is not None:
        labels = ops.convert_to_tensor(labels)
        unlabelled = (
            ops.zeros_like(labels)  # a row of zeros
            if losses.is_one_hot(labels, logits.shape[-1])
            else ops.full_like(labels, losses.UNLABELLED)
        )
        labels = ops.where(keep, labels, unlabelled)
    loss_values = loss_values._replace(
        total=zero_unless_kept(loss_values.total),
        hard=zero_unless_kept(loss_values.hard),
        soft=zero_unless_kept(loss_values.soft),
        terms={k: zero_unless_kept(v) for k, v in loss_values.terms.items()},
        labelled=loss_values.labelled * kept,
    )
    return labels, zero_unless_kept(logits), loss_values


def _agree_across_replicas(values):
    """`values` summed over the replicas (as is without several)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _cond_across_replicas(condition, true_fn, true_args, false_fn, false_args):
    """`tf.cond` on a condition every replica agrees on; no outputs.

    Strategies that need `merge_call` (MirroredStrategy) do not support a
    `cond` in replica context whose branch calls `merge_call`, which
    `apply_gradients` does: there the `cond` runs in cross-replica context
    and each branch on every replica, as in Keras's `LossScaleOptimizer`
    (`keras/src/optimizers/loss_scale_optimizer.py`, `_tf_apply`). Values
    a branch needs go through `merge_call` as arguments, so each replica's
    branch gets its own.
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(
            condition,
            lambda: true_fn(*true_args),
            lambda: false_fn(*false_args),
        )
        return

    def in_cross_replica(strategy, condition, true_args, false_args):
        # Every replica computed the same condition; take the first one's.
        condition = strategy.experimental_local_results(condition)[0]
        tf.cond(
            condition,
            lambda: strategy.extended.call_for_each_replica(
                true_fn, args=true_args
            ),
            lambda: strategy.extended.call_for_each_replica(
                false_fn, args=false_args
            ),
        )

    tf.distribute.get_replica_context().merge_call(
        in_cross_replica, args=(condition, true_args, false_args)
    )


class GuardCallback(keras.callbacks.Callback):
    """Raises between steps for what the in-graph guard refused.

    `Distiller.fit` and `evaluate` add it themselves. It reads a few of the
    guard's scalars after each execution; `async_safe` lets Keras run it
    off the training thread (Keras 3.15), so it does not wait for each
    step: the error then comes one batch later at most, still naming the
    batch that caused it, and the steps in between update nothing.
    """

    async_safe = True

    def __init__(self, guard):
        super().__init__()
        self.guard = guard
        self.async_safe = guard.async_safe
        self.epoch = None

    def on_train_begin(self, logs=None):
        self.epoch = 0

    def on_train_end(self, logs=None):
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.guard.reset_epoch()

    def on_train_batch_end(self, batch, logs=None):
        self.guard.raise_if_refused(f"epoch {self.epoch + 1}")

    def on_test_begin(self, logs=None):
        self.guard.reset_evaluation()

    def on_test_batch_end(self, batch, logs=None):
        where = (
            "the evaluation data"
            if self.epoch is None
            else f"the validation data after epoch {self.epoch + 1}"
        )
        self.guard.raise_if_bad_evaluation(where)


def with_guard_callback(callbacks, guard, model):
    """`callbacks` with a `GuardCallback` for `guard` (added once).

    Args:
        callbacks: What the caller passed to `fit`/`evaluate`: `None`, a
            list, or Keras's `CallbackList` (`fit` hands its own to the
            validation `evaluate`, which has the callback already).
        guard: The `StepGuard`.
        model: The model the callback watches.

    Returns:
        The callbacks to pass on.
    """
    if not guard.active:
        return callbacks
    if callbacks is None:
        callbacks = []
    existing = callbacks.callbacks if hasattr(callbacks, "callbacks") else callbacks
    if any(isinstance(c, GuardCallback) for c in existing):
        return callbacks
    callback = GuardCallback(guard)
    if hasattr(callbacks, "callbacks"):  # a CallbackList, already set up
        callback.set_model(model)
        callbacks.callbacks.append(callback)
        return callbacks
    return list(callbacks) + [callback]
