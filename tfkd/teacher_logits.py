"""A teacher's logits over a dataset, batch by batch: the one implementation.

`tfkd.TeacherCache.build` (on disk) and
`tfkd.tuning.memory_cache.TeacherLogitsInMemory` (in memory) both run a
frozen teacher once over a dataset and keep its logits. They share this
module: one traced inference function per teacher, the decision whether
the teacher emits logits or probabilities (from the first batch, as the
`Distiller` decides), the conversion of probabilities to log-probabilities
(never softened twice, see `tfkd.teacher_outputs`), and the checks that
the outputs are one finite `(batch, classes)` tensor.
"""

import weakref

import keras
import numpy as np

from tfkd import backend_support
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.utils import validation

# One traced inference function per teacher, as `Model.predict` keeps its
# own: rebuilding a cache (a stale one, or in a benchmark) does not trace
# the teacher again. Keys are weak and the function holds the teacher only
# through a weak reference, so the cache never keeps a model alive.
_PREDICT_FUNCTIONS = weakref.WeakKeyDictionary()


def predict_function(teacher):
    """The compiled `inputs -> teacher(inputs, training=False)` of `teacher`.

    On TensorFlow a `tf.function`; on another Keras backend the model's own
    compiled `predict_on_batch` (a jitted function on JAX), which returns
    NumPy arrays.

    Args:
        teacher: A `keras.Model`.

    Returns:
        A callable, the same one for every call with this teacher.

    Example:

    >>> import keras, numpy as np
    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> predict_function(teacher) is predict_function(teacher)
    True
    >>> tuple(predict_function(teacher)(np.ones((4, 2), "float32")).shape)
    (4, 3)
    """
    function = _PREDICT_FUNCTIONS.get(teacher)
    if function is None and not backend_support.tensorflow_is_backend():
        teacher_ref = weakref.ref(teacher)

        def function(inputs):
            return teacher_ref().predict_on_batch(inputs)

        _PREDICT_FUNCTIONS[teacher] = function
    elif function is None:
        tf = backend_support.require_tensorflow("a traced teacher")
        teacher_ref = weakref.ref(teacher)

        @tf.function(reduce_retracing=True)
        def function(inputs):
            return teacher_ref()(inputs, training=False)

        _PREDICT_FUNCTIONS[teacher] = function
    return function


class TeacherLogits:
    """Runs a teacher on batches and returns float32 logits.

    Args:
        teacher: A trained `keras.Model` with one output `(batch, classes)`.
        teacher_outputs: `"logits"`, `"probabilities"` (stored as
            log-probabilities) or `"auto"` (decided on the first batch).
            Defaults to `"auto"`.

    Raises:
        TypeError: if `teacher` is not a `keras.Model`.
        ValueError: for an unknown `teacher_outputs`.

    Example:

    >>> import keras, numpy as np
    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> run = TeacherLogits(teacher)
    >>> run(np.ones((4, 2), "float32")).shape, run.kind
    ((4, 3), 'logits')
    """

    def __init__(self, teacher, teacher_outputs="auto"):
        validation.check_keras_model("teacher", teacher)
        validation.check_choice(
            "teacher_outputs",
            teacher_outputs,
            teacher_outputs_lib.TEACHER_OUTPUT_KINDS,
        )
        self.teacher = teacher
        #: `"logits"` or `"probabilities"`; `None` until the first batch
        #: decides `"auto"`.
        self.kind = None if teacher_outputs == "auto" else teacher_outputs
        self._predict = predict_function(teacher)

    def __call__(self, inputs, step=1):
        """float32 logits `(batch, classes)` of the teacher on `inputs`.

        Args:
            inputs: A batch: an array or tensor, or a nest of them.
            step: 1-based batch index, for error messages. Defaults to `1`.

        Returns:
            A NumPy float32 array `(batch, classes)`: logits, or
            log-probabilities for a softmax teacher.

        Raises:
            ValueError: for several outputs, outputs that are not
                `(batch, classes)`, or NaN/inf outputs.
        """
        if backend_support.tensorflow_is_backend():
            inputs = keras.tree.map_structure(
                keras.ops.convert_to_tensor, inputs
            )
        outputs = self._predict(inputs)
        if isinstance(outputs, (dict, list, tuple)):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected a model with "
                "a single output of shape (batch, classes). Received: a "
                f"model with {len(outputs)} outputs"
            )
        if len(outputs.shape) != 2:
            raise ValueError(
                "Invalid value for argument `teacher`. Expected outputs of "
                "shape (batch, classes). Received: outputs of shape "
                f"{tuple(outputs.shape)}"
            )
        outputs = np.asarray(outputs, dtype=np.float32)  # (batch, classes)
        if not np.all(np.isfinite(outputs)):
            raise ValueError(
                "Invalid value for argument `teacher`. Expected finite "
                f"outputs. Received: NaN or inf in the outputs of batch {step}"
            )
        if self.kind is None:
            # Decided once, on the first batch, as the Distiller does.
            self.kind = (
                "probabilities"
                if teacher_outputs_lib.looks_like_probabilities(outputs)
                else "logits"
            )
        logits = teacher_outputs_lib.to_logits(outputs, self.kind)
        return np.asarray(logits, dtype=np.float32)
