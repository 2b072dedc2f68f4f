"""Property-based tests (hypothesis) of the losses in tfkd/losses.py.

Logits are drawn as finite float32 matrices with entries in [-LIMIT, LIMIT]
(wide enough for saturated softmaxes at any temperature drawn here), a
batch of 1-6 rows and 2-12 classes.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfkd import losses

LIMIT = 50.0
# Eager TF calls are fast but the first one is not; hypothesis' deadline
# would measure that, not the property.
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)

temperatures = st.floats(0.5, 20.0)
alphas = st.floats(0.0, 1.0)


@st.composite
def logit_pairs(draw, limit=LIMIT):
    """A `(teacher, student)` pair of float32 logits of the same shape."""
    shape = (draw(st.integers(1, 6)), draw(st.integers(2, 12)))
    elements = st.floats(-limit, limit, width=32)
    teacher = draw(hnp.arrays(np.float32, shape, elements=elements))
    student = draw(hnp.arrays(np.float32, shape, elements=elements))
    return teacher, student


def numpy_kl(teacher, student, temperature):
    """`T² · KL(softmax(t/T) ‖ softmax(s/T))` per row, in float64."""

    def log_softmax(z):
        z = z.astype(np.float64) / temperature
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(teacher), log_softmax(student)
    return temperature**2 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def as_numpy(tensor):
    return np.asarray(tensor, dtype=np.float64)


@PROPERTY_SETTINGS
@given(logit_pairs(), temperatures, alphas, st.data())
def test_losses_are_finite_for_finite_logits(pair, temperature, alpha, data):
    teacher, student = pair
    rows, classes = teacher.shape
    labels = data.draw(
        hnp.arrays(np.int32, rows, elements=st.integers(0, classes - 1))
    )
    soft = as_numpy(losses.soft_target_loss(teacher, student, temperature))
    hard = as_numpy(losses.hard_target_loss(labels, student))
    total = as_numpy(
        losses.knowledge_distillation_loss(
            labels, student, teacher, temperature, alpha
        )
    )
    assert soft.shape == hard.shape == total.shape == (teacher.shape[0],)
    assert np.all(np.isfinite(soft))
    assert np.all(np.isfinite(hard))
    assert np.all(np.isfinite(total))


@PROPERTY_SETTINGS
@given(logit_pairs(), temperatures)
def test_kl_is_non_negative_and_matches_numpy(pair, temperature):
    teacher, student = pair
    soft = as_numpy(losses.soft_target_loss(teacher, student, temperature))
    reference = numpy_kl(teacher, student, temperature)
    # float32 rounding of a sum of terms of size up to (2 · LIMIT / T) · T².
    tolerance = 1e-5 * temperature**2 * (1.0 + 2.0 * LIMIT / temperature)
    assert np.all(soft >= -tolerance)
    np.testing.assert_allclose(soft, reference, rtol=1e-4, atol=tolerance)


@PROPERTY_SETTINGS
@given(logit_pairs(), temperatures)
def test_kl_is_zero_when_teacher_equals_student(pair, temperature):
    logits, _ = pair
    soft = as_numpy(losses.soft_target_loss(logits, logits, temperature))
    np.testing.assert_array_equal(soft, np.zeros_like(soft))


@PROPERTY_SETTINGS
@given(logit_pairs(), temperatures, st.data())
def test_invariant_to_a_constant_added_to_a_row(pair, temperature, data):
    teacher, student = pair
    rows = teacher.shape[0]
    shift = st.floats(-100.0, 100.0, width=32)
    teacher_shift = data.draw(hnp.arrays(np.float32, (rows, 1), elements=shift))
    student_shift = data.draw(hnp.arrays(np.float32, (rows, 1), elements=shift))
    labels = np.zeros(rows, np.int32)

    soft = as_numpy(losses.soft_target_loss(teacher, student, temperature))
    shifted = as_numpy(
        losses.soft_target_loss(
            teacher + teacher_shift, student + student_shift, temperature
        )
    )
    # Adding c to logits of magnitude <= 150 moves them by float32 rounding
    # (~150 · 2⁻²⁴ each); the loss moves by at most that times its
    # gradient bound (2T for the student, 2 · 4 · LIMIT for the teacher).
    rounding = 150.0 * 2.0**-23
    tolerance = 4.0 * rounding * (2.0 * temperature + 8.0 * LIMIT) + 1e-5
    np.testing.assert_allclose(shifted, soft, atol=tolerance)

    hard = as_numpy(losses.hard_target_loss(labels, student))
    hard_shifted = as_numpy(
        losses.hard_target_loss(labels, student + student_shift)
    )
    np.testing.assert_allclose(hard_shifted, hard, atol=4.0 * rounding + 1e-5)


@PROPERTY_SETTINGS
@given(logit_pairs(limit=30.0), temperatures, alphas)
def test_mixed_precision_is_within_tolerance_of_float32(
    pair, temperature, alpha
):
    # A mixed-precision student emits float16 logits; the loss must then be
    # the float32 loss of those rounded logits (no float16 arithmetic
    # inside), and within the rounding bound of the float32 loss.
    teacher, student = pair
    labels = np.arange(teacher.shape[0]) % teacher.shape[1]
    teacher16 = teacher.astype(np.float16)
    student16 = student.astype(np.float16)

    loss16 = as_numpy(
        losses.knowledge_distillation_loss(
            labels, student16, teacher16, temperature, alpha
        )
    )
    loss_of_rounded = as_numpy(
        losses.knowledge_distillation_loss(
            labels,
            student16.astype(np.float32),
            teacher16.astype(np.float32),
            temperature,
            alpha,
        )
    )
    loss32 = as_numpy(
        losses.knowledge_distillation_loss(
            labels, student, teacher, temperature, alpha
        )
    )
    assert np.all(np.isfinite(loss16))
    np.testing.assert_array_equal(loss16, loss_of_rounded)
    # float16 rounds each logit by at most |x| · 2⁻¹¹ <= 30 · 2⁻¹¹. Soft
    # loss has gradient norms (L1) of at most 2T in the student logits and
    # 8 · 30 in the teacher logits; the CE at most 2. Twice that bound
    # leaves room for second-order terms.
    delta = 30.0 * 2.0**-11
    bound = delta * (
        (1.0 - alpha) * (2.0 * temperature + 8.0 * 30.0) + alpha * 2.0
    )
    np.testing.assert_allclose(loss16, loss32, atol=2.0 * bound + 1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_give_float32_losses(dtype):
    import keras

    teacher = keras.ops.cast(np.array([[3.0, -2.0, 0.5]]), dtype)
    student = keras.ops.cast(np.array([[1.0, 0.0, -1.0]]), dtype)
    loss = losses.knowledge_distillation_loss(
        np.array([0]), student, teacher, 2.0, 0.5
    )
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
