"""Tests for tfkd/teachers/adapters.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.teachers import as_teacher
from tfkd.teachers import fine_tune


def _images(count=4, seed=0):
    return np.random.default_rng(seed).random((count, 8, 8, 1)).astype(
        "float32")


def _body():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return inputs, x


def _softmax(logits):
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


def test_final_softmax_layer_is_dropped():
    inputs, x = _body()
    logits = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, keras.layers.Softmax(name="probs")(logits))
    teacher = as_teacher(model)
    assert teacher.layers[-1].name == "dense"
    images = _images()
    np.testing.assert_allclose(_softmax(teacher(images)), model(images),
                               rtol=1e-5, atol=1e-6)
    assert teacher.get_layer("conv") is model.get_layer("conv")  # shared


def test_final_softmax_activation_layer_is_dropped():
    inputs, x = _body()
    x = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax")(x))
    assert as_teacher(model).layers[-1].name == "dense"


def test_dense_with_softmax_becomes_linear_with_same_weights():
    inputs, x = _body()
    model = keras.Model(
        inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    teacher = as_teacher(model, name="t")
    assert teacher.name == "t"
    assert teacher.layers[-1].get_config()["activation"] == "linear"
    images = _images()
    logits = keras.ops.convert_to_numpy(teacher(images))
    assert not np.allclose(logits.sum(axis=-1), 1.0)
    np.testing.assert_allclose(_softmax(logits), model(images), rtol=1e-5,
                               atol=1e-6)


def test_logits_model_is_kept():
    inputs, x = _body()
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(x))
    teacher = as_teacher(model)
    images = _images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(teacher(images)),
                                  keras.ops.convert_to_numpy(model(images)))


def test_sequential_with_softmax():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3), keras.layers.Softmax()])
    assert isinstance(as_teacher(model).layers[-1], keras.layers.Dense)


def test_adapted_model_fine_tunes():
    inputs, x = _body()
    x = keras.layers.Dense(4, name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Softmax()(
        keras.layers.Dense(3, name="dense")(x)))
    teacher = as_teacher(model)
    ds = tf.data.Dataset.from_tensor_slices(
        (_images(8), np.arange(8) % 3)).batch(4)
    history = fine_tune(teacher, ds, epochs=(1, 1), unfreeze="all",
                        schedule="constant", verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_sigmoid_output_is_rejected():
    inputs, x = _body()
    model = keras.Model(
        inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    with pytest.raises(ValueError, match="sigmoid"):
        as_teacher(model)


def test_non_model_is_rejected():
    with pytest.raises(TypeError, match="keras.Model"):
        as_teacher(keras.layers.Dense(3))


def test_multiple_outputs_are_rejected():
    inputs, x = _body()
    model = keras.Model(inputs, [keras.layers.Dense(3)(x),
                                 keras.layers.Dense(2)(x)])
    with pytest.raises(ValueError, match="single output"):
        as_teacher(model)


def test_autokeras_export_becomes_a_teacher(tmp_path):
    autokeras = pytest.importorskip("autokeras")
    rng = np.random.default_rng(0)
    images = rng.random((16, 28, 28, 1)).astype("float32")  # tfkd's [0, 1]
    labels = rng.integers(0, 3, 16)
    # The smallest real search: one trial of one small conv block.
    node = autokeras.ImageInput()
    out = autokeras.ConvBlock(kernel_size=3, num_blocks=1, num_layers=1,
                              filters=4, max_pooling=True, separable=False,
                              dropout=0.0)(node)
    out = autokeras.ClassificationHead(num_classes=3, dropout=0.0)(out)
    auto_model = autokeras.AutoModel(inputs=node, outputs=out, max_trials=1,
                                     overwrite=True, seed=0,
                                     directory=str(tmp_path))
    auto_model.fit(images, labels, epochs=1, batch_size=16, verbose=0,
                   validation_data=(images, labels))
    exported = auto_model.export_model()
    assert isinstance(exported.layers[-1], keras.layers.Softmax)
    teacher = as_teacher(exported)
    logits = keras.ops.convert_to_numpy(teacher(images[:4]))
    assert logits.shape == (4, 3)
    np.testing.assert_allclose(
        _softmax(logits), keras.ops.convert_to_numpy(exported(images[:4])),
        rtol=1e-5, atol=1e-6)
