"""A progress bar over the batches of a `tf.data.Dataset`."""

import keras


def dataset_progbar(dataset, verbose):
    """A `keras.utils.Progbar` counting `dataset`'s batches, or `None`.

    Args:
        dataset: A `tf.data.Dataset`; its cardinality, when known, is the
            bar's target.
        verbose: `0` (no bar: returns `None`), `1` or `2`, as for Keras.

    Returns:
        A `keras.utils.Progbar`, or `None` when `verbose` is 0.

    Example:

    >>> import tensorflow as tf
    >>> dataset_progbar(tf.data.Dataset.range(4).batch(2), 0) is None
    True
    """
    if not verbose:
        return None
    cardinality = int(dataset.cardinality())
    return keras.utils.Progbar(
        target=cardinality if cardinality >= 0 else None,
        unit_name="batch",
        verbose=verbose,
    )
