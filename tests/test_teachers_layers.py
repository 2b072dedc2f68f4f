"""Tests for tfkd/teachers/layers.py."""

import keras
import numpy as np
import pytest

from tfkd.teachers import layers


def test_grayscale_to_rgb_repeats_the_channel():
    images = np.random.default_rng(0).random((2, 5, 4, 1)).astype("float32")
    rgb = keras.ops.convert_to_numpy(layers.GrayscaleToRGB()(images))
    assert rgb.shape == (2, 5, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], images[..., 0])


def test_grayscale_to_rgb_rejects_rgb_input():
    with pytest.raises(ValueError, match="Expected 1 channel"):
        layers.GrayscaleToRGB()(np.zeros((1, 4, 4, 3), "float32"))


def test_grayscale_to_rgb_symbolic_shape():
    outputs = layers.GrayscaleToRGB()(keras.Input((28, 28, 1)))
    assert tuple(outputs.shape) == (None, 28, 28, 3)


@pytest.mark.parametrize(
    "family, module",
    [
        ("resnet50", keras.applications.resnet50),         # caffe: BGR, mean
        ("resnet50v2", keras.applications.resnet_v2),      # tf: [-1, 1]
        ("densenet121", keras.applications.densenet),      # torch: mean/std
        ("efficientnetb0", keras.applications.efficientnet),  # in the model
    ],
)
def test_application_preprocessing_matches_family_function(family, module):
    rgb = np.random.default_rng(1).uniform(0, 255, (2, 3, 3, 3))
    rgb = rgb.astype("float32")
    expected = module.preprocess_input(rgb.copy())
    actual = layers.ApplicationPreprocessing(family)(rgb)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual), expected, rtol=1e-6, atol=1e-4
    )


def test_application_preprocessing_caffe_differs_from_identity():
    # Guards the test above against a layer that returns its input.
    rgb = np.full((1, 1, 1, 3), 200.0, "float32")
    out = keras.ops.convert_to_numpy(
        layers.ApplicationPreprocessing("resnet50")(rgb))
    np.testing.assert_allclose(out[0, 0, 0], [200 - 103.939, 200 - 116.779,
                                              200 - 123.68], rtol=1e-5)


def test_application_preprocessing_config_round_trip():
    layer = layers.ApplicationPreprocessing("ResNet_50", name="pre")
    config = layer.get_config()
    assert config["family"] == "resnet50"
    clone = layers.ApplicationPreprocessing.from_config(config)
    assert clone.family == "resnet50" and clone.name == "pre"
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, layers.ApplicationPreprocessing)


def test_application_preprocessing_unknown_family():
    with pytest.raises(ValueError, match="Expected one of"):
        layers.ApplicationPreprocessing("alexnet")


def _model_with_batchnorm():
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(name="bn")(
        keras.layers.Dropout(0.5, name="drop")(inputs))
    return keras.Model(inputs, outputs, name="inner")


def test_inference_mode_keeps_batchnorm_statistics_and_disables_dropout():
    inner = _model_with_batchnorm()
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, layers.InferenceMode(inner)(inputs))
    batch = np.full((8, 4), 5.0, "float32")
    out = keras.ops.convert_to_numpy(outer(batch, training=True))
    bn = inner.get_layer("bn")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(4))
    # Dropout off and moving statistics (0, 1) used: 5 / sqrt(1 + eps).
    np.testing.assert_allclose(out, np.full((8, 4), 5.0), rtol=1e-3)


def test_inference_mode_round_trips_through_keras_file(tmp_path):
    inner = _model_with_batchnorm()
    inputs = keras.Input((4,))
    wrapped = layers.InferenceMode(inner, name="wrap")(inputs)
    outer = keras.Model(inputs, wrapped)
    inner.get_layer("bn").moving_mean.assign(np.arange(4, dtype="float32"))
    path = str(tmp_path / "outer.keras")
    outer.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.get_layer("wrap"), layers.InferenceMode)
    batch = np.random.default_rng(0).random((3, 4)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(batch, training=True)),
        keras.ops.convert_to_numpy(outer(batch, training=True)), rtol=1e-6)
