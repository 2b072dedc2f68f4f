"""Static checks of a teacher/student pair, run when a `Distiller` is built.

They read only what a model declares (symbolic inputs and outputs, its last
layer), so they cost nothing and catch mismatches before any data is read.
Models without symbolic shapes (subclassed models) are checked on the first
batch instead, by `tfkd.preflight`.
"""

import keras

from tfkd.utils import validation


def _symbolic_shape(model, attribute):
    """The single input/output shape of a functional model, or None."""
    try:
        tensors = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    if not tensors or len(tensors) != 1:
        return None
    return tuple(tensors[0].shape)


def output_classes(model):
    """Number of output classes a model declares, or None if unknown."""
    shape = _symbolic_shape(model, "outputs")
    if shape is None or len(shape) != 2:
        return None
    return shape[-1]


def _last_activation_is_softmax(model):
    try:
        layers = model.layers
    except AttributeError:
        return None
    if not layers:
        return None
    layer = layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return layer
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name == "softmax":
        return layer
    return None


def softmax_output_layer(model):
    """The model's last layer if it applies a softmax, else `None`.

    Shared with `tfkd.export`, which warns where `Distiller` refuses.

    Args:
        model: A `keras.Model`.

    Returns:
        The last layer (a `keras.layers.Layer`) or `None`.
    """
    return _last_activation_is_softmax(model)


def check_student_outputs_logits(student):
    """Raises if the student's last layer is a softmax.

    The KD loss needs the student's logits; softmax outputs would be
    softened a second time and the hard loss computed on probabilities.

    Args:
        student: A `keras.Model`.

    Raises:
        ValueError: if the last layer applies a softmax.
    """
    layer = _last_activation_is_softmax(student)
    if layer is not None:
        raise ValueError(
            "Invalid value for argument `student`. Expected a model that "
            "outputs logits (no final softmax): the distillation loss "
            "applies the softmax itself. Build the last layer with "
            "activation=None (keras.applications: classifier_activation="
            f"None). Received: student={student.name!r} whose last layer "
            f"{layer.name!r} applies a softmax"
        )


def check_compatible_inputs(teacher, student):
    """Raises if no single input batch can feed both models.

    Args:
        teacher: A `keras.Model`.
        student: A `keras.Model`.

    Raises:
        ValueError: if both declare input shapes that differ in a known
            dimension.
    """
    teacher_shape = _symbolic_shape(teacher, "inputs")
    student_shape = _symbolic_shape(student, "inputs")
    if teacher_shape is None or student_shape is None:
        return
    compatible = len(teacher_shape) == len(student_shape) and all(
        a is None or b is None or a == b
        for a, b in zip(teacher_shape, student_shape)
    )
    if not compatible:
        raise ValueError(
            "Invalid value for argument `teacher`. Expected a teacher that "
            "takes the same input batches as the student (both models see "
            f"every batch); the student takes inputs of shape "
            f"{student_shape}. Received: teacher with input shape "
            f"{teacher_shape}. Put any resizing or channel conversion "
            "inside the teacher (tfkd.teachers.build does)."
        )


def check_compatible_classes(teacher, student, teacher_class_indices):
    """Raises if the teacher's classes cannot be mapped onto the student's.

    Args:
        teacher: A `keras.Model`.
        student: A `keras.Model`.
        teacher_class_indices: Tuple of ints or None.

    Raises:
        ValueError: on a class-count mismatch without (or inconsistent with)
            `teacher_class_indices`.
    """
    check_class_counts(
        output_classes(teacher), output_classes(student), teacher_class_indices
    )


def check_class_counts(teacher_classes, student_classes, teacher_class_indices):
    """Checks class counts (None where unknown) against the index mapping.

    Raises:
        ValueError: on a mismatch.
    """
    if teacher_class_indices is None:
        if (
            teacher_classes is not None
            and student_classes is not None
            and teacher_classes != student_classes
        ):
            raise ValueError(
                "Invalid value for argument `teacher_class_indices`. The "
                f"teacher predicts {teacher_classes} classes and the student "
                f"{student_classes}: expected a list of {student_classes} "
                "teacher class indices, one per student class, in the "
                "student's order. Received: teacher_class_indices=None"
            )
        return
    if student_classes is not None and len(teacher_class_indices) != (
        student_classes
    ):
        raise validation.invalid_value(
            "teacher_class_indices",
            f"one teacher class index per student class ({student_classes})",
            list(teacher_class_indices),
        )
    if teacher_classes is not None and max(teacher_class_indices) >= (
        teacher_classes
    ):
        raise validation.invalid_value(
            "teacher_class_indices",
            f"indices below the teacher's {teacher_classes} classes",
            list(teacher_class_indices),
        )
