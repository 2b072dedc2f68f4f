"""Multi-output views: one forward pass per model per step, clear errors."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import feature_views
from tfkd.terms.decoupled import DecoupledKD
from tfkd.terms.features import FitNetHint
from counting_layers import CountingDense

FEATURES, CLASSES = 6, 4


def _mlp(name, hidden, seed, counting=False):
    keras.utils.set_random_seed(seed)
    dense = CountingDense if counting else keras.layers.Dense
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(hidden, activation="relu", name="embedding"),
            keras.layers.Dense(CLASSES, name="logits"),
        ],
        name=name,
    )


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    return x, x[:, :CLASSES].argmax(axis=-1).astype("int32")


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="relu", name="hidden")
        self.logits = keras.layers.Dense(CLASSES, name="logits")

    def call(self, x):
        return self.logits(self.hidden(x))


def test_view_returns_the_output_and_the_named_layers():
    x, _ = _data(8)
    model = _mlp("model", 8, 0)
    view = feature_views.FeatureView(model, ["embedding", None, "hidden", "embedding"], "student")
    assert view.layer_names == ("embedding", "hidden")
    output, features = view(x, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), keras.ops.convert_to_numpy(model(x)), rtol=1e-6)
    hidden = keras.Model(model.inputs[0], model.get_layer("hidden").output)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(features["hidden"]), keras.ops.convert_to_numpy(hidden(x)), rtol=1e-6)
    assert view.feature_shape("embedding") == (None, 8)
    assert view.feature_shape(None) == (None, CLASSES)
    # No layers asked for: no view, the model itself is called.
    plain = feature_views.FeatureView(model, [None], "student")
    assert not plain.is_multi_output
    assert plain(x)[1] == {}


# Array-fed twins of the tf.data tests of tests/test_feature_views_tensorflow.py,
# for every backend: Keras's own loop (`keras.Model.fit`), without tfkd's
# pre-flight inference on one batch, so every counted call is a step.


def _calls(model):
    return int(np.asarray(model.get_layer("hidden").calls))


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_each_model_runs_once_per_training_step_from_arrays(run_eagerly):
    x, y = _data(64)
    teacher = _mlp("teacher", 16, 0, counting=True)
    student = _mlp("student", 8, 1, counting=True)
    distiller = tfkd.Distiller(
        teacher=teacher,
        student=student,
        extra_losses=[
            FitNetHint(teacher_layer="hidden", student_layer="hidden"),
            FitNetHint(teacher_layer="embedding", student_layer="embedding", name="hint2"),
        ],
    )
    distiller.compile(optimizer="adam", run_eagerly=run_eagerly)
    keras.Model.fit(distiller, x, y, batch_size=16, shuffle=False, epochs=1, verbose=0)
    assert _calls(student) == 4 and _calls(teacher) == 4


def test_each_model_runs_once_per_evaluation_step_from_arrays():
    x, y = _data(64)
    teacher = _mlp("teacher", 16, 0, counting=True)
    student = _mlp("student", 8, 1, counting=True)
    distiller = tfkd.Distiller(
        teacher=teacher,
        student=student,
        extra_losses=[
            FitNetHint(teacher_layer=None, student_layer=None, name="logit_hint"),
            FitNetHint(teacher_layer="embedding", student_layer="embedding"),
        ],
    )
    distiller.compile(optimizer="adam")
    keras.Model.evaluate(distiller, x, y, batch_size=32, verbose=0)
    assert _calls(student) == 2 and _calls(teacher) == 2


def test_a_reloaded_sequential_still_runs_once_per_step_from_arrays():
    x, y = _data(64)
    config = _mlp("student", 8, 1, counting=True).get_config()
    student = keras.Sequential.from_config(config, custom_objects={"CountingDense": CountingDense})
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 16, 0),
        student=student,
        extra_losses=[FitNetHint(teacher_layer="embedding", student_layer="embedding")],
    )
    distiller.compile(optimizer="adam")
    keras.Model.fit(distiller, x, y, batch_size=32, shuffle=False, epochs=1, verbose=0)
    assert _calls(student) == 2


def test_subclassed_model_with_layer_names_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match=r"`student`.*subclassed.*functional API.*keras.Input"):
        tfkd.Distiller(
            teacher=_mlp("teacher", 16, 0),
            student=Subclassed(name="sub"),
            extra_losses=[FitNetHint(teacher_layer="hidden", student_layer="hidden")],
        )
    with pytest.raises(ValueError, match=r"`teacher`.*subclassed"):
        feature_views.FeatureView(Subclassed(name="sub_teacher"), ["hidden"], "teacher")


def test_subclassed_models_still_work_with_logit_terms():
    x, y = _data(64)
    student = Subclassed(name="sub")
    student(x[:1])
    distiller = tfkd.Distiller(
        teacher=_mlp("teacher", 16, 0), student=student, alpha=1.0,
        extra_losses=[DecoupledKD()],
    )
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["dkd_loss"][0])


def test_unknown_layer_names_list_the_layers():
    with pytest.raises(ValueError, match=r"`teacher_layer`.*'hidden', 'embedding', 'logits'.*Received: teacher_layer='conv9'"):
        tfkd.Distiller(
            teacher=_mlp("teacher", 16, 0),
            student=_mlp("student", 8, 1),
            extra_losses=[FitNetHint(teacher_layer="conv9", student_layer="hidden")],
        )


def test_teacher_layers_need_a_teacher_model():
    with pytest.raises(ValueError, match=r"`teacher`.*fitnet_loss.*teacher=None"):
        tfkd.Distiller(
            teacher=None,
            student=_mlp("student", 8, 1),
            extra_losses=[FitNetHint(teacher_layer="hidden", student_layer="hidden")],
        )


def test_a_layer_called_twice_is_refused():
    inputs = keras.Input((FEATURES,))
    shared = keras.layers.Dense(FEATURES, name="shared")
    outputs = keras.layers.Dense(CLASSES)(shared(shared(inputs)))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"`student_layer`.*called once"):
        feature_views.FeatureView(model, ["shared"], "student")
