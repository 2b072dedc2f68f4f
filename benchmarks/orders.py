"""The order of the training examples in every epoch, shared by all arms.

Free of TensorFlow, so that workers on any Keras backend
(`benchmarks.backend_worker`) read the same batches as the arms of
`benchmarks.protocol`.
"""

import numpy as np


def epoch_order(seed, epoch, count):
    """The order of the `count` training examples in `epoch` of `seed`.

    Every arm of a seed reads its epoch's batches in this order.

    Example:

    >>> epoch_order(0, 1, 5).tolist() == epoch_order(0, 1, 5).tolist()
    True
    """
    return np.random.default_rng([seed, epoch]).permutation(count)
