"""Argument checks shared by tfkd's public constructors.

Every check raises before any training starts, in Keras's own wording:
"Invalid value for argument `temperature`. Expected a float > 0.
Received: temperature=-1".
"""

import math
import numbers

import keras


def invalid_value(argument, expected, received):
    """Builds the `ValueError` message tfkd uses for a bad argument value."""
    return ValueError(
        f"Invalid value for argument `{argument}`. Expected {expected}. "
        f"Received: {argument}={received!r}"
    )


def invalid_type(argument, expected, received):
    """Builds the `TypeError` message tfkd uses for a bad argument type."""
    return TypeError(
        f"Invalid type for argument `{argument}`. Expected {expected}. "
        f"Received: {argument}={received!r} of type {type(received).__name__}"
    )


def _is_real_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_non_negative(argument, value):
    """Returns `value` as a float after checking it is finite and >= 0."""
    if not _is_real_number(value):
        raise invalid_type(argument, "a float >= 0", value)
    if not math.isfinite(value) or value < 0:
        raise invalid_value(argument, "a float >= 0", value)
    return float(value)


def check_temperature(temperature):
    """Returns `temperature` as a float after checking it is finite and > 0."""
    if not _is_real_number(temperature):
        raise invalid_type("temperature", "a float > 0", temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise invalid_value("temperature", "a float > 0", temperature)
    return float(temperature)


def check_alpha(alpha):
    """Returns `alpha` as a float after checking it lies in [0, 1]."""
    if not _is_real_number(alpha):
        raise invalid_type("alpha", "a float in [0, 1]", alpha)
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise invalid_value("alpha", "a float in [0, 1]", alpha)
    return float(alpha)


def check_choice(argument, value, choices):
    """Returns `value` after checking it is one of `choices`."""
    if value not in choices:
        expected = "one of " + ", ".join(repr(c) for c in choices)
        raise invalid_value(argument, expected, value)
    return value


def check_keras_model(argument, value, allow_none=False):
    """Returns `value` after checking it is a `keras.Model` (or `None`)."""
    if value is None and allow_none:
        return value
    if not isinstance(value, keras.Model):
        expected = "a `keras.Model`" + (" or None" if allow_none else "")
        raise invalid_type(argument, expected, value)
    return value


def check_class_indices(argument, indices):
    """Returns `indices` as a tuple of distinct non-negative ints (or None)."""
    if indices is None:
        return None
    try:
        values = tuple(indices)
    except TypeError:
        raise invalid_type(argument, "a sequence of ints", indices) from None
    if not values:
        raise invalid_value(argument, "a non-empty sequence of ints", indices)
    for value in values:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise invalid_type(argument, "a sequence of ints", indices)
        if value < 0:
            raise invalid_value(
                argument, "a sequence of non-negative ints", indices
            )
    if len(set(values)) != len(values):
        raise invalid_value(argument, "a sequence of distinct ints", indices)
    return tuple(int(v) for v in values)


def check_int(argument, value, minimum=None, maximum=None, expected=None):
    """Returns `value` as an int after checking its type and range.

    Args:
        argument: The argument's name, for the message.
        value: The value received.
        minimum: Smallest allowed value, or `None`. Defaults to `None`.
        maximum: Largest allowed value, or `None`. Defaults to `None`.
        expected: What the message says is expected. Defaults to a text
            made from the bounds ("an int in [1, 4]", "an int >= 0").

    Returns:
        `int(value)`.

    Raises:
        TypeError: if `value` is not an int (a bool is not an int here).
        ValueError: if it lies outside `[minimum, maximum]`.
    """
    if expected is None:
        if minimum is not None and maximum is not None:
            expected = f"an int in [{minimum}, {maximum}]"
        elif minimum is not None:
            expected = f"an int >= {minimum}"
        elif maximum is not None:
            expected = f"an int <= {maximum}"
        else:
            expected = "an int"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise invalid_type(argument, expected, value)
    if (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise invalid_value(argument, expected, value)
    return int(value)


def check_positive_int(argument, value):
    """Returns `value` after checking it is an int > 0."""
    return check_int(argument, value, minimum=1, expected="an int > 0")


def check_positive_float(argument, value, expected="a float > 0"):
    """Returns `value` as a float after checking it is finite and > 0."""
    if not _is_real_number(value):
        raise invalid_type(argument, expected, value)
    if not math.isfinite(value) or value <= 0:
        raise invalid_value(argument, expected, value)
    return float(value)


def check_bool(argument, value):
    """Returns `value` after checking it is a bool (`True` or `False`).

    Example:

    >>> check_bool("logit_standardization", True)
    True
    """
    if not isinstance(value, bool):
        raise invalid_type(argument, "a bool (True or False)", value)
    return value
