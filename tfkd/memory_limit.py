"""The process-wide cap on memory that a tfkd object's config can ask for.

A `.keras` file is untrusted input: its config sizes the state the objects
in it allocate when they are built (CRD's memory banks hold `num_data ×
feat_dim × 2` float32 values), and `keras.saving.load_model` builds them
before any weight is read, even with `safe_mode=True`. A limit read from
the same file protects nothing, so the cap here comes from the code or the
environment only:

- the environment variable `TFKD_MAX_MEMORY_MB` (a float > 0), read when
  the cap is first needed after each `set_max_memory_mb(None)`, else
- `DEFAULT_MAX_MEMORY_MB` (1024 MB),
- overridden in code by `tfkd.memory_limit.set_max_memory_mb(megabytes)`.

A per-object limit (CRD's `max_memory_mb`) can only lower this cap: the
effective limit is the smaller of the two (`effective_limit_mb`).
"""

import os

from tfkd.utils import validation

#: The cap when neither the environment nor the code sets one.
DEFAULT_MAX_MEMORY_MB = 1024.0
#: The environment variable that sets the cap (megabytes, a float > 0).
ENVIRONMENT_VARIABLE = "TFKD_MAX_MEMORY_MB"

# Set by `set_max_memory_mb`; `None` means "read the environment".
_cap_from_code = None


def set_max_memory_mb(megabytes):
    """Sets the process-wide cap, or `None` to go back to the environment.

    Args:
        megabytes: Float > 0, the largest state (in MB, 10⁶ bytes) one tfkd
            object may allocate from its config, or `None` for
            `TFKD_MAX_MEMORY_MB` (else `DEFAULT_MAX_MEMORY_MB`).

    Raises:
        TypeError, ValueError: if `megabytes` is not `None` or a finite
            float > 0.

    Example:

    >>> set_max_memory_mb(4096)
    >>> get_max_memory_mb()
    4096.0
    >>> set_max_memory_mb(None)
    """
    global _cap_from_code
    if megabytes is not None:
        megabytes = validation.check_positive_float("megabytes", megabytes)
    _cap_from_code = megabytes


def get_max_memory_mb():
    """The process-wide cap in MB: from the code, the environment, or 1024.

    Returns:
        A float > 0.

    Raises:
        ValueError: if `TFKD_MAX_MEMORY_MB` is set but is not a float > 0.
    """
    if _cap_from_code is not None:
        return _cap_from_code
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_MAX_MEMORY_MB
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < float("inf"):
        raise ValueError(
            f"Invalid value for the environment variable "
            f"`{ENVIRONMENT_VARIABLE}`. Expected a float > 0 (megabytes). "
            f"Received: {ENVIRONMENT_VARIABLE}={text!r}"
        )
    return value


def effective_limit_mb(object_limit_mb=None):
    """The smaller of the process-wide cap and an object's own limit.

    Example:

    >>> effective_limit_mb(10.0)
    10.0
    """
    cap = get_max_memory_mb()
    if object_limit_mb is None:
        return cap
    return min(cap, object_limit_mb)


def check_allocation(argument, value, megabytes, what, object_limit_mb=None):
    """Raises unless `megabytes` fits the effective limit; call before allocating.

    Args:
        argument: The config argument that sizes the allocation, for the
            message (e.g. `"num_data"`).
        value: Its value, for the message.
        megabytes: The size the allocation would have, in MB.
        what: What is allocated and how its size follows from the config,
            e.g. "CRD's memory banks, num_data × feat_dim × 2 × 4 B".
        object_limit_mb: The object's own limit (which can only lower the
            cap), or `None`. Defaults to `None`.

    Raises:
        ValueError: in the Keras wording, naming `argument`, the size and
            how to raise the limit.

    Example:

    >>> check_allocation("num_data", 10, 0.5, "a test allocation")
    """
    limit = effective_limit_mb(object_limit_mb)
    if megabytes <= limit:
        return
    own = (
        ""
        if object_limit_mb is None or object_limit_mb >= get_max_memory_mb()
        else f" and this object's max_memory_mb={object_limit_mb:g}"
    )
    raise validation.invalid_value(
        argument,
        f"a size within the memory limit of {limit:g} MB: {what} would "
        f"take {megabytes:.1f} MB. The limit is the process-wide cap "
        f"({get_max_memory_mb():g} MB; raise it in code with "
        f"tfkd.memory_limit.set_max_memory_mb(...) or with the environment "
        f"variable {ENVIRONMENT_VARIABLE}, never from a saved file){own}",
        value,
    )
