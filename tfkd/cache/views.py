"""K fixed augmented views per example: augmentation a cache can honour.

A cached teacher output only teaches the student something true about the
exact image the teacher saw. Beyer et al. (2022), "Knowledge distillation:
A good teacher is patient and consistent", show that the student must see
the teacher's view: a fresh random crop against logits of another crop is
an inconsistent target and costs accuracy. tfkd offers the two consistent
ways to augment, and refuses the inconsistent one:

1. Online: `Distiller(teacher=..., augmentation=layer)` draws one view per
   batch and runs both models on it (no cache).
2. Cached: `TeacherCache.build(..., views=K, augmentation=layer)` draws K
   views of every example once, stores them with the teacher's outputs on
   them, and the stream serves stored views only. Each epoch shows every
   example once in one of its K views (`views="random"`, the default of
   `TeacherCache.dataset`) or all K views (`views="all"`).
3. Refused: `Distiller(augmentation=...)` on batches that carry cached
   logits raises (`tfkd.preflight.refuse_augmentation_on_cached`).

Rows are stored example-major: row `i * K + v` is view v of example i.
"""

import numpy as np
from tfkd import backend_support

tf = backend_support.lazy_tensorflow(
    "cached views drawn inside a tf.data pipeline",
)

#: The values `TeacherCache.dataset(views=...)` accepts.
VIEW_MODES = ("random", "all")


def augment_function(augmentation):
    """A compiled `x -> augmentation(x, training=True)` (one random view).

    Traced with `tf.function` on TensorFlow; called eagerly on another
    backend (a build draws each view once, so compiling buys little there).
    """
    if not backend_support.tensorflow_is_backend():

        def augment_eagerly(inputs):
            return augmentation(inputs, training=True)

        return augment_eagerly

    @tf.function(reduce_retracing=True)
    def augment(inputs):
        return augmentation(inputs, training=True)

    return augment


def expand_views(augment, inputs, views):
    """Draws `views` random views of every example of a batch.

    Args:
        augment: Callable from a batch tensor to an augmented batch, such
            as `augment_function(layer)`.
        inputs: Tensor or array `(batch, ...)`.
        views: Int K >= 1.

    Returns:
        A NumPy array `(batch * K, ...)`, example-major (row `i * K + v`).

    Example:

    >>> import numpy as np
    >>> flip = lambda x: x[:, ::-1]
    >>> expand_views(flip, np.array([[1, 2], [3, 4]]), views=2).tolist()
    [[2, 1], [2, 1], [4, 3], [4, 3]]
    """
    drawn = [np.asarray(augment(inputs)) for _ in range(views)]
    stacked = np.stack(drawn, axis=1)  # (batch, K, ...)
    return stacked.reshape((-1,) + stacked.shape[2:])


def repeat_labels(labels, views):
    """Labels `(batch, ...)` -> `(batch * K, ...)`, matching `expand_views`."""
    return np.repeat(np.asarray(labels), views, axis=0)


def choose_view_rows(examples, views, seed):
    """Rows of one random view of each example, inside a `tf.data` map.

    Args:
        examples: int64 tensor `(batch,)` of example indices.
        views: Int K.
        seed: int64 scalar tensor, a fresh value per batch (from
            `tf.data.Dataset.random`), so each epoch draws new views.

    Returns:
        An int64 tensor `(batch,)` of rows `i * K + v`.
    """
    choice = tf.random.stateless_uniform(
        tf.shape(examples),
        seed=tf.stack([seed, tf.constant(0, tf.int64)]),
        maxval=views,
        dtype=tf.int64,
    )  # (batch,)
    return examples * views + choice
