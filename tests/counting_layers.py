"""A layer that counts how often it really runs (one forward pass per model)."""

import keras


class CountingDense(keras.layers.Dense):
    """A Dense layer that counts its executions in a variable.

    The count is a `tf.Variable` updated inside `call`, so it counts real
    executions in compiled `tf.function` steps too, not Python traces.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.calls = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="calls"
        )

    def call(self, inputs, training=None):
        self.calls.assign_add(1)
        return super().call(inputs)
