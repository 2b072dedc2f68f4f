"""Tests for tfkd/teachers/builder.py."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.teachers import InferenceMode
from tfkd.teachers.layer_groups import all_sublayers
from tfkd.teachers import build
from tfkd.teachers import find_backbone
from tfkd.teachers import layer_groups
from tfkd.teachers import list_families
from tfkd.teachers import registry
from tfkd.teachers import resolve_image_size

# Stages per family (one layer group each, plus the head): the rows of each
# architecture's table, see stage_rules.py.
EXPECTED_STAGES = {
    "mobilenetv2": 7, "mobilenetv3small": 5, "mobilenetv3large": 6,
    "efficientnetb0": 7, "efficientnetv2b0": 6, "resnet50": 5,
    "resnet50v2": 5, "densenet121": 5, "convnexttiny": 4, "inceptionv3": 3,
}


def test_expected_stages_cover_the_registry():
    # Built-in families only: other tests and docstring examples register
    # families of their own.
    assert set(EXPECTED_STAGES) == set(registry.BUILTIN_FAMILIES)
    assert set(registry.BUILTIN_FAMILIES) <= set(list_families())


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("family", sorted(EXPECTED_STAGES))
def test_every_family_builds_and_outputs_logits(family, input_shape):
    teacher = build(family, num_classes=7, input_shape=input_shape,
                    weights=None)
    images = np.random.default_rng(0).random((2,) + input_shape)
    logits = keras.ops.convert_to_numpy(
        teacher(images.astype("float32"), training=False))
    assert logits.shape == (2, 7)
    assert np.all(np.isfinite(logits))
    head = teacher.get_layer("logits")
    assert head.get_config()["activation"] == "linear"  # logits, no softmax
    # The backbone starts frozen; only the head trains in stage 1.
    assert [w.path for w in teacher.trainable_weights] == [
        "logits/kernel", "logits/bias"]
    groups = layer_groups(teacher)
    assert groups[0] == [head]
    assert len(groups) == 1 + EXPECTED_STAGES[family]


def test_input_adaptation_layers_and_order():
    teacher = build("resnet50", 3, (28, 28, 1), weights=None)
    names = [layer.name for layer in teacher.layers]
    assert names[:5] == ["images", "grayscale_to_rgb", "resize", "to_0_255",
                         "resnet50_preprocess"]
    assert names[-4:] == ["backbone", "avg_pool", "head_dropout", "logits"]
    assert teacher.get_layer("resize").get_config()["height"] == 32


def test_preprocessed_images_match_manual_pipeline():
    teacher = build("resnet50", 3, (28, 28, 1), weights=None)
    preprocessed = keras.Model(
        teacher.input, teacher.get_layer("resnet50_preprocess").output)
    images = np.random.default_rng(1).random((2, 28, 28, 1)).astype("float32")
    rgb = np.repeat(images, 3, axis=-1)
    resized = tf.image.resize(rgb, (32, 32), method="bilinear").numpy()
    expected = keras.applications.resnet50.preprocess_input(resized * 255.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(preprocessed(images)), expected,
        rtol=1e-5, atol=1e-3)


def test_rgb_input_at_minimum_size_needs_no_resize_or_gray_layer():
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None)
    names = {layer.name for layer in teacher.layers}
    assert "resize" not in names and "grayscale_to_rgb" not in names


def _batchnorm_statistics(backbone):
    return [v for layer in backbone.layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def test_backbone_batchnorm_stays_in_inference_mode():
    # What `weights="imagenet"` or a weights file gives by default.
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
                    inference_mode=True)
    backbone = find_backbone(teacher)
    assert isinstance(teacher.get_layer("backbone"), InferenceMode)
    assert teacher.get_layer("backbone").layer is backbone
    backbone.trainable = True  # even unfrozen ...
    bn = [layer for layer in backbone.layers
          if isinstance(layer, keras.layers.BatchNormalization)]
    statistics = [v for layer in bn
                  for v in (layer.moving_mean, layer.moving_variance)]
    before = [v.numpy().copy() for v in statistics]
    images = np.random.default_rng(2).random((4, 32, 32, 3)).astype("float32")
    teacher(images, training=True)  # ... and called in training mode
    after = [v.numpy() for v in statistics]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_random_backbone_learns_its_statistics_by_default():
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None)
    backbone = find_backbone(teacher)
    assert teacher.get_layer("backbone") is backbone  # not wrapped
    backbone.trainable = True
    statistics = _batchnorm_statistics(backbone)
    before = [v.numpy().copy() for v in statistics]
    images = np.random.default_rng(2).random((4, 32, 32, 3)).astype("float32")
    teacher(images, training=True)
    assert any(not np.array_equal(v.numpy(), old)
               for v, old in zip(statistics, before))


def _batchnorm_momenta(model):
    return {layer.momentum for layer in all_sublayers(model)
            if isinstance(layer, keras.layers.BatchNormalization)}


def test_random_backbone_gets_fast_batchnorm_momentum():
    # keras.applications' MobileNetV3 uses 0.999: validation stays at chance
    # for thousands of steps when training from scratch.
    family = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
                   batchnorm_momentum="family")
    assert _batchnorm_momenta(family) == {0.999}
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None)
    assert _batchnorm_momenta(teacher) == {0.9}
    explicit = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
                     batchnorm_momentum=0.95)
    assert _batchnorm_momenta(explicit) == {0.95}
    # The momentum really drives the update: from moving_mean 0, one training
    # call on the same images leaves (1 - momentum) * the batch mean, 100x
    # more with 0.9 than with 0.999.
    teacher.set_weights(family.get_weights())
    images = np.random.default_rng(4).random((8, 32, 32, 3)).astype("float32")
    moved = []
    for model in (teacher, family):
        find_backbone(model).trainable = True
        model(images, training=True)
        first = next(layer for layer in all_sublayers(find_backbone(model))
                     if isinstance(layer, keras.layers.BatchNormalization))
        moved.append(first.moving_mean.numpy())
    assert np.abs(moved[1]).max() > 0
    np.testing.assert_allclose(moved[0], 100 * moved[1], rtol=1e-3, atol=1e-7)


def test_saves_to_keras_and_loads_back(tmp_path):
    teacher = build("mobilenetv3small", 4, (28, 28, 1), weights=None)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    restored = keras.saving.load_model(path)  # safe_mode: no Lambda layers
    images = np.random.default_rng(3).random((3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(images)),
        keras.ops.convert_to_numpy(teacher(images)), rtol=1e-6, atol=1e-6)
    assert [layer.name for layer in restored.layers] == [
        layer.name for layer in teacher.layers]
    assert _batchnorm_momenta(restored) == {0.9}


def test_dropout_zero_omits_layer_and_name_is_used():
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
                    dropout=0.0, name="my_teacher")
    assert teacher.name == "my_teacher"
    assert "head_dropout" not in {layer.name for layer in teacher.layers}


def test_backbone_kwargs_reach_the_constructor():
    teacher = build("mobilenetv3small", 3, (32, 32, 3), weights=None,
                    backbone_kwargs={"alpha": 0.75})
    small = build("mobilenetv3small", 3, (32, 32, 3), weights=None)
    assert teacher.count_params() < small.count_params()


INVALID_BUILD_ARGUMENTS = [
    ({"family": "vgg99"}, "Expected one of"),
    ({"num_classes": 1}, "num_classes"),
    ({"input_shape": (28, 28, 2)}, "input_shape"),
    ({"input_shape": (28, 28)}, "input_shape"),
    ({"image_size": 16}, "at least 32"),
    ({"image_size": "huge"}, "image_size"),
    ({"dropout": 1.0}, "dropout"),
    ({"inference_mode": "yes"}, "inference_mode"),
    ({"batchnorm_momentum": 1.0}, "batchnorm_momentum"),
    ({"batchnorm_momentum": "fast"}, "batchnorm_momentum"),
    ({"batchnorm_momentum": True}, "batchnorm_momentum"),
    ({"backbone_kwargs": {"include_top": True}}, "include_top"),
    ({"weights": "missing.weights.h5"}, "No file exists"),
]


INVALID_BUILD_TYPES = [
    ({"num_classes": 2.0}, "Invalid type for argument `num_classes`"),
]


@pytest.mark.parametrize("cases, error_class", [
    (INVALID_BUILD_ARGUMENTS, ValueError),
    (INVALID_BUILD_TYPES, TypeError),
])
def test_invalid_arguments_fail_before_building(cases, error_class):
    # One test for all cases: each is a cheap check, not worth a Keras reset.
    for kwargs, match in cases:
        arguments = dict(family="resnet50", num_classes=10,
                         input_shape=(28, 28, 1), weights=None)
        arguments.update(kwargs)
        try:
            build(**arguments)
        except error_class as error:
            assert re.search(match, str(error)), (kwargs, str(error))
        else:
            pytest.fail(f"build accepted {kwargs}")


def test_resolve_image_size():
    resnet = registry.get_family("resnet50")
    inception = registry.get_family("inceptionv3")
    assert resolve_image_size(resnet, (28, 28, 1)) == (32, 32)
    assert resolve_image_size(resnet, (40, 28, 3), "auto") == (40, 32)
    assert resolve_image_size(inception, (28, 28, 1)) == (75, 75)
    assert resolve_image_size(resnet, (100, 100, 3), "minimum") == (32, 32)
    assert resolve_image_size(resnet, (28, 28, 1), "native") == (224, 224)
    assert resolve_image_size(inception, (28, 28, 1), "native") == (299, 299)
    assert resolve_image_size(resnet, (28, 28, 1), 64) == (64, 64)
    assert resolve_image_size(resnet, (28, 28, 1), (48, 64)) == (48, 64)
    with pytest.raises(ValueError, match="at least 75"):
        resolve_image_size(inception, (28, 28, 1), 64)
