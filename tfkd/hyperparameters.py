"""The ranges of tfkd's hyper-parameters inside which losses stay finite.

`tfkd.utils.validation` checks types and signs; this module adds the upper
and lower bounds that float32 training needs, so that a hyper-parameter
which would make the loss non-finite (or numerically meaningless) is a
`ValueError` at construction rather than NaN weights after an hour:

- **Temperatures** (`Distiller`, `DecoupledKD`, `DIST`, the ensemble's,
  `KnowledgeDistillation`, CRD's contrast temperature) lie in
  `[MIN_TEMPERATURE, MAX_TEMPERATURE] = [0.01, 100]`. The soft loss is
  `T² · KL(softmax(t/T) ‖ softmax(s/T))`. For logits of standard deviation
  5 over 100 classes its float32 value is exact to 2e-4 (relative) at
  T = 100, 3e-2 at T = 1000 and wrong by more than 100 % at T = 10⁴, where
  `t/T` and `s/T` differ by less than float32 resolves; above T ≈ 2e19,
  `T²` itself overflows float32 (and `1e300 ** 2` overflows Python's
  float). Below T = 0.01 the T² factor shrinks the soft term under 1e-4
  of its size at T = 1 (use `alpha=1.0` to switch it off instead), and
  `logits / T` of confident logits reaches float32's range.
- **Weights** of a loss part (`weight`, DIST's `beta`/`gamma`, DKD's
  `target_weight`/`non_target_weight`) lie in `[0, MAX_WEIGHT] = [0, 1e6]`:
  a weight multiplies the term's gradient, and the paper values are at
  most 1000 (attention transfer's β).
- **The attention exponent** `p` of `AttentionTransfer` lies in
  `[1, 4]`: below 1 the gradient of `|A|^p` is infinite at the exact zeros
  ReLU features are full of; above 4 the squared attention norm of
  features of size 10⁴ overflows float32.
- `alpha` lies in `[0, 1]` (`tfkd.utils.validation.check_alpha`).
"""

import numbers

from tfkd.utils import validation

#: Smallest accepted softmax temperature (see the module docstring).
MIN_TEMPERATURE = 0.01
#: Largest accepted softmax temperature (see the module docstring).
MAX_TEMPERATURE = 100.0
#: Largest accepted weight of a loss term or of a part of one.
MAX_WEIGHT = 1e6
#: Accepted `[low, high]` of `AttentionTransfer`'s exponent `p`.
ATTENTION_EXPONENT_RANGE = (1.0, 4.0)


def check_float_in_range(argument, value, low, high, why=""):
    """Returns `value` as a float after checking `low <= value <= high`.

    Args:
        argument: The argument's name, for the message.
        value: The value received.
        low: Smallest accepted value.
        high: Largest accepted value.
        why: Optional reason appended to the expectation, e.g. "(the
            float32 soft loss ...)". Defaults to `""`.

    Returns:
        `float(value)`.

    Raises:
        TypeError: if `value` is not a real number (a bool is not).
        ValueError: if it is not finite or lies outside `[low, high]`.

    Example:

    >>> check_float_in_range("beta", 2, 0.0, 10.0)
    2.0
    """
    expected = f"a float in [{low:g}, {high:g}]" + (f" {why}" if why else "")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise validation.invalid_type(argument, expected, value)
    # Compared as given (NaN fails every comparison): `float(10**400)`
    # and `math.isfinite(10**400)` would raise OverflowError themselves.
    if not low <= value <= high:
        raise validation.invalid_value(argument, expected, value)
    return float(value)


def check_temperature(temperature, argument="temperature"):
    """Returns a softmax temperature after checking it lies in [0.01, 100].

    Args:
        temperature: The value received.
        argument: The argument's name, for the message. Defaults to
            `"temperature"`.

    Returns:
        `float(temperature)`.

    Raises:
        TypeError: if `temperature` is not a real number.
        ValueError: if it lies outside `[MIN_TEMPERATURE,
            MAX_TEMPERATURE]` (the float32 loss would be non-finite or
            meaningless; see the module docstring).

    Example:

    >>> check_temperature(4)
    4.0
    """
    return check_float_in_range(
        argument,
        temperature,
        MIN_TEMPERATURE,
        MAX_TEMPERATURE,
        "(outside it the float32 soft loss T² · KL(softmax(t/T) ‖ "
        "softmax(s/T)) loses its precision or vanishes; see "
        "tfkd.hyperparameters)",
    )


def check_weight(argument, value):
    """Returns a loss weight after checking it lies in [0, 1e6].

    Example:

    >>> check_weight("weight", 1000)
    1000.0
    """
    return check_float_in_range(
        argument,
        value,
        0.0,
        MAX_WEIGHT,
        "(a weight multiplies its term's gradient; see tfkd.hyperparameters)",
    )
