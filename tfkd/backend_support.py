"""TensorFlow where tfkd needs it, and a clear error where it is missing.

tfkd's base install is Keras and NumPy: the core speaks `keras.ops` and runs
on every Keras backend. A few features are TensorFlow's own jobs (`tf.data`
pipelines, `tf.distribute` multi-worker training, the TFLite converter,
tensorflow-datasets streaming); their modules import TensorFlow on first
use through this module, so `import tfkd` never does, and a user without
TensorFlow, or on another Keras backend, gets an error that says what to use
instead of a bare `ModuleNotFoundError`.

Modules whose job is TensorFlow bind `tf = backend_support.lazy_tensorflow(
feature, alternative)` at module level and write `tf.…` as before: the
first attribute read imports TensorFlow, or raises
`TensorFlowRequiredError` naming the feature.
"""

import importlib
import sys

#: How to install TensorFlow next to tfkd (see setup.cfg's extras).
INSTALL_HINT = (
    "pip install 'tfkd[cpu]' (CPU) or pip install 'tfkd[gpu]' (Linux with an "
    "NVIDIA GPU)"
)


class TensorFlowRequiredError(ImportError):
    """A TensorFlow-only feature was used without TensorFlow.

    Raised when TensorFlow cannot be imported, or, for features that run
    inside TensorFlow's training loop, when the Keras backend is another
    one. The message names the feature and what to use instead.
    """


def keras_backend():
    """The name of the Keras backend in use, without importing TensorFlow.

    Example:

    >>> keras_backend() in ("tensorflow", "jax", "torch", "numpy", "openvino")
    True
    """
    import keras

    return keras.backend.backend()


def tensorflow_available():
    """Whether TensorFlow can be imported (imports it if so).

    Example:

    >>> isinstance(tensorflow_available(), bool)
    True
    """
    try:
        importlib.import_module("tensorflow")
    except ImportError:
        return False
    return True


def require_tensorflow(feature, alternative=None, *, backend=False):
    """Imports TensorFlow for `feature`, or raises an error that helps.

    Args:
        feature: What needs TensorFlow, as a user would name it (e.g.
            `"tfkd.export's TFLite conversion"`).
        alternative: Optional sentence: what to use without TensorFlow
            (e.g. `'model.export(path, format="litert")'`). Defaults to
            `None`.
        backend: Whether the feature also needs TensorFlow as the Keras
            backend (code that runs inside TensorFlow's training loop, such
            as `tf.distribute`). Defaults to `False` (TensorFlow installed
            is enough: a `tf.data` pipeline feeds `fit` on every backend).

    Returns:
        The `tensorflow` module.

    Raises:
        TensorFlowRequiredError: if TensorFlow cannot be imported, or with
            `backend=True` if the Keras backend is not TensorFlow.

    Example:

    >>> tf = require_tensorflow("a tf.data pipeline")  # doctest: +SKIP
    >>> tf.data.Dataset.range(3).cardinality().numpy()  # doctest: +SKIP
    3
    """
    instead = f" Without it, use {alternative}." if alternative else ""
    if backend and keras_backend() != "tensorflow":
        raise TensorFlowRequiredError(
            f"{feature} needs TensorFlow as the Keras backend. Received: "
            f"KERAS_BACKEND={keras_backend()!r}.{instead} (Or set "
            "KERAS_BACKEND=tensorflow with TensorFlow installed: "
            f"{INSTALL_HINT}.)"
        )
    try:
        return importlib.import_module("tensorflow")
    except ImportError as error:
        raise TensorFlowRequiredError(
            f"{feature} needs TensorFlow, which is not installed (tfkd "
            f"installs it through an extra: {INSTALL_HINT}).{instead}"
        ) from error


class _LazyTensorFlow:
    """Stands for the `tensorflow` module; imports it on first attribute."""

    def __init__(self, feature, alternative, backend):
        self._feature = feature
        self._alternative = alternative
        self._backend = backend

    def __getattr__(self, name):
        module = require_tensorflow(
            self._feature, self._alternative, backend=self._backend
        )
        return getattr(module, name)

    def __repr__(self):
        return f"<TensorFlow, imported on first use for {self._feature}>"


def lazy_tensorflow(feature, alternative=None, *, backend=False):
    """A stand-in for `tensorflow` that imports it when first used.

    Bind it as `tf` at module level in a module whose job is TensorFlow:
    importing that module then costs nothing, and the first `tf.…` raises
    `TensorFlowRequiredError` (see `require_tensorflow`) where TensorFlow is
    missing.

    Args:
        feature: What needs TensorFlow (see `require_tensorflow`).
        alternative: Optional: what to use instead. Defaults to `None`.
        backend: Whether TensorFlow must also be the Keras backend.
            Defaults to `False`.

    Returns:
        An object whose attributes are those of the `tensorflow` module.

    Example:

    >>> tf = lazy_tensorflow("this example")
    >>> repr(tf)
    '<TensorFlow, imported on first use for this example>'
    """
    return _LazyTensorFlow(feature, alternative, backend)


def imported_tensorflow():
    """The `tensorflow` module if something imported it already, else `None`.

    Type checks such as "is this a `tf.data.Dataset`?" use it: a value
    cannot be a TensorFlow object unless TensorFlow was imported, so they
    never import it themselves.

    Example:

    >>> imported_tensorflow() is None or hasattr(imported_tensorflow(), "data")
    True
    """
    module = sys.modules.get("tensorflow")
    return module if module is not None and hasattr(module, "data") else None


def is_tf_dataset(value):
    """Whether `value` is a `tf.data.Dataset` (never imports TensorFlow).

    Example:

    >>> is_tf_dataset([1, 2, 3])
    False
    """
    tf = imported_tensorflow()
    return tf is not None and isinstance(value, tf.data.Dataset)


def is_tf_tensor(value):
    """Whether `value` is a TensorFlow tensor (never imports TensorFlow).

    Example:

    >>> is_tf_tensor([1.0])
    False
    """
    tf = imported_tensorflow()
    return tf is not None and isinstance(value, tf.Tensor)


def tensorflow_is_backend():
    """Whether TensorFlow is the Keras backend (from Keras, not `import`).

    Example:

    >>> tensorflow_is_backend() == (keras_backend() == "tensorflow")
    True
    """
    return keras_backend() == "tensorflow"
