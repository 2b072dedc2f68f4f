"""A progress bar over the batches of a dataset."""

import keras


def dataset_progbar(dataset, verbose):
    """A `keras.utils.Progbar` counting `dataset`'s batches, or `None`.

    Args:
        dataset: A `tf.data.Dataset` (its cardinality, when known, is the
            bar's target) or another iterable of batches (its `len`, when
            it has one).
        verbose: `0` (no bar: returns `None`), `1` or `2`, as for Keras.

    Returns:
        A `keras.utils.Progbar`, or `None` when `verbose` is 0.

    Example:

    >>> dataset_progbar([(1, 2), (3, 4)], 0) is None
    True
    >>> dataset_progbar([(1, 2), (3, 4)], 1).target
    2
    """
    if not verbose:
        return None
    if hasattr(dataset, "cardinality"):  # a tf.data.Dataset
        cardinality = int(dataset.cardinality())
        target = cardinality if cardinality >= 0 else None
    elif isinstance(dataset, keras.utils.PyDataset):
        target = dataset.num_batches
    else:
        try:
            target = len(dataset)
        except TypeError:
            target = None
    return keras.utils.Progbar(
        target=target,
        unit_name="batch",
        verbose=verbose,
    )
