"""The student arms the experiments compare, as `protocol.Arm`s.

Every arm starts from the seed's shared initial weights and reads the
same batches (see `benchmarks.protocol`); only the training method
differs:

- `scratch`: `student.fit` on the labels.
- `distilled(...)`: `tfkd.Distiller` (logit KD of Hinton et al., 2015,
  plus any extra loss terms), with the teacher run online, or its logits
  precomputed in memory, or read from a `tfkd.TeacherCache`.
- `keras_distillation(...)`: `keras.distillation.Distiller` with
  `LogitsDistillation(temperature=T)`, as users call it. With its default
  `loss="kl_divergence"` (still in Keras 3.15.1) the string resolves to a
  function, misses the `isinstance(..., KLDivergence)` branch, and the KL
  is computed on clipped temperature-scaled logits, with no softmax and no
  T². With `loss=keras.losses.KLDivergence()` it is used correctly.
- `autokeras_available()`: whether the AutoKeras arm can run, and why not.

A new arm is an `Arm(arm_id, label, make_trainer, epoch_data, fit_epoch)`:
see `benchmarks.protocol.Arm`.
"""

import importlib.util

import keras

import tfkd
from benchmarks import protocol

#: Why the AutoKeras arm is absent where autokeras is not installed.
AUTOKERAS_MISSING = ("autokeras is not installed: `pip install "
                     "'tfkd[autokeras]'`, which needs Keras < 3.13")


def _optimizer(preset):
    return keras.optimizers.Adam(preset.learning_rate)


def scratch(arm_id="scratch", label="Student from scratch"):
    """The student trained alone on the labels."""
    return protocol.Arm(arm_id, label, lambda setup, student:
                        protocol.compile_classifier(student, setup.preset))


def soft_target_batches(source):
    """`epoch_data` of an arm fed precomputed teacher logits.

    Args:
        source: `"memory"` (`Setup.teacher_logits`) or `"cache"`
            (`Setup.cached_teacher_logits`, read from a `TeacherCache`).

    Returns:
        `(setup, order) -> tf.data.Dataset` of `(x, {"labels",
        "teacher_logits"})` batches in `order`.
    """
    def epoch_data(setup, order):
        x, y = setup.labelled()
        logits = (setup.teacher_logits() if source == "memory"
                  else setup.cached_teacher_logits())
        return protocol.gather_batches(order, setup.preset.batch_size,
                                       (x, tfkd.attach_teacher_logits(y, logits)))
    return epoch_data


def distilled(arm_id, label, *, temperature=None, alpha=None, extra_losses=None,
              soft_targets=None):
    """A `tfkd.Distiller` arm.

    Args:
        arm_id: Identifier in the results.
        label: Human name.
        temperature: T. Defaults to `None` (the preset's).
        alpha: α. Defaults to `None` (the preset's).
        extra_losses: `(teacher, student) -> list` of extra loss terms, or
            `None`. Defaults to `None`.
        soft_targets: `None` (teacher online), `"memory"` or `"cache"`
            (teacher logits precomputed; no teacher in the loop). Defaults
            to `None`.

    Returns:
        A `protocol.Arm`.
    """
    def make_trainer(setup, student):
        preset = setup.preset
        distiller = tfkd.Distiller(
            teacher=None if soft_targets else setup.teacher,
            student=student,
            temperature=preset.temperature if temperature is None else temperature,
            alpha=preset.alpha if alpha is None else alpha,
            **({"teacher_outputs": "logits",
                "extra_losses": extra_losses(setup.teacher, student)}
               if extra_losses else {}),
        )
        distiller.compile(_optimizer(preset), metrics=["accuracy"])
        return distiller

    if soft_targets is None:
        return protocol.Arm(arm_id, label, make_trainer)
    return protocol.Arm(arm_id, label, make_trainer, soft_target_batches(soft_targets))


def keras_distillation(arm_id, label, loss=None):
    """A `keras.distillation.Distiller` arm; `loss=None` keeps its default."""
    def make_trainer(setup, student):
        preset = setup.preset
        options = {} if loss is None else {"loss": loss}
        distiller = keras.distillation.Distiller(
            teacher=setup.teacher, student=student,
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=preset.temperature, **options),
            student_loss_weight=preset.alpha,
        )
        distiller.compile(
            _optimizer(preset),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
        return distiller
    return protocol.Arm(arm_id, label, make_trainer)


def autokeras_available():
    """`(True, None)`, or `(False, why)` when autokeras is not installed."""
    if importlib.util.find_spec("autokeras") is None:
        return False, AUTOKERAS_MISSING
    return True, None
