"""The student arms the experiments compare, as `protocol.Arm`s.

Every arm starts from the seed's shared initial weights and reads the
same batches (see `benchmarks.protocol`); only the training method
differs:

- `scratch`: `student.fit` on the labels, optionally on randomly
  augmented images (`small_shift`).
- `distilled(...)`: `tfkd.Distiller` (logit KD of Hinton et al., 2015,
  plus any extra loss terms), with the teacher run online, or its logits
  precomputed in memory, or read from a `tfkd.TeacherCache`, or
  everything its terms read from the teacher computed once
  (`Distiller.precompute_targets`). In a
  few-labels setup (`Setup.with_labels`) it reads the whole transfer set:
  the labelled rows, and the unlabelled pool's rows labelled -1.
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
import tensorflow as tf

import tfkd
from benchmarks import protocol

#: Why the AutoKeras arm is absent where autokeras is not installed.
AUTOKERAS_MISSING = ("autokeras is not installed: `pip install "
                     "'tfkd[autokeras]'`, which needs Keras < 3.13")


def small_shift():
    """Random shifts of up to 1/28 of the image: one pixel on 28x28 images.

    The scratch students' augmentation in the few-labels experiments:
    with 600 of 6,000 Fashion-MNIST labels and 100 passes over them it
    measured +0.48 points [-0.61, +1.56] (3 seeds) over none, where
    horizontal flips measured -0.12 and flips with shifts of up to 10 %
    -2.90 [-4.06, -1.75].
    """
    return keras.layers.RandomTranslation(1 / 28, 1 / 28, fill_mode="constant",
                                          name="small_shift")


def scratch(arm_id="scratch", label="Student from scratch", augmentation=None):
    """The student trained alone on the labels.

    Args:
        arm_id: Identifier in the results. Defaults to `"scratch"`.
        label: Human name. Defaults to `"Student from scratch"`.
        augmentation: `None`, or a function returning a fresh
            `keras.layers.Layer` (e.g. `small_shift`) put in front of
            the student while it trains; the student alone is evaluated.
            Defaults to `None`.

    Returns:
        A `protocol.Arm`.
    """
    def make_trainer(setup, student):
        optimizer = protocol.student_optimizer(setup)
        if augmentation is None:
            return protocol.compile_classifier(student, setup.preset, optimizer=optimizer)
        trainer = keras.Sequential([augmentation(), student], name=f"{arm_id}_trainer")
        return protocol.compile_classifier(trainer, setup.preset, optimizer=optimizer)
    return protocol.Arm(arm_id, label, make_trainer)


def transfer_labels(setup):
    """Labels of the epoch's rows: the labelled examples', then -1 per pool row.

    -1 is tfkd's "unlabelled" label: the `Distiller` leaves such rows out
    of the hard term and the metrics, and distils them like any other.
    """
    _, y = setup.labelled()
    pool = setup.epoch_size() - len(setup.data.y_train)
    return tf.concat([y, tf.fill((pool,), tf.constant(-1, y.dtype))], axis=0)


def transfer_batches(setup, order):
    """`epoch_data` of an arm with the teacher online: `(x, y)` batches of
    every row of the epoch (`Setup.epoch_size`), the unlabelled pool's rows
    labelled -1 in a few-labels setup (`Setup.with_labels`)."""
    return protocol.gather_batches(order, setup.preset.batch_size,
                                   (setup.epoch_inputs(), transfer_labels(setup)))


def indexed_transfer_batches(setup, order):
    """`transfer_batches` whose targets also carry each row's index among the
    epoch's rows, `(x, {"labels": y, "index": row})`: what a term that keeps
    per-example state needs (`tfkd.CRD`'s memory bank)."""
    rows = tf.range(setup.epoch_size(), dtype=tf.int64)
    return protocol.gather_batches(
        order, setup.preset.batch_size,
        (setup.epoch_inputs(), {"labels": transfer_labels(setup), "index": rows}))


def soft_target_batches(source):
    """`epoch_data` of an arm fed precomputed teacher logits.

    It reads every row of the epoch (`Setup.epoch_size`): the labelled
    examples and, in a few-labels setup, the unlabelled pool, whose rows
    carry the label -1 (`transfer_labels`).

    Args:
        source: `"memory"` (`Setup.teacher_logits`), `"cache"`
            (`Setup.cached_teacher_logits`, read from a `TeacherCache`), or
            a function `setup -> logits` of the epoch's rows (e.g. another
            teacher's).

    Returns:
        `(setup, order) -> tf.data.Dataset` of `(x, {"labels",
        "teacher_logits"})` batches in `order`.
    """
    def epoch_data(setup, order):
        if callable(source):
            logits = source(setup)
        elif source == "memory":
            logits = setup.teacher_logits()
        else:
            logits = setup.cached_teacher_logits()
        return protocol.gather_batches(
            order, setup.preset.batch_size,
            (setup.epoch_inputs(),
             tfkd.attach_teacher_logits(transfer_labels(setup), logits)))
    return epoch_data


def distilled(arm_id, label, *, temperature=None, alpha=None, extra_losses=None,
              soft_targets=None, distiller_options=None, with_index=False):
    """A `tfkd.Distiller` arm.

    Args:
        arm_id: Identifier in the results.
        label: Human name.
        temperature: T. Defaults to `None` (the preset's).
        alpha: α. Defaults to `None` (the preset's).
        extra_losses: `(setup, student) -> list` of extra loss terms, or
            `None`. Defaults to `None`.
        soft_targets: `None` (teacher online), `"memory"` or `"cache"`
            (teacher logits precomputed; no teacher in the loop), a
            function `setup -> logits` (see `soft_target_batches`), or
            `"precomputed"`: the teacher's logits, the layers the terms
            read and the row indices, computed once before training
            (`Setup.precomputed_targets`); the teacher model still builds
            the terms but never runs in a step. Defaults to `None`.
        distiller_options: Further `tfkd.Distiller` keyword arguments, e.g.
            `{"logit_standardization": True}`. Defaults to `None`.
        with_index: Targets carry each row's index
            (`indexed_transfer_batches`), for `tfkd.CRD`; with the teacher
            online (`"precomputed"` adds the index itself). Defaults to
            `False`.

    Returns:
        A `protocol.Arm` that reads every row of the epoch: in a
        few-labels setup (`Setup.with_labels`) the pool's rows come
        labelled -1, so the hard term (α) reads the labelled rows only and
        every row is distilled, online or from precomputed logits alike.
    """
    precomputed = soft_targets == "precomputed"

    def make_trainer(setup, student):
        preset = setup.preset
        weight = preset.alpha if alpha is None else alpha
        distiller = tfkd.Distiller(
            teacher=setup.teacher if soft_targets in (None, "precomputed") else None,
            student=student,
            temperature=preset.temperature if temperature is None else temperature,
            alpha=weight,
            **({"teacher_outputs": "logits",
                "extra_losses": extra_losses(setup, student)}
               if extra_losses else {}),
            **(distiller_options or {}),
        )
        distiller.compile(protocol.student_optimizer(setup), metrics=["accuracy"])
        if precomputed:  # once per set of teacher layers; `epoch_data` reads it
            setup.tensor(("arm targets", arm_id), lambda: setup.precomputed_targets(
                distiller, transfer_labels(setup)))
        return distiller

    def precomputed_batches(setup, order):
        def not_made():
            raise RuntimeError(f"arm {arm_id!r}: epoch data asked for before "
                               "make_trainer computed its teacher targets")
        return protocol.gather_batches(
            order, setup.preset.batch_size,
            (setup.epoch_inputs(), setup.tensor(("arm targets", arm_id), not_made)))

    if precomputed:
        return protocol.Arm(arm_id, label, make_trainer, precomputed_batches)
    if with_index and soft_targets is not None:
        raise ValueError(
            f"Invalid value for argument `with_index` of arm {arm_id!r}. Expected "
            "False with precomputed soft targets (indexed batches are made for "
            f"an online teacher). Received: with_index=True, soft_targets={soft_targets!r}")
    if soft_targets is None:
        return protocol.Arm(arm_id, label, make_trainer,
                            indexed_transfer_batches if with_index else transfer_batches)
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
            protocol.student_optimizer(setup),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
        return distiller
    return protocol.Arm(arm_id, label, make_trainer)


def autokeras_available():
    """`(True, None)`, or `(False, why)` when autokeras is not installed."""
    if importlib.util.find_spec("autokeras") is None:
        return False, AUTOKERAS_MISSING
    return True, None
