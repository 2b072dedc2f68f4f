"""Born-again training: each trained student teaches the next generation.

Furlanello, Lipton, Tschannen, Itti & Anandkumar (2018), "Born-Again Neural
Networks" (ICML 2018, arXiv:1805.04770) distil a network into a fresh copy
of the same architecture, then that copy into another, and so on; the
students often overtake their teacher, and an ensemble of the generations
does better still. `born_again` runs the generations with the usual
`tfkd.Distiller`, so every option of the Distiller (temperature, α, extra
loss terms, augmentation) applies to each generation.
"""

import keras

from tfkd.utils import validation
from tfkd import distiller as distiller_lib
from tfkd import losses


def _fresh_optimizer(optimizer):
    """A new optimizer per generation: optimizer state is per model."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return type(optimizer).from_config(optimizer.get_config())
    return keras.optimizers.get(optimizer)


def _fresh_terms(extra_losses):
    """New term objects per generation (connectors are per student)."""
    return [type(term).from_config(term.get_config()) for term in extra_losses]


def _fit_arguments(train_data):
    """`train_data` as fit's `(x, y)`: a dataset, or an `(x, y)` pair."""
    if isinstance(train_data, tuple) and len(train_data) == 2:
        return train_data
    return train_data, None


def _hard_loss(labels, logits):
    return losses.hard_target_loss(labels, logits)


def born_again(
    student_builder,
    teacher,
    train_data,
    *,
    generations=3,
    temperature=4.0,
    alpha=0.1,
    extra_losses=None,
    optimizer="adam",
    metrics=("accuracy",),
    **fit_kwargs,
):
    """Trains `generations` students, each distilled from the one before.

    Born-again networks (Furlanello et al., 2018): generation 1 is
    distilled from `teacher`, generation k + 1 from generation k, each a
    fresh model from `student_builder`. With `teacher=None`, generation 1
    is trained from the labels alone (the paper's first, "teacher"
    network), and the chain starts from it.

    A student is frozen while it teaches (the Distiller sets
    `trainable=False`); it is made trainable again once the next
    generation has finished, so every returned student can be fine-tuned
    or saved as usual. The `teacher` passed in stays frozen.

    Args:
        student_builder: Callable with no arguments returning a new,
            untrained `keras.Model` that outputs logits; called once per
            generation. Terms in `extra_losses` that name layers need the
            same layer names in every generation: name the layers.
        teacher: The trained `keras.Model` that teaches generation 1, or
            `None` to train generation 1 from the labels.
        train_data: A `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)`
            tuple of arrays.
        generations: Int > 0, the number of students to train. Defaults to
            `3`.
        temperature: Float > 0, T of every Distiller. Defaults to `4.0`.
        alpha: Float in [0, 1], the hard-label weight of every Distiller.
            Defaults to `0.1`.
        extra_losses: Terms as for `tfkd.Distiller`; each generation gets
            fresh copies (from their configs). Defaults to `None`.
        optimizer: Optimizer name, config or instance; each generation gets
            a fresh one with the same settings. Defaults to `"adam"`.
        metrics: Metrics compiled into every generation. Defaults to
            `("accuracy",)`.
        **fit_kwargs: Passed to every `fit` call (`epochs`, `batch_size`,
            `validation_data`, `callbacks`, `verbose`, ...).

    Returns:
        A tuple `(students, histories)`: the `generations` trained
        `keras.Model`s in order, and their `keras.callbacks.History`
        objects.

    Raises:
        TypeError: if `student_builder` is not callable or does not return
            a `keras.Model`, or `teacher` is not a `keras.Model` or None.
        ValueError: for a bad `generations`, or a builder that returns a
            model it returned before.

    Example:

    >>> import numpy as np, keras, tfkd
    >>> x = np.random.rand(64, 8).astype("float32")
    >>> y = np.random.randint(0, 3, size=64)
    >>> def build():
    ...     return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> students, histories = tfkd.born_again(
    ...     build, None, (x, y), generations=2, epochs=1, verbose=0)
    >>> len(students), "distillation_loss" in histories[1].history
    (2, True)
    """
    if not callable(student_builder):
        raise validation.invalid_type(
            "student_builder",
            "a callable returning a new keras.Model",
            student_builder,
        )
    validation.check_keras_model("teacher", teacher, allow_none=True)
    generations = validation.check_positive_int("generations", generations)
    extra_losses = list(extra_losses or [])
    x, y = _fit_arguments(train_data)

    students, histories = [], []
    for generation in range(generations):
        student = student_builder()
        if not isinstance(student, keras.Model):
            raise validation.invalid_type(
                "student_builder",
                "a callable returning a new keras.Model",
                student,
            )
        if any(student is previous for previous in [teacher, *students]):
            raise validation.invalid_value(
                "student_builder",
                "a callable that builds a new model on every call",
                f"generation {generation + 1} got a model seen before "
                f"({student.name!r})",
            )
        current_teacher = students[-1] if students else teacher
        if current_teacher is None:
            trainer = student
            trainer.compile(
                optimizer=_fresh_optimizer(optimizer),
                loss=_hard_loss,
                metrics=list(metrics),
            )
        else:
            trainer = distiller_lib.Distiller(
                teacher=current_teacher,
                student=student,
                temperature=temperature,
                alpha=alpha,
                extra_losses=_fresh_terms(extra_losses),
                name=f"born_again_{generation + 1}",
            )
            trainer.compile(
                optimizer=_fresh_optimizer(optimizer), metrics=list(metrics)
            )
        histories.append(trainer.fit(x, y, **fit_kwargs))
        if students and current_teacher is students[-1]:
            # Done teaching: trainable again for whoever gets it back.
            current_teacher.trainable = True
        students.append(student)
    return students, histories
