"""Run and measure an exported `.tflite` file through the LiteRT interpreter.

What ships is the file, not the Keras model: `TFLiteModel` runs the file
with `ai_edge_litert.interpreter.Interpreter` (the `litert` extra) and
`evaluate_tflite` reports its accuracy and batch-1 latency. Quantized
inputs and outputs (an int8 file exported with `integer_io=True`) are
quantized and dequantized with the file's own scale and zero point, so
`predict` always takes and returns float32.

Without ai-edge-litert, `tf.lite.Interpreter` runs the file instead, with
a warning: it is deprecated in TensorFlow 2.20+ and will be removed.
"""

import os
import time
import warnings

import numpy as np

from tfkd import backend_support
from tfkd.utils import validation

#: What `TFLiteModel.runtime` says for each interpreter.
LITERT = "ai_edge_litert"
TF_LITE = "tf.lite (deprecated)"


def interpreter_class():
    """LiteRT's `Interpreter` class, or TF's deprecated one with a warning.

    Returns:
        `(class, runtime name)`, the name `LITERT` or `TF_LITE`.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        tf = backend_support.require_tensorflow(
            "running a .tflite file without ai-edge-litert",
            "the LiteRT runtime: pip install 'tfkd[litert]'",
        )
        warnings.warn(
            "ai-edge-litert is not installed, so the file runs on "
            "`tf.lite.Interpreter`, deprecated since TensorFlow 2.20. "
            "Install the LiteRT runtime: `pip install 'tfkd[litert]'`.",
            DeprecationWarning, stacklevel=3)
        return tf.lite.Interpreter, TF_LITE
    return Interpreter, LITERT


class TFLiteModel:
    """A `.tflite` file, run by the LiteRT interpreter like a Keras model.

    Args:
        path: The `.tflite` file (from `tfkd.export.to_tflite`).
        num_threads: Interpreter threads. Defaults to `None` (the
            interpreter's default); latency on a shared machine is steadier
            with `1`.

    Attributes:
        runtime: `"ai_edge_litert"`, or `"tf.lite (deprecated)"` when
            ai-edge-litert is not installed.
        input_dtype: The file's input dtype (`numpy.float32`, or
            `numpy.int8` for an int8 file with integer I/O).
        input_quantization / output_quantization: `(scale, zero_point)`,
            `(0.0, 0)` for float tensors.
        size_bytes: Size of the file.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a model with one input and one
            output the interpreter can load.

    Example:

    >>> model = TFLiteModel("student.tflite")  # doctest: +SKIP
    >>> logits = model.predict(x_test)  # doctest: +SKIP
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No .tflite file at {path!r}.")
        if num_threads is not None:
            num_threads = validation.check_positive_int("num_threads", num_threads)
        self.path = path
        self.num_threads = num_threads
        self.size_bytes = os.path.getsize(path)
        self._class, self.runtime = interpreter_class()
        self._interpreters = {}  # batch size -> allocated interpreter
        interpreter = self._interpreter(1)
        inputs, outputs = (interpreter.get_input_details(),
                           interpreter.get_output_details())
        if len(inputs) != 1 or len(outputs) != 1:
            raise validation.invalid_value(
                "path", "a model with one input and one output",
                f"{path} with {len(inputs)} inputs and {len(outputs)} outputs")
        self.input_dtype = np.dtype(inputs[0]["dtype"])
        self.output_dtype = np.dtype(outputs[0]["dtype"])
        self.input_quantization = tuple(inputs[0]["quantization"])
        self.output_quantization = tuple(outputs[0]["quantization"])
        #: The input shape the file declares, batch first (`-1`: any).
        self.input_shape = tuple(int(d) for d in inputs[0]["shape_signature"])

    def _interpreter(self, batch):
        if batch not in self._interpreters:
            try:
                interpreter = self._class(model_path=self.path,
                                          num_threads=self.num_threads)
            except (ValueError, RuntimeError) as error:
                raise validation.invalid_value(
                    "path", "a LiteRT (.tflite) model file",
                    f"{self.path} ({error})") from None
            details = interpreter.get_input_details()[0]
            if batch != details["shape"][0]:
                shape = list(details["shape"])
                shape[0] = batch
                interpreter.resize_tensor_input(details["index"], shape)
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return self._interpreters[batch]

    def tensor_types(self):
        """The dtypes of the file's tensors (weights included), by name.

        What quantization did: float16 weights show as `"float16"`, int8
        weights and activations as `"int8"`.

        Returns:
            A sorted list such as `["float32", "int32", "int8"]`.
        """
        details = self._interpreter(1).get_tensor_details()
        return sorted({np.dtype(d["dtype"]).name for d in details})

    def quantize_input(self, x):
        """`x` (float) in the file's input dtype, quantized if it is integer."""
        x = np.asarray(x, dtype=np.float32)
        if not np.issubdtype(self.input_dtype, np.integer):
            return x.astype(self.input_dtype)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        # q = round(x / scale) + zero_point, saturated to the int range.
        q = np.round(x / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def dequantize_output(self, y):
        """The file's output `y` as float32 (dequantized if it is integer)."""
        if not np.issubdtype(self.output_dtype, np.integer):
            return np.asarray(y, dtype=np.float32)
        scale, zero_point = self.output_quantization
        return ((np.asarray(y, np.float32) - zero_point) * scale).astype(np.float32)

    def __call__(self, x):
        """Runs one batch `x` (float, batch first); returns float32 outputs."""
        x = self.quantize_input(x)
        interpreter = self._interpreter(len(x))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return self.dequantize_output(y)

    def predict(self, x, batch_size=256):
        """Outputs on all of `x`, in batches of `batch_size`.

        Args:
            x: Float inputs, shape `(n, *input_shape)`.
            batch_size: Rows per interpreter call. Defaults to `256`.

        Returns:
            A float32 array `(n, *output_shape)`.
        """
        batch_size = validation.check_positive_int("batch_size", batch_size)
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            raise validation.invalid_value("x", "at least one example", x.shape)
        # A full batch and at most one ragged last batch: two interpreters.
        return np.concatenate([self(x[i:i + batch_size])
                               for i in range(0, len(x), batch_size)])

    def latency_ms(self, example, repeats=200, warmup=10):
        """Batch-1 latency percentiles of one `invoke`, in milliseconds.

        The input is set once (quantized beforehand); the timed call is
        `invoke` plus reading the output, as an app calls it.

        Args:
            example: One input, shape `(1, *input_shape)` or
                `input_shape`.
            repeats: Timed calls. Defaults to `200`.
            warmup: Untimed calls first. Defaults to `10`.

        Returns:
            `{"p50", "p95", "times"}`: percentiles, and every time (ms).
        """
        repeats = validation.check_positive_int("repeats", repeats)
        times = self.time_calls(example, repeats, warmup)
        return {"p50": float(np.percentile(times, 50)),
                "p95": float(np.percentile(times, 95)), "times": times}

    def time_calls(self, example, calls, warmup=0):
        """Milliseconds of each of `calls` batch-1 invokes (after `warmup`)."""
        example = np.asarray(example, dtype=np.float32)
        if example.ndim == len(self.input_shape) - 1:
            example = example[None]
        interpreter = self._interpreter(1)
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        interpreter.set_tensor(input_index, self.quantize_input(example[:1]))
        for _ in range(warmup):
            interpreter.invoke()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            interpreter.invoke()
            interpreter.get_tensor(output_index)
            times.append((time.perf_counter() - start) * 1000.0)
        return times


def _arrays(data, argument):
    if backend_support.is_tf_dataset(data):
        images, labels = [], []
        for element in data.as_numpy_iterator():
            if not isinstance(element, tuple) or len(element) < 2:
                raise validation.invalid_value(
                    argument, "a dataset of (x, y) batches", data.element_spec)
            images.append(np.asarray(element[0]))
            labels.append(np.asarray(element[1]))
        if not images:
            raise validation.invalid_value(argument, "at least one batch", data)
        if images[0].ndim == 0 or labels[0].ndim == 0:
            raise validation.invalid_value(
                argument, "a batched dataset (`.batch(n)`)", data.element_spec)
        return np.concatenate(images), np.concatenate(labels)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise validation.invalid_type(
        argument, "an `(x, y)` tuple of arrays or a tf.data.Dataset of "
        "`(x, y)` batches", data)


def evaluate_tflite(path, dataset_or_arrays, batch_size=256, latency_repeats=200,
                    num_threads=None):
    """Accuracy and batch-1 latency of a `.tflite` classifier, as shipped.

    The file runs through the LiteRT interpreter (`TFLiteModel`), not the
    Keras model it came from, so quantization error shows in the numbers.

    Args:
        path: The `.tflite` file.
        dataset_or_arrays: `(x, y)` with integer labels `y`, or a batched
            `tf.data.Dataset` of `(x, y)`.
        batch_size: Rows per interpreter call for accuracy. Defaults to
            `256`.
        latency_repeats: Timed batch-1 calls (on the first example), `0`
            to skip timing. Defaults to `200`.
        num_threads: Interpreter threads. Defaults to `None`.

    Returns:
        A dict: `accuracy`, `examples`, `size_bytes`, `runtime`, and
        `latency_ms` (`{"p50", "p95"}`, or `None` when not timed).

    Raises:
        ValueError: if the labels and images differ in number.

    Example:

    >>> evaluate_tflite("student.tflite", (x_test, y_test))  # doctest: +SKIP
    {'accuracy': 0.87, 'examples': 1000, 'size_bytes': 31552, ...}
    """
    x, y = _arrays(dataset_or_arrays, "dataset_or_arrays")
    if len(x) != len(y):
        raise validation.invalid_value(
            "dataset_or_arrays", "as many labels as images",
            f"{len(x)} images and {len(y)} labels")
    if not isinstance(latency_repeats, int) or latency_repeats < 0:
        raise validation.invalid_value("latency_repeats", "an int >= 0",
                                       latency_repeats)
    model = TFLiteModel(path, num_threads=num_threads)
    predicted = model.predict(x, batch_size=batch_size).argmax(axis=-1)
    labels = np.asarray(y).reshape(-1)
    latency = None
    if latency_repeats:
        timed = model.latency_ms(x[:1], repeats=latency_repeats)
        latency = {"p50": timed["p50"], "p95": timed["p95"]}
    return {"accuracy": float(np.mean(predicted == labels)),
            "examples": int(len(labels)), "size_bytes": model.size_bytes,
            "runtime": model.runtime, "latency_ms": latency}
