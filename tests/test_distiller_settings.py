"""DistillerSettings: every Distiller setting declared, checked and saved once."""

import dataclasses
import json
import os
import zipfile

import keras
import pytest

import tfkd
from tfkd import distiller_settings
from tfkd.distiller_settings import DistillerSettings

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "distiller-1f66263.keras")


def _dense(classes=3):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(classes)])


def test_settings_are_normalised_once_and_frozen():
    teachers = [_dense(), _dense()]
    settings = DistillerSettings(
        student=_dense(), teacher=teachers, temperature=2, alpha=1,
        teacher_weights=[1, 3], teacher_class_indices=[2, 0, 1],
    )
    assert settings.temperature == 2.0 and isinstance(settings.temperature, float)
    assert settings.alpha == 1.0 and isinstance(settings.alpha, float)
    assert settings.teacher_weights == (0.25, 0.75)
    assert settings.teacher_class_indices == (2, 0, 1)
    assert settings.extra_losses == [] and settings.views == {}
    assert settings.is_ensemble
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.alpha = 0.5


def test_a_list_of_one_teacher_is_that_teacher():
    teacher = _dense()
    settings = DistillerSettings(student=_dense(), teacher=[teacher],
                                 teacher_weights=[2.0])
    assert settings.teacher is teacher and settings.teacher_weights is None


def test_settings_take_keywords_only():
    with pytest.raises(TypeError):
        DistillerSettings(_dense())  # noqa: the student must be named


def test_a_distiller_without_a_student_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="`student`"):
        tfkd.Distiller(teacher=_dense())


def test_an_unknown_argument_is_an_error_naming_it():
    # Keras's own check of a Model's keyword arguments (a ValueError).
    with pytest.raises(ValueError, match="temprature"):
        tfkd.Distiller(student=_dense(), teacher=_dense(), temprature=2.0)


def test_the_distiller_reads_its_settings_and_cannot_change_them():
    distiller = tfkd.Distiller(student=_dense(), teacher=_dense(), temperature=3.0,
                               alpha=0.2, on_nonfinite="skip")
    assert distiller.settings.temperature == distiller.temperature == 3.0
    assert distiller.alpha == 0.2 and distiller.on_nonfinite == "skip"
    assert distiller.soft_term.weight == pytest.approx(0.8)
    with pytest.raises(AttributeError):
        distiller.temperature = 1.0


def test_every_field_is_a_distiller_attribute():
    distiller = tfkd.Distiller(student=_dense(), teacher=_dense())
    for field in dataclasses.fields(DistillerSettings):
        assert hasattr(distiller, field.name), field.name
    tracked = set(distiller_settings.TRACKED_FIELDS)
    assert tracked <= {field.name for field in dataclasses.fields(DistillerSettings)}


def test_the_config_keys_are_those_of_older_files():
    # A file saved by 1f66263 has these keys; `on_nonfinite` came later and
    # `views` is written only when there are views.
    with zipfile.ZipFile(FIXTURE) as archive:
        saved = set(json.loads(archive.read("config.json"))["config"])
    config = tfkd.Distiller(student=_dense(), teacher=_dense()).get_config()
    assert set(config) == saved | {"on_nonfinite"}


def test_split_config_rebuilds_the_settings():
    distiller = tfkd.Distiller(
        student=_dense(), teacher=[_dense(), _dense()], teacher_weights=[1, 1],
        temperature=5.0, extra_losses=[tfkd.DIST()],
    )
    arguments, rest = DistillerSettings.split_config(distiller.get_config())
    assert rest == {k: v for k, v in distiller.get_config().items()
                    if k in ("name", "trainable", "dtype")}
    settings = DistillerSettings(**arguments)
    assert settings.temperature == 5.0
    assert settings.teacher_weights == (0.5, 0.5)
    assert [type(term) for term in settings.extra_losses] == [tfkd.DIST]
    assert isinstance(settings.teacher, list) and len(settings.teacher) == 2


@pytest.mark.parametrize("argument, value, error", [
    ("temperature", -1.0, ValueError),
    ("alpha", 2.0, ValueError),
    ("teacher_outputs", "softmax", ValueError),
    ("logit_standardization", "yes", TypeError),
    ("on_nonfinite", "warn", ValueError),
    ("augmentation", "flip", TypeError),
    ("teacher_weights", [1.0], ValueError),
])
def test_bad_settings_name_their_argument(argument, value, error):
    with pytest.raises(error, match=f"`{argument}`"):
        DistillerSettings(student=_dense(), teacher=_dense(), **{argument: value})


def test_the_distillers_signature_lists_each_setting_with_its_default():
    import inspect

    parameters = inspect.signature(tfkd.Distiller).parameters
    fields = [field.name for field in dataclasses.fields(DistillerSettings)]
    assert list(parameters)[: len(fields)] == fields
    assert parameters["temperature"].default == 4.0
    assert parameters["student"].default is inspect.Parameter.empty
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in parameters.values())


@pytest.mark.parametrize(
    "misspelled, meant",
    [("temprature", "temperature"), ("alhpa", "alpha"), ("extra_loss", "extra_losses")],
)
def test_a_misspelled_setting_is_named_with_the_setting_meant(misspelled, meant):
    with pytest.raises(ValueError, match=f"`{misspelled}`.*probably `{meant}`"):
        tfkd.Distiller(student=_dense(), teacher=_dense(), **{misspelled: 2.0})


def test_keras_model_arguments_are_not_taken_for_misspellings():
    distiller = tfkd.Distiller(student=_dense(), teacher=_dense(), trainable=True)
    assert distiller.trainable
