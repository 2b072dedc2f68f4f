"""SoftTargetKL against a NumPy float64 reference, and as the Distiller's KL."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.terms import methods
from tfkd.terms.soft_targets import SoftTargetKL


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_standardize(z):
    """Sun et al. (2024), the authors' code: (z - mean) / (std(ddof=1) + 1e-7)."""
    centred = z - z.mean(axis=-1, keepdims=True)
    return centred / (z.std(axis=-1, ddof=1, keepdims=True) + 1e-7)


def _np_soft_kl(t, s, temperature, standardize=False, weights=None,
                standardize_teacher=True):
    """Hinton et al. (2015): T² · KL(softmax(t/T) ‖ softmax(s/T)), batch mean."""
    t, s = t.astype(np.float64), s.astype(np.float64)
    if standardize:
        s = _np_standardize(s)
        if standardize_teacher:
            t = _np_standardize(t)
    log_p = _np_log_softmax(t / temperature)
    log_q = _np_log_softmax(s / temperature)
    per_example = temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    if weights is not None:
        per_example = per_example * weights
    return per_example.sum() / len(per_example)  # sum_over_batch_size


def _logits(seed, shape=(8, 5), scale=3.0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32") * scale


def _float32_atol(temperature, classes):
    """The float32 rounding of `T² · KL`, absolute: `T² · ε32 · log C`.

    The KL subtracts two float32 log-softmaxes, `log p − log q`; each
    carries the rounding of its log-sum-exp (at most `log C` after the max
    shift), half an ulp, `ε32 · log C / 2`. That error does not shrink with
    the KL, which falls as 1/T² (the tempered logits move closer), so after
    the T² factor it is an absolute error growing as T²: at T = 20 with 5
    classes 7.7e-5 on a loss of about 0.9 (measured on JAX: 1.1e-5; NumPy's
    own float32 log-softmax of the same inputs: 3.1e-6); at T <= 4 it adds
    at most 3.1e-6 to rtol=1e-5 of losses of 0.4 to 6.
    """
    return temperature**2 * np.finfo(np.float32).eps * np.log(classes)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("standardize", [False, True])
def test_soft_target_kl_matches_numpy(temperature, standardize):
    t, s = _logits(0), _logits(1)
    term = SoftTargetKL(temperature=temperature, logit_standardization=standardize)
    np.testing.assert_allclose(
        float(term(t, s)), _np_soft_kl(t, s, temperature, standardize), rtol=1e-5,
        atol=_float32_atol(temperature, t.shape[-1]),
    )


def test_sample_weights_reduce_as_sum_over_batch_size():
    t, s = _logits(2), _logits(3)
    weights = np.array([0, 1, 2, 0.5, 1, 1, 3, 0], "float32")
    got = SoftTargetKL(temperature=2.0)(t, s, sample_weight=weights)
    np.testing.assert_allclose(
        float(got), _np_soft_kl(t, s, 2.0, weights=weights), rtol=1e-5
    )


def test_a_mixture_teacher_is_never_standardized_again():
    t, s = _logits(4), _logits(5)
    term = SoftTargetKL(temperature=4.0, logit_standardization=True)
    mixture = float(term(t, s, teacher_is_mixture=True))
    np.testing.assert_allclose(
        mixture,
        _np_soft_kl(t, s, 4.0, standardize=True, standardize_teacher=False),
        rtol=1e-5,
    )
    assert abs(mixture - float(term(t, s))) > 1e-3


def test_the_config_round_trips():
    term = SoftTargetKL(temperature=3.0, logit_standardization=True,
                        weight=0.25, view="strong", name="strong_kl")
    copy = SoftTargetKL.from_config(term.get_config())
    assert copy.get_config() == term.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(term)
    )
    assert isinstance(restored, SoftTargetKL) and restored.view == "strong"


@pytest.mark.parametrize("argument, value, error", [
    ("temperature", 0.0, ValueError),
    ("logit_standardization", 1, TypeError),
    ("weight", -1.0, ValueError),
    ("view", "", ValueError),
    ("view", 3, TypeError),
])
def test_bad_arguments_name_themselves(argument, value, error):
    with pytest.raises(error, match=argument):
        SoftTargetKL(**{argument: value})


def test_it_is_the_distillers_soft_term():
    x = np.random.RandomState(0).rand(32, 6).astype("float32")
    y = np.arange(32) % 3
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    distiller = tfkd.Distiller(teacher=teacher, student=student, temperature=2.0,
                               alpha=0.3, logit_standardization=True)
    assert isinstance(distiller.soft_term, SoftTargetKL)
    assert distiller.soft_term.weight == pytest.approx(0.7)
    assert distiller.loss_terms()[0] is distiller.soft_term
    distiller.compile(optimizer="sgd")
    result = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    expected = _np_soft_kl(keras.ops.convert_to_numpy(teacher(x)), keras.ops.convert_to_numpy(student(x)), 2.0,
                           standardize=True)
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-5)


def test_it_registers_the_methods_that_are_the_kl_alone():
    assert methods.get("logit_kd").build is None
    assert methods.get("logit_std").distiller_options == {
        "logit_standardization": True
    }


@pytest.mark.parametrize("temperature, alpha", [
    (1.0, 0.0), (2.0, 0.3), (4.0, 0.5), (10.0, 0.9), (20.0, 1.0),
])
def test_the_distillers_loss_is_alpha_ce_plus_t2_kl(temperature, alpha):
    """The Distiller's loss is α · CE + (1 − α) · T² · KL (Hinton et al., 2015)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = np.arange(32) % 3
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    distiller = tfkd.Distiller(teacher=teacher, student=student,
                               temperature=temperature, alpha=alpha)
    distiller.compile(optimizer="sgd")
    result = distiller.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    t, s = keras.ops.convert_to_numpy(teacher(x)).astype(np.float64), keras.ops.convert_to_numpy(student(x)).astype(np.float64)
    cross_entropy = -_np_log_softmax(s)[np.arange(32), y].mean()
    kl = _np_soft_kl(t, s, temperature)
    np.testing.assert_allclose(result["student_loss"], cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(result["distillation_loss"], kl, rtol=1e-5,
                               atol=_float32_atol(temperature, 3))
    np.testing.assert_allclose(
        result["loss"], alpha * cross_entropy + (1 - alpha) * kl, rtol=1e-5,
        atol=_float32_atol(temperature, 3),
    )
