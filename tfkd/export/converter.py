"""Keras model -> LiteRT (`.tflite`) file, float or quantized.

The converter is TensorFlow's `tf.lite.TFLiteConverter`, fed the
SavedModel that Keras itself writes (`model.export(...,
format="tf_saved_model")`). That route works on Keras 3.12 to 3.15 with
TensorFlow 2.21 for every mode; converting a `tf.function`'s concrete
function directly leaves `READ_VARIABLE` ops in the graph, on which the
int8 calibrator fails ("variable != nullptr was not true").

Quantization modes (TensorFlow's post-training quantization guide):

- `None`: float32 weights and arithmetic, the reference.
- `"float16"`: weights stored as float16 (half the size); the CPU
  dequantizes them to float32, so accuracy barely moves.
- `"dynamic"`: dynamic-range quantization, weights stored as int8 with
  float32 activations quantized on the fly. No data needed. Weight tensors
  under 1,024 elements stay float32, so tiny models barely shrink.
- `"int8"`: full-integer quantization, weights and activations int8, the
  activation ranges calibrated on a representative dataset. Optionally
  int8 input and output (`integer_io=True`) for integer-only accelerators.
"""

import os
import re
import shutil
import sys
import tempfile
import warnings

import keras
import numpy as np

from tfkd import backend_support
from tfkd import model_checks
from tfkd.utils import files
from tfkd.utils import validation

#: The `quantization` values `to_tflite` accepts.
QUANTIZATIONS = (None, "float16", "dynamic", "int8")
#: Representative examples read for int8 calibration, by default. TF's
#: guide suggests 100-500; more only slows the conversion.
DEFAULT_CALIBRATION_EXAMPLES = 200


class ExportWarning(UserWarning):
    """A model exports, but probably not as the user meant.

    Silence it with
    `warnings.filterwarnings("ignore", category=tfkd.export.ExportWarning)`.
    """


def deployable_model(model):
    """The Keras model to export: `model`, or a `Distiller`'s student.

    Args:
        model: A `keras.Model`, or a `tfkd.Distiller`.

    Returns:
        A `keras.Model`.

    Raises:
        TypeError: if `model` is not a `keras.Model`.
    """
    # A Distiller exists only once its module was imported: looked up, not
    # imported, so exporting a plain model never imports the training step.
    distiller_module = sys.modules.get("tfkd.distiller")
    if distiller_module is not None and isinstance(
        model, distiller_module.Distiller
    ):
        return model.student
    if isinstance(model, keras.layers.Layer) and not isinstance(model, keras.Model):
        raise validation.invalid_type(
            "model", "a `keras.Model` (wrap the layer: `keras.Sequential"
            "([keras.Input(shape), layer])`)", model)
    return validation.check_keras_model("model", model)


