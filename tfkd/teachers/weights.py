"""Instantiates a backbone with `weights=None`, `"imagenet"` or a local file.

`"imagenet"` goes through Keras's own download-and-cache
(`keras.utils.get_file`, cached under `$KERAS_HOME/models`, by default
`~/.keras/models`). Machines without internet cannot download, so the failure
is turned into an error that says how to pass the same file from disk instead.
"""

import os
import re
import urllib.error

from tfkd.utils import validation

# Suffixes `keras.Model.load_weights` understands: `.weights.h5` (Keras 3),
# legacy `.h5`/`.hdf5` (the files keras.applications downloads) and `.keras`.
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras")


def keras_cache_dir():
    """Returns the directory where Keras caches downloaded ImageNet weights.

    Keras uses `$KERAS_HOME/models`, or `~/.keras/models` when `KERAS_HOME` is
    unset.

    Returns:
        A path string.

    Example:

    >>> keras_cache_dir().endswith("models")
    True
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return os.path.join(home, "models")


def validate_weights(weights):
    """Checks the `weights` argument before anything is built.

    Args:
        weights: `None`, `"imagenet"` or a path (`str` or `os.PathLike`) to an
            existing `.weights.h5`, `.h5`, `.hdf5` or `.keras` file holding the
            weights of the backbone *without* its top (`include_top=False`).

    Returns:
        `None`, `"imagenet"` or the path as a string.

    Raises:
        TypeError: If `weights` has another type.
        ValueError: If the path does not exist or has an unknown suffix.

    Example:

    >>> validate_weights(None) is None
    True
    """
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            "Invalid type for argument `weights`. Expected None, 'imagenet' "
            "or a path to a weights file. "
            f"Received: weights={weights!r} of type {type(weights).__name__}"
        )
    path = os.fspath(weights)
    if not path.endswith(WEIGHTS_SUFFIXES):
        raise validation.invalid_value(
            "weights",
            "None, 'imagenet' or a path ending in one of "
            f"{list(WEIGHTS_SUFFIXES)}",
            path,
        )
    if not os.path.isfile(path):
        raise validation.invalid_value(
            "weights",
            "None, 'imagenet' or the path of an existing file. No file "
            f"exists at {path!r}",
            path,
        )
    return path


def _is_download_failure(error):
    # `keras.utils.get_file` re-raises network errors as a bare `Exception`
    # whose message starts with "URL fetch failure"; a truncated download fails
    # its hash check with "Incomplete or corrupted file".
    network_errors = (urllib.error.URLError, ConnectionError, TimeoutError)
    if isinstance(error, network_errors):
        return True
    message = str(error)
    return "URL fetch failure" in message or "corrupted file" in message


def download_failure_message(family, cause):
    """Explains how to supply ImageNet weights when the download failed.

    Args:
        family: Registered family name, used in the suggested call.
        cause: The original exception; the URL Keras tried is taken from it.

    Returns:
        The error message string.

    Example:

    >>> "weights=" in download_failure_message("resnet50", OSError("offline"))
    True
    """
    url = re.search(r"https?://\S+?\.h5", str(cause))
    if url:
        where = (
            f"  1. download {url.group(0)} on a machine with internet and "
            f"copy it into {keras_cache_dir()}, where Keras looks before "
            "downloading; or\n"
        )
        example_path = f"/path/to/{url.group(0).rsplit('/', 1)[-1]}"
    else:
        where = (
            "  1. copy the Keras weights file of the backbone without its top "
            f"from a machine with internet into {keras_cache_dir()}, where "
            "Keras looks before downloading; or\n"
        )
        example_path = "/path/to/backbone_notop.h5"
    return (
        f"Could not download the ImageNet weights for '{family}' "
        f"(weights='imagenet'): {cause}\n"
        "This machine seems to have no internet access. Either:\n"
        + where
        + "  2. pass the file directly: "
        f"tfkd.teachers.build('{family}', ..., weights='{example_path}'). "
        "Any `.h5`, `.weights.h5` or `.keras` file with the weights of the "
        "backbone without its top works, e.g. one written by "
        "`backbone.save_weights('backbone.weights.h5')`; or\n"
        "  3. use weights=None to train from scratch."
    )


def instantiate_backbone(spec, input_shape, weights, **backbone_kwargs):
    """Calls the family's `keras.applications` constructor without its top.

    Args:
        spec: A `tfkd.teachers.FamilySpec`.
        input_shape: `(H, W, 3)` tuple the backbone is built for.
        weights: Result of `validate_weights`.
        **backbone_kwargs: Extra constructor arguments (e.g. `alpha=0.75` for
            MobileNets).

    Returns:
        The backbone, a functional `keras.Model` mapping
        `(batch, H, W, 3)` to a feature map `(batch, h, w, channels)`.

    Raises:
        RuntimeError: If `weights="imagenet"` and the download failed; the
            message explains how to pass a local file instead.
        ValueError: If a weights file does not fit the backbone.

    Example:

    >>> from tfkd.teachers import registry
    >>> backbone = instantiate_backbone(
    ...     registry.get_family("mobilenetv3small"), (32, 32, 3), None)
    >>> tuple(backbone.output.shape)
    (None, 1, 1, 576)
    """
    def construct(constructor_weights):
        return spec.constructor(
            include_top=False,
            weights=constructor_weights,
            input_shape=tuple(input_shape),
            pooling=None,
            **backbone_kwargs,
        )

    if weights == "imagenet":
        try:
            return construct("imagenet")
        except Exception as error:  # noqa: BLE001 - narrowed just below.
            if _is_download_failure(error):
                raise RuntimeError(
                    download_failure_message(spec.name, error)
                ) from error
            raise
    backbone = construct(None)
    if weights is not None:
        try:
            backbone.load_weights(weights)
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"Invalid value for argument `weights`: the file {weights!r} "
                f"does not hold weights of the '{spec.name}' backbone without "
                f"its top (include_top=False). Keras said: {error}"
            ) from error
    return backbone
