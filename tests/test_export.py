"""tfkd.export: Keras -> LiteRT files, run by the LiteRT interpreter.

Real TensorFlow converter, real `ai_edge_litert` interpreter, tiny models.
"""

import os
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tfkd.export import converter
from tfkd.export import runtime

pytest.importorskip("ai_edge_litert", reason="needs the `litert` extra")

INPUT_SHAPE = (12, 12, 1)


def tiny_cnn(seed=0, final_activation=None):
    """Conv -> pool -> dense head, 10 logits; weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(INPUT_SHAPE),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation=final_activation),
    ], name="tiny_cnn")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((200, *INPUT_SHAPE), dtype=np.float32)


# Largest |LiteRT - Keras| logit error allowed, as a share of the Keras
# logits' range on the same images:
# - float32: the same arithmetic in other kernels, rounding only (1e-4).
# - float16: weights rounded to 11 significant bits (~5e-4 relative), the
#   errors of ~300 products add up: 1 %.
# - dynamic: int8 weights (per channel) and activations quantized on the
#   fly at each layer: 5 %.
# - int8: every activation on 256 levels calibrated on these images, the
#   output itself one level in ~256 of its range: 10 %.
TOLERANCE = {None: 1e-4, "float16": 0.01, "dynamic": 0.05, "int8": 0.10}
# Largest file size as a share of the float32 file's: float16 halves the
# weights, int8 quarters them; the flatbuffer's fixed part (~3 KB) stays.
SIZE_RATIO = {None: 1.0, "float16": 0.6, "dynamic": 0.45, "int8": 0.45}
# Which low-precision tensor types each file must (True) or must not hold.
TENSOR_TYPES = {None: {"float16": False, "int8": False},
                "float16": {"float16": True, "int8": False},
                "dynamic": {"float16": False, "int8": True},
                "int8": {"float16": False, "int8": True}}


@pytest.mark.parametrize("quantization", [None, "float16", "dynamic", "int8"])
def test_each_mode_round_trips_through_the_litert_interpreter(
        quantization, images, tmp_path):
    model = tiny_cnn()
    expected = model.predict(images, verbose=0)  # (200, 10)
    path = tfkd.export.to_tflite(
        model, tmp_path / "m.tflite", quantization=quantization,
        representative_data=images[:100] if quantization == "int8" else None)
    assert path == str(tmp_path / "m.tflite") and os.path.getsize(path) > 0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    deployed = tfkd.export.TFLiteModel(path)
    assert deployed.runtime == runtime.LITERT
    assert deployed.input_dtype == np.float32
    outputs = deployed.predict(images, batch_size=64)  # a ragged last batch
    assert outputs.shape == expected.shape and outputs.dtype == np.float32
    error = np.abs(outputs - expected).max() / np.ptp(expected)
    assert error <= TOLERANCE[quantization], error
    assert np.mean(outputs.argmax(-1) == expected.argmax(-1)) >= 0.9
    reference = tfkd.export.to_tflite(model, tmp_path / "float32.tflite")
    ratio = deployed.size_bytes / os.path.getsize(reference)
    assert ratio <= SIZE_RATIO[quantization], ratio
    types = deployed.tensor_types()
    for dtype, present in TENSOR_TYPES[quantization].items():
        assert (dtype in types) == present, (dtype, types)
    single = deployed(images[:1])  # batch 1 and batch 64 agree
    np.testing.assert_allclose(single, outputs[:1], atol=1e-5)


def test_int8_with_integer_io_quantizes_inputs_and_dequantizes_outputs(
        images, tmp_path):
    model = tiny_cnn()
    expected = model.predict(images, verbose=0)
    path = tfkd.export.to_tflite(
        model, tmp_path / "int8io.tflite", quantization="int8",
        representative_data=images[:100], integer_io=True)
    deployed = tfkd.export.TFLiteModel(path)
    assert deployed.input_dtype == np.int8 and deployed.output_dtype == np.int8
    scale, zero_point = deployed.input_quantization
    # Inputs calibrated on [0, 1): the int8 range covers it.
    assert 0 < scale < 1.1 / 255 and zero_point == -128
    np.testing.assert_array_equal(
        deployed.quantize_input(np.array([0.0, 1.0, 5.0])), [-128, 127, 127])
    outputs = deployed.predict(images)
    assert outputs.dtype == np.float32
    error = np.abs(outputs - expected).max() / np.ptp(expected)
    assert error <= TOLERANCE["int8"], error
    # The raw int8 output, dequantized with the file's scale/zero point.
    raw = deployed._interpreter(1)
    raw.set_tensor(raw.get_input_details()[0]["index"],
                   deployed.quantize_input(images[:1]))
    raw.invoke()
    q = raw.get_tensor(raw.get_output_details()[0]["index"])
    assert q.dtype == np.int8
    out_scale, out_zero = deployed.output_quantization
    np.testing.assert_allclose((q.astype(np.float32) - out_zero) * out_scale,
                               outputs[:1], rtol=1e-6)


@pytest.mark.parametrize("kind", ["dataset", "batched_dataset", "generator",
                                  "function"])
def test_representative_data_kinds_give_the_same_calibration(kind, images):
    import tensorflow as tf

    labels = np.zeros(len(images), np.int64)
    data = {
        "dataset": tf.data.Dataset.from_tensor_slices(images),
        "batched_dataset": tf.data.Dataset.from_tensor_slices(
            (images, labels)).batch(16),
        "generator": ([row[None]] for row in images),
        "function": lambda: iter(images),
    }[kind]
    examples = converter.calibration_examples(data, (None, *INPUT_SHAPE), 50)
    np.testing.assert_array_equal(examples, images[:50])


def test_a_distiller_exports_its_student(images, tmp_path):
    student = tiny_cnn(seed=1)
    teacher = tiny_cnn(seed=2)
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    path = tfkd.export.to_tflite(distiller, tmp_path / "student.tflite")
    outputs = tfkd.export.TFLiteModel(path).predict(images[:8])
    np.testing.assert_allclose(outputs, student.predict(images[:8], verbose=0),
                               atol=1e-4)


def test_bad_arguments_are_refused_before_converting(images, tmp_path):
    model = tiny_cnn()
    target = tmp_path / "never.tflite"
    cases = [
        (dict(model=keras.layers.Dense(3)), TypeError, "`model`.*keras.Model"),
        (dict(model="student.keras"), TypeError, "`model`.*keras.Model"),
        (dict(quantization="int4"), ValueError, "`quantization`.*'int8'"),
        (dict(quantization="int8"), ValueError,
         r"`representative_data`.*Received: representative_data=None"),
        (dict(quantization="int8", representative_data=images[:, :6]),
         ValueError, r"shape \(12, 12, 1\).*\(200, 6, 12, 1\)"),
        (dict(quantization="int8", representative_data=np.zeros((0, 12, 12, 1))),
         ValueError, "at least one example"),
        (dict(quantization="int8",
              representative_data=np.full((4, 12, 12, 1), np.nan)),
         ValueError, "finite"),
        (dict(quantization="int8", representative_data=42), TypeError,
         "`representative_data`"),
        (dict(quantization="float16", representative_data=images), ValueError,
         "`representative_data`.*None unless quantization='int8'"),
        (dict(integer_io=True), ValueError, "`integer_io`"),
        (dict(path=tmp_path), ValueError, "`path`"),
    ]
    for kwargs, error, match in cases:
        arguments = {"model": model, "path": target, **kwargs}
        with pytest.raises(error, match=match):
            tfkd.export.to_tflite(**arguments)
    assert not target.exists()


def test_a_subclassed_model_never_called_is_refused(tmp_path):
    class Unbuilt(keras.Model):
        def __init__(self):
            super().__init__()
            self.head = keras.layers.Dense(3)

        def call(self, x):
            return self.head(x)

    with pytest.raises(ValueError, match="known input shape"):
        tfkd.export.to_tflite(Unbuilt(), tmp_path / "m.tflite")


def test_a_softmax_output_exports_with_a_warning(images, tmp_path):
    model = tiny_cnn(final_activation="softmax")
    with pytest.warns(tfkd.export.ExportWarning, match="softmax.*logits"):
        path = tfkd.export.to_tflite(model, tmp_path / "probs.tflite")
    outputs = tfkd.export.TFLiteModel(path).predict(images[:4])
    np.testing.assert_allclose(outputs.sum(-1), 1.0, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfkd.export.ExportWarning)
        tfkd.export.to_tflite(tiny_cnn(), tmp_path / "logits.tflite")


def test_an_op_litert_lacks_is_named_with_what_to_do(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda t: keras.ops.erfinv(t))(inputs)
    model = keras.Model(inputs, outputs, name="has_erfinv")
    with pytest.raises(RuntimeError, match=r"'has_erfinv'.*Erfinv.*Replace the "
                       r"layers") as caught:
        tfkd.export.to_tflite(model, tmp_path / "m.tflite")
    assert caught.value.__cause__ is not None
    assert not (tmp_path / "m.tflite").exists()


def test_evaluate_tflite_reports_accuracy_size_and_latency(images, tmp_path):
    import tensorflow as tf

    model = tiny_cnn()
    labels = model.predict(images, verbose=0).argmax(-1)
    labels[:20] = (labels[:20] + 1) % 10  # 20 of 200 wrong on purpose
    path = tfkd.export.to_tflite(model, tmp_path / "m.tflite")
    report = tfkd.export.evaluate_tflite(path, (images, labels),
                                         latency_repeats=20)
    assert report["accuracy"] == pytest.approx(0.9)
    assert report["examples"] == 200 and report["runtime"] == runtime.LITERT
    assert report["size_bytes"] == os.path.getsize(path)
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    again = tfkd.export.evaluate_tflite(path, dataset, latency_repeats=0)
    assert again["accuracy"] == report["accuracy"] and again["latency_ms"] is None
    with pytest.raises(ValueError, match="as many labels as images"):
        tfkd.export.evaluate_tflite(path, (images, labels[:5]))
    with pytest.raises(TypeError, match="`dataset_or_arrays`"):
        tfkd.export.evaluate_tflite(path, images)
    with pytest.raises(FileNotFoundError):
        tfkd.export.TFLiteModel(tmp_path / "missing.tflite")


def test_must_show_fashion_mnist_int8_keeps_accuracy_at_a_third_of_the_size(
        fashion_mnist, tmp_path):
    """Issue 16: int8 within 1.5 points of Keras, file <= 0.35x float32.

    A `student_cnn` (width 8, ~27 k parameters) trained 3 epochs on 2,000
    training images; both files run by the LiteRT interpreter on the
    first 1,000 test images. About 15 s on 2 CPU cores.
    """
    from benchmarks import models

    (x_train, y_train), (x_test, y_test) = fashion_mnist
    rows = tfkd.data.balanced_subset(y_train, 2_000, seed=0)
    x_train = x_train[rows, ..., None].astype("float32") / 255.0
    y_train = y_train[rows]
    x_test = x_test[:1_000, ..., None].astype("float32") / 255.0
    y_test = y_test[:1_000]
    keras.utils.set_random_seed(0)
    student = models.student_cnn((28, 28, 1), 10)
    student.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    student.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
    keras_accuracy = float(np.mean(
        student.predict(x_test, verbose=0).argmax(-1) == y_test))
    float_path = tfkd.export.to_tflite(student, tmp_path / "float32.tflite")
    int8_path = tfkd.export.to_tflite(
        student, tmp_path / "int8.tflite", quantization="int8",
        representative_data=x_train[:200])
    float_report = tfkd.export.evaluate_tflite(float_path, (x_test, y_test),
                                               latency_repeats=0)
    int8_report = tfkd.export.evaluate_tflite(int8_path, (x_test, y_test),
                                              latency_repeats=0)
    ratio = int8_report["size_bytes"] / float_report["size_bytes"]
    print(f"\nMust show: Keras {keras_accuracy:.4f}, float32 .tflite "
          f"{float_report['accuracy']:.4f} ({float_report['size_bytes']} B), "
          f"int8 .tflite {int8_report['accuracy']:.4f} "
          f"({int8_report['size_bytes']} B, {ratio:.3f}x)")
    assert keras_accuracy > 0.6  # trained, not chance (0.1)
    assert abs(float_report["accuracy"] - keras_accuracy) < 1e-3
    assert abs(int8_report["accuracy"] - keras_accuracy) <= 0.015
    assert ratio <= 0.35


def test_without_ai_edge_litert_tf_lite_runs_the_file_with_a_warning(tmp_path):
    import subprocess
    import sys

    path = tfkd.export.to_tflite(tiny_cnn(), tmp_path / "m.tflite")
    code = (
        "import sys, warnings\n"
        "sys.modules['ai_edge_litert'] = None  # as if not installed\n"
        "import numpy as np, tfkd\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    model = tfkd.export.TFLiteModel({path!r})\n"
        "print(model.runtime)\n"
        "print(any('tfkd[litert]' in str(w.message) for w in caught))\n"
        "print(model.predict(np.zeros((3, 12, 12, 1))).shape)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        check=True, cwd=root, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    ).stdout.strip().splitlines()
    assert output[-3:] == [runtime.TF_LITE, "True", "(3, 10)"]
