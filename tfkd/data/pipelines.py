"""Streaming `tf.data` steps shared by every source `tfkd.data` reads.

Each step is a lazy `tf.data` transformation: nothing here reads a
dataset into memory, so the same code serves a 60,000-image NumPy array
and a tensorflow-datasets split larger than RAM.

- `preprocess`: images to float32 in [0, 1], resized, channels converted.
- `to_batches`: shuffle, batch, preprocess and prefetch.
- `balanced_take`: a class-balanced subset in one streaming pass.
- `hold_out`: split a validation set off a stream of unknown length.
"""

from tfkd import backend_support

tf = backend_support.lazy_tensorflow(
    "tfkd.data's tf.data pipelines",
    "tfkd.data.load_fashion_mnist_arrays (NumPy arrays) with fit(x, y) "
    "or a keras.utils.PyDataset",
)

#: Examples held in the training shuffle buffer unless told otherwise.
DEFAULT_SHUFFLE_BUFFER = 10_000


def preprocess(images, labels, image_size=None, channels=None):
    """Images -> float32 in [0, 1], resized and channel-converted.

    Integer images (uint8, 0-255) are divided by 255; float images are
    taken as already in [0, 1] and only cast to float32.

    Args:
        images: Tensor `(batch, h, w, c)` (or one image `(h, w, c)`).
        labels: Class ids.
        image_size: Optional `(height, width)` to resize to.
        channels: Optional 1 or 3 to convert to.

    Returns:
        `(images, labels)` with float32 images and int32 labels.

    Example:

    >>> import numpy as np
    >>> images, labels = preprocess(
    ...     np.full((2, 4, 4, 1), 255, np.uint8), np.array([3, 7]),
    ...     image_size=(8, 8), channels=3)
    >>> images.shape, float(images.numpy().max()), labels.dtype.name
    (TensorShape([2, 8, 8, 3]), 1.0, 'int32')
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer:
        images = tf.cast(images, tf.float32) / 255.0
    else:
        images = tf.cast(images, tf.float32)
    if channels is not None and images.shape[-1] != channels:
        if channels == 3:
            images = tf.image.grayscale_to_rgb(images)
        else:
            images = tf.image.rgb_to_grayscale(images)
    if image_size is not None:
        images = tf.image.resize(images, image_size)
    return images, tf.cast(labels, tf.int32)


def to_batches(
    dataset,
    batch_size,
    *,
    shuffle=False,
    shuffle_buffer=DEFAULT_SHUFFLE_BUFFER,
    seed=0,
    image_size=None,
    channels=None,
):
    """Turns a stream of `(image, label)` pairs into model-ready batches.

    Shuffling holds `shuffle_buffer` examples in memory and reshuffles
    every epoch. Images of one fixed shape are preprocessed a whole batch
    at a time (several times faster than per image); images of varying
    shape are resized one by one first, so that they can be batched.

    Args:
        dataset: Unbatched `tf.data.Dataset` of `(image, label)`, images
            `(h, w, c)`.
        batch_size: Examples per batch.
        shuffle: Whether to shuffle. Defaults to `False`.
        shuffle_buffer: Examples in the shuffle buffer. Defaults to
            `10_000`.
        seed: Seed of the shuffle. Defaults to `0`.
        image_size: Optional `(height, width)` to resize to; required
            when the images have no fixed size. Defaults to `None`.
        channels: Optional 1 or 3 to convert to. Defaults to `None`.

    Returns:
        A prefetched `tf.data.Dataset` of `(images, labels)` batches,
        float32 images in [0, 1] and int32 labels.

    Example:

    >>> import numpy as np
    >>> pairs = tf.data.Dataset.from_tensor_slices(
    ...     (np.zeros((10, 4, 4, 1), np.uint8), np.arange(10)))
    >>> batches = to_batches(pairs, 4, shuffle=True, image_size=(8, 8))
    >>> [tuple(images.shape) for images, _ in batches]
    [(4, 8, 8, 1), (4, 8, 8, 1), (2, 8, 8, 1)]
    """
    if shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )

    def prepare(images, labels):
        return preprocess(images, labels, image_size, channels)

    if dataset.element_spec[0].shape.is_fully_defined():
        dataset = dataset.batch(batch_size).map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE
        )
    else:
        dataset = dataset.map(
            prepare, num_parallel_calls=tf.data.AUTOTUNE
        ).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def balanced_take(dataset, count, num_classes):
    """The first `count` examples of a stream, balanced across classes.

    One sequential pass keeps a running count per class (`Dataset.scan`)
    and lets an example through while its class is below its quota:
    `count // num_classes` each, plus one more for the first
    `count % num_classes` classes to reach it. The pass ends at the
    example after the `count`-th one kept (`Dataset.take_while`), so it
    reads about `count` examples of a balanced stream (more if some class
    is rare early on, up to the whole stream if it is short). Nothing is
    stored but `num_classes` counters.

    The subset is the first examples of each class in the stream's order,
    so the stream must come in the same order on every pass (no file or
    example shuffling before this step) for the subset to stay the same
    from epoch to epoch. A class with fewer examples than its quota makes
    the subset short, and reading it then raises
    `tf.errors.FailedPreconditionError` ("Input dataset was expected to
    contain `count` elements but contained only ...") at the end of the
    pass, instead of training silently on fewer examples.

    Args:
        dataset: Unbatched `tf.data.Dataset` of `(image, label)`.
        count: Examples to keep.
        num_classes: Number of classes; labels lie in
            `[0, num_classes)`.

    Returns:
        The balanced `tf.data.Dataset`, lazy like its input.

    Example:

    >>> labels = tf.data.Dataset.from_tensor_slices([0] * 50 + [1] * 5)
    >>> pairs = tf.data.Dataset.zip((labels, labels))
    >>> sorted(int(y) for _, y in balanced_take(pairs, 8, num_classes=2))
    [0, 0, 0, 0, 1, 1, 1, 1]
    """
    base, extra = divmod(count, num_classes)

    def admit(counts, example):
        # counts: (num_classes,) examples kept per class so far.
        # A scalar, even when the label's static shape is unknown.
        label = tf.reshape(tf.cast(example[1], tf.int32), [])
        kept_before = tf.reduce_sum(counts)
        extras_given = tf.reduce_sum(tf.cast(counts > base, tf.int64))
        kept_of_class = counts[label]
        keep = tf.logical_or(
            kept_of_class < base,
            tf.logical_and(kept_of_class == base, extras_given < extra),
        )
        counts = tf.tensor_scatter_nd_add(
            counts, [[label]], [tf.cast(keep, tf.int64)]
        )
        return counts, (example, keep, kept_before)

    return (
        dataset.scan(tf.zeros([num_classes], tf.int64), admit)
        # Ends the stream at the first example after the last one kept. A
        # `take(count)` after the filter would not: tf.data parallelizes
        # the map below, which reads ahead, and reading ahead past a
        # filter that rejects everything drains the whole stream.
        .take_while(lambda example, keep, kept_before: kept_before < count)
        .filter(lambda example, keep, kept_before: keep)
        .map(lambda example, keep, kept_before: example)
        # Known size for Keras's progress bar; a short subset fails loudly
        # ("expected to contain `count` elements") rather than silently.
        .apply(tf.data.experimental.assert_cardinality(count))
    )


#: Examples per block of `hold_out`: each block holds out its share.
HOLD_OUT_BLOCK = 100


def _held_out_in_block(block, positions, fraction, seed):
    """Whether each of `positions` (ints < HOLD_OUT_BLOCK) of `block` is held out."""
    block = tf.cast(block, tf.int64)
    # (HOLD_OUT_BLOCK,) one random key per position, the same every pass.
    keys = tf.random.stateless_uniform(
        [HOLD_OUT_BLOCK], seed=tf.stack([tf.constant(seed, tf.int64), block])
    )
    # (len(positions),) how many keys of the block are smaller.
    ranks = tf.reduce_sum(
        tf.cast(keys[None, :] < tf.gather(keys, positions)[:, None], tf.int64),
        axis=1,
    )
    first = tf.cast(block * HOLD_OUT_BLOCK, tf.float64)
    quota = tf.floor((first + HOLD_OUT_BLOCK) * fraction + 0.5) - tf.floor(
        first * fraction + 0.5
    )
    return tf.cast(ranks, tf.float64) < quota


def held_out_count(num_examples, fraction, seed=0):
    """How many of the first `num_examples` `hold_out` sends to validation.

    Example:

    >>> held_out_count(200, 0.25), held_out_count(1000, 0.1)
    (50, 100)
    """
    full_blocks, rest = divmod(int(num_examples), HOLD_OUT_BLOCK)
    count = int(full_blocks * HOLD_OUT_BLOCK * fraction + 0.5)
    if rest:
        in_last_block = _held_out_in_block(
            full_blocks, tf.range(rest, dtype=tf.int64), fraction, seed
        )
        count += int(tf.reduce_sum(tf.cast(in_last_block, tf.int32)))
    return count


def hold_out(dataset, fraction, seed=0):
    """Splits a stream into `(train, validation)` without reading it.

    The stream is cut into blocks of 100 consecutive examples; in each
    block, `fraction` of the positions (rounded so that every 100-example
    prefix holds exactly `round(fraction * length)`) go to validation, at
    positions drawn from `seed` and the block's index. The validation set
    thus samples the whole stream, even one sorted or cycling by class,
    and no size needs to be known; `held_out_count` gives its size. Each
    split reads the whole stream and drops the other's examples, so the
    stream must come in the same order on every pass (no reshuffling)
    for the splits to stay disjoint.

    Args:
        dataset: A `tf.data.Dataset`.
        fraction: Share held out, in [0, 1).
        seed: Seed of the positions held out. Defaults to `0`.

    Returns:
        `(train, validation)`, two disjoint lazy `tf.data.Dataset`s.

    Example:

    >>> train, validation = hold_out(tf.data.Dataset.range(1000), 0.1)
    >>> held = list(validation.as_numpy_iterator())
    >>> len(held), len(list(train)), len(set(held) & set(train.as_numpy_iterator()))
    (100, 900, 0)
    """

    def is_held_out(index, element):
        block, position = index // HOLD_OUT_BLOCK, index % HOLD_OUT_BLOCK
        return _held_out_in_block(block, position[None], fraction, seed)[0]

    def drop_index(index, element):
        return element

    indexed = dataset.enumerate()
    train = indexed.filter(
        lambda i, e: tf.logical_not(is_held_out(i, e))
    ).map(drop_index)
    validation = indexed.filter(is_held_out).map(drop_index)
    size = int(dataset.cardinality())
    if size >= 0:
        # Filtering loses the size; Keras's progress bar wants it back.
        held = held_out_count(size, fraction, seed)
        train = train.apply(tf.data.experimental.assert_cardinality(size - held))
        validation = validation.apply(
            tf.data.experimental.assert_cardinality(held)
        )
    return train, validation