def input_shape(model):
    """The single input shape of a built model, batch dimension first.

    Args:
        model: A `keras.Model`.

    Returns:
        A tuple such as `(None, 28, 28, 1)`.

    Raises:
        ValueError: if the model has several inputs or no known input
            shape (a subclassed model never called).
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise validation.invalid_value(
            "model", "a built model with a known input shape (a functional "
            "or Sequential model with a `keras.Input`; call a subclassed "
            "model on a batch first)", model.name)
    if len(inputs) != 1:
        raise validation.invalid_value(
            "model", "a model with a single input", f"{model.name} with "
            f"{len(inputs)} inputs")
    return tuple(inputs[0].shape)


def calibration_examples(representative_data, shape, limit):
    """Up to `limit` representative examples as one float32 array.

    Read and checked before the converter starts, so a wrong shape is a
    clear `ValueError` instead of an error deep inside calibration.

    Args:
        representative_data: A `tf.data.Dataset` (batched or not; elements
            `x` or `(x, y, ...)`), an array of shape `(n, *shape[1:])`, or
            a generator or iterable (or a function returning one) of such
            elements or batches. Labels are ignored.
        shape: The model's input shape, batch first (`input_shape`).
        limit: Examples to read at most.

    Returns:
        An array of shape `(count, *shape[1:])`, `1 <= count <= limit`.

    Raises:
        ValueError: if the data is missing, empty, not finite or of the
            wrong shape.
        TypeError: if it is none of the accepted kinds.
    """
    tf = backend_support.require_tensorflow(
        "tfkd.export's TFLite conversion",
        'Keras\'s own model.export(path, format="litert") (Keras 3.15; on '
        "PyTorch through litert-torch)",
    )

    example_shape = tuple(shape[1:])
    if representative_data is None:
        raise validation.invalid_value(
            "representative_data", "examples of the model's input for "
            "quantization='int8' (a tf.data.Dataset, an array of shape "
            f"(n, {', '.join(map(str, example_shape))}) or a generator), about "
            "100-500 training images: int8 calibrates the activation ranges "
            "on them", None)
    if isinstance(representative_data, (str, bytes)):
        raise validation.invalid_type(
            "representative_data", "a tf.data.Dataset, an array or a "
            "generator", representative_data)
    if isinstance(representative_data, tf.data.Dataset):
        elements = representative_data.take(limit).as_numpy_iterator()
    elif isinstance(representative_data, (np.ndarray, tf.Tensor)) or hasattr(
            representative_data, "__array__"):
        elements = [np.asarray(representative_data)]
    elif callable(representative_data):
        elements = representative_data()
    else:
        elements = representative_data
    try:
        iterator = iter(elements)
    except TypeError:
        raise validation.invalid_type(
            "representative_data", "a tf.data.Dataset, an array or a "
            "generator", representative_data) from None
    rows, count = [], 0
    for element in iterator:
        if isinstance(element, dict):
            raise validation.invalid_type(
                "representative_data", "elements `x` or `(x, y)` (a model with "
                "one input)", element)
        if isinstance(element, (tuple, list)):
            element = element[0]  # (x, y[, w]) or TF's [x]: the input only
        x = np.asarray(element, dtype=np.float32)
        if x.shape == example_shape:
            x = x[None]  # one unbatched example
        if len(x.shape) != len(shape) or not _matches(x.shape[1:], example_shape):
            raise validation.invalid_value(
                "representative_data", f"examples of shape {example_shape} "
                f"(batches of shape (n, {', '.join(map(str, example_shape))}))"
                ", the model's input", f"an element of shape {x.shape}")
        rows.append(x[: limit - count])
        count += len(rows[-1])
        if count >= limit:
            break
    if count == 0:
        raise validation.invalid_value(
            "representative_data", "at least one example", "no examples")
    examples = np.concatenate(rows)
    if not np.all(np.isfinite(examples)):
        raise validation.invalid_value(
            "representative_data", "finite values", "NaN or infinite values")
    return examples


def _matches(actual, expected):
    return all(e is None or a == e for a, e in zip(actual, expected))


def to_tflite(model, path, quantization=None, representative_data=None,
              integer_io=False, calibration_examples_limit=None):
    """Converts a Keras model to a LiteRT (`.tflite`) file.

    Everything is checked before the conversion starts; the file is
    written atomically (a crash leaves the old file or none). The exported
    model takes a batch of any size, as the Keras model does.

    A model whose last layer applies a softmax is exported as it is (its
    argmax, hence its accuracy, is that of the logits), with an
    `ExportWarning`: tfkd's students output logits, and the exported
    probabilities will not match them; with `"int8"`, probabilities below
    half a step of 1/256 also round to 0.

    Args:
        model: A `keras.Model` with one input, or a `tfkd.Distiller` (its
            student is exported).
        path: The `.tflite` file to write; its directory is created.
        quantization: `None` (float32), `"float16"`, `"dynamic"` (int8
            weights, float activations) or `"int8"` (full integer,
            calibrated on `representative_data`). Defaults to `None`.
        representative_data: For `"int8"` only, and required there:
            examples of the model's input, as a `tf.data.Dataset` (of `x`
            or `(x, y)`, batched or not), an array `(n, *input_shape)`, or
            a generator (or a function returning one) of such elements.
            The first `calibration_examples_limit` examples are used.
            Defaults to `None`.
        integer_io: With `"int8"`, make the file's input and output int8
            too (the runner `tfkd.export.TFLiteModel` quantizes and
            dequantizes for you). Defaults to `False` (float32 I/O).
        calibration_examples_limit: Representative examples read at most.
            Defaults to `None` (`DEFAULT_CALIBRATION_EXAMPLES`, 200).

    Returns:
        `path`, as a str.

    Raises:
        TypeError: if `model` is not a Keras model, or
            `representative_data` is of no accepted kind.
        ValueError: for an unknown `quantization`, `representative_data`
            missing or of the wrong shape with `"int8"`, given without it,
            or `integer_io` without `"int8"`.
        RuntimeError: if the converter fails (an op LiteRT does not have,
            or has no int8 kernel for), saying which op and what to do.

    Example:

    >>> import os, tempfile, keras, numpy as np
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> path = os.path.join(tempfile.mkdtemp(), "student.tflite")
    >>> to_tflite(student, path, quantization="int8",  # doctest: +SKIP
    ...           representative_data=np.random.rand(64, 8)) == path
    True
    """
    model = deployable_model(model)
    validation.check_choice("quantization", quantization, QUANTIZATIONS)
    if not isinstance(integer_io, bool):
        raise validation.invalid_type("integer_io", "a bool", integer_io)
    if integer_io and quantization != "int8":
        raise validation.invalid_value(
            "integer_io", "False unless quantization='int8' (only a fully "
            "integer model has integer input and output)", integer_io)
    if representative_data is not None and quantization != "int8":
        raise validation.invalid_value(
            "representative_data", "None unless quantization='int8' (only "
            f"full-integer quantization calibrates; quantization={quantization!r}"
            " needs no data)", type(representative_data).__name__)
    limit = DEFAULT_CALIBRATION_EXAMPLES if calibration_examples_limit is None else (
        validation.check_positive_int(
            "calibration_examples_limit", calibration_examples_limit))
    path = os.fspath(path)
    if os.path.isdir(path):
        raise validation.invalid_value("path", "a file path (`.tflite`)", path)
    shape = input_shape(model)
    examples = None
    if quantization == "int8":
        examples = calibration_examples(representative_data, shape, limit)
    layer = model_checks.softmax_output_layer(model)
    if layer is not None:
        warnings.warn(
            f"The last layer of {model.name!r}, {layer.name!r}, applies a "
            "softmax: the exported file outputs probabilities, not the "
            "logits a tfkd student outputs (accuracy is the same). Build "
            "the last layer with activation=None to export logits.",
            ExportWarning, stacklevel=2)
    content = convert(model, quantization, examples, integer_io)
    return files.write_bytes_atomically(path, content)


def convert(model, quantization=None, examples=None, integer_io=False):
    """The `.tflite` flatbuffer of a checked model, as bytes.

    The work of `to_tflite` once its arguments are checked: Keras writes
    a SavedModel to a temporary directory, TensorFlow converts it.

    Args:
        model: A built `keras.Model` with one input.
        quantization: As `to_tflite`. Defaults to `None`.
        examples: For `"int8"`, the calibration array from
            `calibration_examples`. Defaults to `None`.
        integer_io: As `to_tflite`. Defaults to `False`.

    Returns:
        The flatbuffer, `bytes`.

    Raises:
        RuntimeError: if the converter fails (see `to_tflite`).
    """
    tf = backend_support.require_tensorflow(
        "tfkd.export's TFLite conversion",
        'Keras\'s own model.export(path, format="litert") (Keras 3.15; on '
        "PyTorch through litert-torch)",
    )

    directory = tempfile.mkdtemp(prefix="tfkd-export-")
    try:
        model.export(directory, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            def representative_dataset():
                for row in examples:  # (1, *input_shape): one at a time
                    yield [row[None]]

            converter.representative_dataset = representative_dataset
            # Refuse, rather than silently keep float, an op without an
            # int8 kernel.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if integer_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        try:
            return converter.convert()
        except Exception as error:
            raise conversion_error(model, quantization, error) from error
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def conversion_error(model, quantization, error):
    """A `RuntimeError` saying which ops failed and what to do."""
    text = str(error)
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither", text)))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    found = (f"TensorFlow ops LiteRT has no kernel for: {', '.join(ops)}. "
             if ops else f"{type(error).__name__}: {first[:300]}. ")
    advice = ("Replace the layers that use them with standard Keras layers "
              "(Conv2D, Dense, pooling, ReLU, BatchNormalization, ...), or "
              "keep such computation outside the exported model")
    if quantization == "int8":
        advice += ("; if the float export works, an op lacks an int8 kernel: "
                   "try quantization='dynamic' or 'float16'")
    return RuntimeError(
        f"LiteRT conversion of model {model.name!r} failed "
        f"(quantization={quantization!r}). {found}{advice}.")
