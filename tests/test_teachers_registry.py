"""Tests for tfkd/teachers/registry.py."""

import keras
import pytest

from tfkd.teachers import registry

REQUIRED = (
    "mobilenetv2", "mobilenetv3small", "mobilenetv3large", "efficientnetb0",
    "efficientnetv2b0", "resnet50", "resnet50v2", "densenet121", "convnexttiny",
)


@pytest.fixture
def scratch_family():
    """Registers nothing itself; removes the test family afterwards."""
    yield "tfkdtestfamily"
    registry._REGISTRY.pop("tfkdtestfamily", None)


def _spec(name="tfkd_test_family", min_size=32, native_size=224):
    return registry.FamilySpec(
        name=name,
        constructor=keras.applications.MobileNetV3Small,
        preprocess_input=keras.applications.mobilenet_v3.preprocess_input,
        min_size=min_size,
        native_size=native_size,
    )


def test_required_families_are_registered():
    assert set(REQUIRED) <= set(registry.list_families())
    assert registry.list_families() == sorted(registry.list_families())


@pytest.mark.parametrize(
    "spelling",
    ["EfficientNetV2B0", "efficientnet_v2_b0", "efficientnetv2-b0",
     "efficientnetv2b0"],
)
def test_get_family_accepts_common_spellings(spelling):
    spec = registry.get_family(spelling)
    assert spec.name == "efficientnetv2b0"
    assert spec.constructor is keras.applications.EfficientNetV2B0


def test_unknown_family_lists_valid_names_and_suggests():
    with pytest.raises(ValueError, match="Expected one of") as info:
        registry.get_family("resnet51")
    message = str(info.value)
    for name in REQUIRED:
        assert name in message
    assert "Did you mean 'resnet50'" in message
    assert "family='resnet51'" in message


def test_get_family_rejects_non_strings():
    with pytest.raises(TypeError, match="Expected a string"):
        registry.get_family(50)


def test_sizes_follow_keras_applications():
    assert registry.get_family("resnet50").min_size == 32
    assert registry.get_family("resnet50").native_size == 224
    assert registry.get_family("inceptionv3").min_size == 75
    assert registry.get_family("inceptionv3").native_size == 299


def test_preprocess_input_is_the_familys_own():
    assert (registry.get_family("resnet50").preprocess_input
            is keras.applications.resnet50.preprocess_input)
    assert (registry.get_family("densenet121").preprocess_input
            is keras.applications.densenet.preprocess_input)


def test_register_family_normalizes_and_refuses_duplicates(scratch_family):
    spec = registry.register_family(_spec())
    assert spec.name == scratch_family
    assert registry.get_family("TFKD-test-family") is spec
    with pytest.raises(ValueError, match="already registered"):
        registry.register_family(_spec())
    replaced = registry.register_family(_spec(native_size=96), overwrite=True)
    assert registry.get_family(scratch_family).native_size == 96
    assert replaced.native_size == 96


def test_register_family_validates(scratch_family):
    with pytest.raises(TypeError, match="FamilySpec"):
        registry.register_family({"name": scratch_family})
    with pytest.raises(ValueError, match="min_size"):
        registry.register_family(_spec(min_size=0))
    with pytest.raises(ValueError, match="min_size <= native_size"):
        registry.register_family(_spec(min_size=300))
    assert scratch_family not in registry.list_families()


def test_stages_of_without_patterns_is_none():
    assert _spec().stages_of(["conv", "bn"]) is None
