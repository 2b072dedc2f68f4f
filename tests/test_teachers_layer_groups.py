"""Tests for tfkd/teachers/layer_groups.py."""

import keras
import pytest

import conftest
from tfkd.teachers import build
from tfkd.teachers import find_backbone
from tfkd.teachers import layer_groups
from tfkd.teachers.layer_groups import has_trainable_weights


@pytest.fixture(scope="module")
def resnet50_teacher():
    # Built once: three tests only read its structure.
    return build("resnet50", 10, (32, 32, 3), weights=None)


_small_cnn = conftest.small_conv_bn_model


def _names(groups):
    return [[layer.name for layer in group] for group in groups]


def test_resnet50_teacher_splits_at_published_stages(resnet50_teacher):
    teacher = resnet50_teacher
    groups = layer_groups(teacher)
    assert _names(groups)[0] == ["logits"]
    prefixes = ["conv5", "conv4", "conv3", "conv2", "conv1"]
    assert len(groups) == 1 + len(prefixes)
    for group, prefix in zip(groups[1:], prefixes):
        assert all(layer.name.startswith(prefix) for layer in group), prefix
    # Every layer with trainable weights is in exactly one group.
    listed = [layer for group in groups for layer in group]
    assert len(listed) == len(set(map(id, listed)))
    backbone = find_backbone(teacher)
    expected = [layer for layer in backbone.layers
                if has_trainable_weights(layer)]
    assert len(listed) == len(expected) + 1


def test_num_groups_merges_neighbouring_stages_top_first(resnet50_teacher):
    teacher = resnet50_teacher
    groups = layer_groups(teacher, num_groups=3)
    assert len(groups) == 3
    # Five stages into two groups: [conv5, conv4, conv3], [conv2, conv1].
    assert {layer.name[:5] for layer in groups[1]} == {"conv5", "conv4",
                                                       "conv3"}
    assert {layer.name[:5] for layer in groups[2]} == {"conv2", "conv1"}


def test_mobilenet_v2_groups_follow_block_table():
    teacher = build("mobilenetv2", 10, (32, 32, 3), weights=None)
    groups = layer_groups(teacher)
    assert len(groups) == 1 + 7
    top = {layer.name for layer in groups[1]}
    assert "block_16_project" in top and "Conv_1" in top
    assert "block_15_project" in {layer.name for layer in groups[2]}


def test_explicit_family_overrides_detection(resnet50_teacher):
    teacher = resnet50_teacher
    # The EfficientNet rule matches no ResNet layer: every layer is a unit.
    per_unit = layer_groups(teacher, family="efficientnetb0")
    assert len(per_unit) > len(layer_groups(teacher))


def test_user_model_groups_layers_with_their_normalization():
    model = _small_cnn()
    groups = layer_groups(model)
    assert _names(groups) == [["head"], ["hidden"], ["conv_b", "bn_b"],
                              ["conv_a", "bn_a"]]
    assert find_backbone(model) is None


def test_user_model_around_applications_backbone_is_detected():
    backbone = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(features))
    groups = layer_groups(model)
    assert _names(groups)[0] == ["out"]
    assert len(groups) == 6  # guessed the ResNet rule: conv1..conv5
    assert groups[1][0].name.startswith("conv5")


def test_frozen_layers_still_count():
    model = _small_cnn()
    model.trainable = False
    assert not model.trainable_weights
    assert len(layer_groups(model)) == 4
    assert has_trainable_weights(model.get_layer("conv_a"))
    assert not has_trainable_weights(keras.layers.Flatten())


def test_invalid_num_groups():
    model = _small_cnn()
    for num_groups in (1, 5):
        with pytest.raises(ValueError, match="value for argument `num_groups`"):
            layer_groups(model, num_groups=num_groups)
    for num_groups in (2.0, True):
        with pytest.raises(TypeError, match="type for argument `num_groups`"):
            layer_groups(model, num_groups=num_groups)


def test_model_with_a_single_weighted_layer_is_rejected():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="at least one more layer"):
        layer_groups(model)


def test_unbuilt_model_is_rejected():
    with pytest.raises(ValueError, match="built"):
        layer_groups(keras.Sequential([keras.layers.Dense(2)]))
