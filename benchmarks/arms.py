"""The benchmark's arms: how each model is built and trained.

Every student arm starts from the same architecture and the same initial
weights (`student_weights`), uses the same optimizer settings, data, epochs,
T and α; only the training method differs:

- `scratch`: `student.fit` on the labels.
- `tfkd`: `tfkd.Distiller`, teacher run online.
- `tfkd_cached`: `tfkd.Distiller` from `tfkd.TeacherCache` (no teacher in
  the loop).
- `keras_distillation`: `keras.distillation.Distiller` as users call it,
  `LogitsDistillation(temperature=T)` with its default
  `loss="kl_divergence"`. In Keras 3.12 that string resolves to a function,
  misses its `isinstance(..., KLDivergence)` branch, and the KL is computed
  on clipped temperature-scaled logits, with no softmax and no T².
- `keras_distillation_kl`: the same with `loss=keras.losses.KLDivergence()`,
  its correct use (softmax of both, T² applied).
"""

import keras

import tfkd
from tfkd.utils import validation

STUDENT_ARMS = (
    "scratch",
    "tfkd",
    "tfkd_cached",
    "keras_distillation",
    "keras_distillation_kl",
)

LABELS = {
    "teacher": "Teacher (CNN)",
    "scratch": "Student from scratch",
    "tfkd": "Distilled student (tfkd, online)",
    "tfkd_cached": "Distilled student (tfkd, cached teacher)",
    "keras_distillation": "keras.distillation (default loss)",
    "keras_distillation_kl": "keras.distillation (KLDivergence)",
    "autokeras": "AutoKeras ImageClassifier",
}


def _optimizer(preset):
    return keras.optimizers.Adam(preset.learning_rate)


def _cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compile_classifier(model, preset):
    """Compiles a logits classifier with the preset's optimizer."""
    model.compile(_optimizer(preset), _cross_entropy(), metrics=["accuracy"])
    return model


def fresh_student(build_student, student_weights):
    """A new student with the shared initial weights."""
    student = build_student()
    student.set_weights(student_weights)
    return student


def trainer(arm_id, student, teacher, preset):
    """Returns the object whose `fit` trains `student` for `arm_id`.

    Args:
        arm_id: One of `STUDENT_ARMS`.
        student: The student model (fresh initial weights).
        teacher: The trained teacher (unused by `scratch`; `None` for
            `tfkd_cached`).
        preset: The `Preset`.

    Returns:
        A compiled `keras.Model`.
    """
    if arm_id == "scratch":
        return compile_classifier(student, preset)
    if arm_id in ("tfkd", "tfkd_cached"):
        distiller = tfkd.Distiller(
            teacher=teacher if arm_id == "tfkd" else None,
            student=student,
            temperature=preset.temperature,
            alpha=preset.alpha,
        )
        distiller.compile(_optimizer(preset), metrics=["accuracy"])
        return distiller
    if arm_id in ("keras_distillation", "keras_distillation_kl"):
        if arm_id == "keras_distillation":
            loss = keras.distillation.LogitsDistillation(
                temperature=preset.temperature
            )
        else:
            loss = keras.distillation.LogitsDistillation(
                temperature=preset.temperature, loss=keras.losses.KLDivergence()
            )
        distiller = keras.distillation.Distiller(
            teacher=teacher,
            student=student,
            distillation_losses=loss,
            student_loss_weight=preset.alpha,
        )
        distiller.compile(_optimizer(preset), loss=_cross_entropy(), metrics=["accuracy"])
        return distiller
    raise validation.invalid_value(
        "arm_id",
        f"one of {STUDENT_ARMS}",
        arm_id,
    )
