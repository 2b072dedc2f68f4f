"""The Distiller's training and evaluation steps on Keras's JAX backend.

Keras's JAX trainer (`keras/src/backend/jax/trainer.py`) calls
`train_step(state, data)` and `test_step(state, data)` as pure functions:
`state` holds the values of the model's trainable, non-trainable,
optimizer and metrics variables, and the step returns `(logs, new state)`;
Keras compiles it with `jax.jit` and writes the state back to the
variables between epochs. `JaxSteps` gives the Distiller such steps around
the very code its TensorFlow step runs (`Distiller._batch`,
`_student_outputs`, `_loss_values`, `_update_metrics`, with the loss of
`tfkd.step_losses`):

1. The forward pass and the loss run under a `keras.StatelessScope` that
   maps each variable to its value in `state`; everything they assign
   (BatchNorm statistics, CRD's memory, seed generators of augmentation
   and dropout) is read back from the scope as the new non-trainable
   state. `jax.value_and_grad` differentiates that function with respect
   to the trainable values; the teacher's outputs are kept out of the
   gradient with `stop_gradient`, as on TensorFlow.
2. `optimizer.stateless_apply` gives the new weights and optimizer state.
3. The guard (`tfkd.jax_step_guard`) and the metrics run under a second
   scope over the metrics variables; a refused batch keeps the old state.

Under `keras.distribution` the step is one program over the global batch,
so the loss needs no division by a replica count (TensorFlow's
`tf.distribute` runs one step per replica and sums their gradients).
"""

import keras


def _values_after(scope, variables, values):
    """The values `variables` hold in `scope`: assigned, else `values`."""
    new_values = []
    for variable, value in zip(variables, values):
        new = scope.get_current_value(variable)
        new_values.append(value if new is None else new)
    return new_values


class JaxSteps:
    """A `keras.Model` mixin: the `Distiller`'s stateless JAX steps.

    The Distiller's `train_step`/`test_step` call `_jax_train_step`/
    `_jax_test_step` on the JAX backend. It needs the Distiller's step
    helpers and its guard (`_step_guard`, a `JaxStepGuard` on JAX).
    """

    def _jax_train_step(self, state, data):
        import jax  # the JAX backend's own dependency

        trainable, non_trainable, optimizer_values, metrics_values = state
        static = {}  # Python values of the traced step (not arrays)

        def loss_fn(trainable, non_trainable):
            mapping = [
                *zip(self.trainable_variables, trainable),
                *zip(self.non_trainable_variables, non_trainable),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                batch = self._batch(data, training=True)
                student = self._student_outputs(batch.inputs, training=True)
                loss_values = self._loss_values(batch, student)
            new_non_trainable = _values_after(
                scope, self.non_trainable_variables, non_trainable
            )
            # The loss scale of a LossScaleOptimizer is optimizer state.
            optimizer_mapping = list(zip(self.optimizer.variables, optimizer_values))
            with keras.StatelessScope(state_mapping=optimizer_mapping):
                scaled = self.optimizer.scale_loss(loss_values.total)
            static["sparse_labels"] = batch.sparse_labels
            # Only arrays leave the traced function: the views' dicts (keyed
            # by None and names) and Python flags stay behind.
            batch = batch._replace(
                sparse_labels=None, inputs=None, teacher=None, step_values=None
            )
            return scaled, (batch, student[None].logits, loss_values,
                            new_non_trainable)

        (_, aux), gradients = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable
        )
        batch, logits, loss_values, new_non_trainable = aux
        batch = batch._replace(sparse_labels=static["sparse_labels"])
        new_trainable, new_optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        guard = self._step_guard
        mapping = list(zip(self.metrics_variables, metrics_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            kept = None
            if guard.active:
                code = guard.refusal_code(
                    self.optimizer, gradients, loss_values.total,
                    batch.label_report,
                )
                kept = guard.record_training(code, batch.label_report)
                new_trainable = guard.keep_if(kept, new_trainable, trainable)
                new_optimizer_values = guard.keep_if(
                    kept, new_optimizer_values, optimizer_values
                )
                new_non_trainable = guard.keep_if(
                    kept, new_non_trainable, non_trainable, floats_only=True
                )
            logs = self._update_metrics(batch, logits, loss_values, kept=kept)
        new_metrics_values = _values_after(
            scope, self.metrics_variables, metrics_values
        )
        return logs, (new_trainable, new_non_trainable, new_optimizer_values,
                      new_metrics_values)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        mapping = [
            *zip(self.trainable_variables, trainable),
            *zip(self.non_trainable_variables, non_trainable),
            *zip(self.metrics_variables, metrics_values),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._evaluation_step(data)
        return logs, (
            trainable,
            _values_after(scope, self.non_trainable_variables, non_trainable),
            _values_after(scope, self.metrics_variables, metrics_values),
        )
