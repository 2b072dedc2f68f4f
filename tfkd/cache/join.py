"""Re-joins a logits-only cache with the user's own input pipeline.

A cache built with `store_inputs=False` holds the teacher's outputs by
position: row i is the output for the i-th example the (deterministic)
pipeline yielded at build time. `attach` pairs them again:

    user batches --unbatch--> examples --batch(1024)--> blocks
        --(block b: check its digest, gather rows [1024 b, 1024 b + n))-->
        joined blocks --unbatch--> (x, y, t) examples
        --shuffle(buffer)--> --batch(batch_size)--> training batches

Blocks are aligned on positions 0, 1024, 2048, ... whatever the user's
batch size, so each block's digest (`tfkd.cache.row_blocks`) can be
checked by a pure function, in parallel, as the data streams: no state is
carried from one batch to the next. An empty sentinel block after the last
one carries the number of blocks seen, so a pipeline that ends early is
caught too. Shuffling happens after the join, on `(x, y, t)` examples,
so it can never pull an input away from its teacher output.

A mismatch raises `InvalidCacheError` inside the `tf.data` pipeline;
TensorFlow reports it as `tf.errors.InvalidArgumentError` whose message
holds the cache's message (the block, the example range, the counts). Call
`TeacherCache.check_order(dataset)` to get the `StaleCacheError` itself
from a pass over the pipeline before training.
"""

import numpy as np

from tfkd import backend_support
from tfkd import losses
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.cache import errors
from tfkd.cache import format as format_lib
from tfkd.cache import row_blocks
from tfkd.cache import topk
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "TeacherCache.attach (a logits-only cache joined with its tf.data "
    "pipeline)",
    "a cache built with store_inputs=True, read with TeacherCache.dataset()",
)

_HINT = (
    "A logits-only cache must be re-joined with the same deterministic "
    "pipeline, in the same order, it was built from (no shuffle before "
    "`attach`, no changed preprocessing; shuffle with attach's "
    "`shuffle_buffer`). Rebuild the cache if the pipeline changed."
)


def _as_pairs(dataset):
    """`(x, y)` elements; unlabelled pipelines get labels of -1."""
    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) == 1:
        dataset, spec = dataset.map(lambda x: x), spec[0]
    if isinstance(spec, tf.TensorSpec):
        return dataset.map(
            lambda x: (x, tf.fill(tf.shape(x)[:1], tf.constant(losses.UNLABELLED, tf.int32)))
        )
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and all(isinstance(s, tf.TensorSpec) for s in spec)
    ):
        return dataset
    raise validation.invalid_value(
        "dataset",
        "batches `(inputs, labels)` or `inputs` of single tensors, as the "
        "cache was built from",
        spec,
    )


def _check_spec(path, dataset, recorded):
    x_spec, y_spec = dataset.element_spec
    received = (
        np.dtype(x_spec.dtype.as_numpy_dtype).str,
        x_spec.shape[1:],
        np.dtype(y_spec.dtype.as_numpy_dtype).str,
        y_spec.shape[1:],
    )
    expected = (
        recorded["dtype"],
        recorded["shape"],
        recorded["label_dtype"],
        recorded["label_shape"],
    )
    compatible = (
        received[0] == expected[0]
        and received[1].is_compatible_with(expected[1])
        and received[2] == expected[2]
        and received[3].is_compatible_with(expected[3])
    )
    if not compatible:
        name = lambda dtype: np.dtype(dtype).name  # noqa: E731
        raise validation.invalid_value(
            "dataset",
            f"batches of {name(expected[0])} inputs (batch, *{expected[1]}) "
            f"and {name(expected[2])} labels (batch, *{expected[3]}), as the "
            f"cache at {path!r} was built from",
            f"{name(received[0])} inputs (batch, *{received[1].as_list()}), "
            f"{name(received[2])} labels (batch, *{received[3].as_list()})",
        )


def infer_batch_size(dataset):
    """The user's batch size: static, or that of the first batch."""
    x_spec = dataset.element_spec[0]
    static = x_spec.shape[0] if x_spec.shape.rank else None
    if static:
        return int(static)
    for x, _ in dataset.take(1):
        return int(x.shape[0])
    raise validation.invalid_value(
        "dataset", "at least one batch", "an empty dataset"
    )


def mismatch(path, block, rows, digests, received_rows, received_digest):
    """The `InvalidCacheError` for block `block`, or `None` if it matches.

    Args:
        path: The cache (for messages).
        block: Index of the block; `len(digests)` or more for the sentinel
            after the pipeline's last block.
        rows: Examples in the cache.
        digests: The recorded block digests.
        received_rows: Examples the pipeline gave for this block (0 for
            the sentinel).
        received_digest: The digest of those examples (ignored for the
            sentinel).

    Returns:
        An `InvalidCacheError`, or `None`.
    """
    size = row_blocks.ROWS_PER_BLOCK
    start = block * size
    where = f"Teacher cache at {path!r}:"
    if received_rows == 0:  # the sentinel: blocks seen == `block`
        if block == len(digests):
            return None
        return errors.InvalidCacheError(
            f"{where} the pipeline ended after {block} block(s) of "
            f"{size} examples (at most {start} examples) and the cache "
            f"holds {rows} examples. {_HINT}"
        )
    expected_rows = min(size, rows - start)
    if block >= len(digests) or received_rows != expected_rows:
        return errors.InvalidCacheError(
            f"{where} the pipeline yields more or fewer examples than were "
            f"cached: {start + received_rows} examples at block {block} and "
            f"the cache holds {rows}. {_HINT}"
        )
    if received_digest != digests[block]:
        return errors.InvalidCacheError(
            f"{where} examples {start}..{start + received_rows - 1} (row "
            f"block {block}) differ from those the teacher saw: the "
            f"pipeline's order, labels or preprocessing changed. {_HINT}"
        )
    return None


def attach(
    path,
    metadata,
    arrays,
    dataset,
    *,
    batch_size,
    shuffle_buffer,
    seed,
    drop_remainder,
    reshuffle_each_iteration,
    auto_shard_policy,
):
    """The joined `tf.data` pipeline of `TeacherCache.attach`.

    Args:
        path: The cache directory (for messages).
        metadata: The metadata of the rows in `arrays` (one shard's, or an
            unsharded cache's).
        arrays: Dict from output array name to its rows.
        dataset: The user's batched pipeline, already restricted to the
            shard's batches.
        batch_size: Int, or `None` for the user's batch size.
        shuffle_buffer: `None`, or the int buffer of a shuffle of the
            joined examples.
        seed: Optional int seed of that shuffle.
        drop_remainder: Whether to drop a last, smaller batch.
        reshuffle_each_iteration: Whether each epoch shuffles anew.
        auto_shard_policy: The `tf.data` auto-shard policy of the result.

    Returns:
        A `tf.data.Dataset` of `(x, {"labels": y, "teacher_logits": t})`.
    """
    dataset = _as_pairs(dataset)
    _check_spec(path, dataset, metadata["inputs"])
    if batch_size is None:
        batch_size = infer_batch_size(dataset)
    names = format_lib.output_array_names(metadata)
    temperature = format_lib.soft_target_temperature(metadata)
    sources = [arrays[name] for name in names]
    digests = metadata["order"]["block_digests"]
    rows = metadata["rows"]
    classes = metadata["classes"]
    x_spec, y_spec = dataset.element_spec

    def gather(block, inputs, labels):
        received = len(inputs)
        digest = row_blocks.block_digest(inputs, labels) if received else None
        error = mismatch(path, int(block), rows, digests, received, digest)
        if error is not None:
            raise error
        start = int(block) * row_blocks.ROWS_PER_BLOCK
        return tuple(
            np.asarray(source[start:start + received]) for source in sources
        )

    def join(block, element):
        inputs, labels = element
        gathered = tf.numpy_function(
            gather,
            [block, inputs, labels],
            Tout=[tf.as_dtype(s.dtype.newbyteorder("=")) for s in sources],
            stateful=False,
        )
        for tensor, source in zip(gathered, sources):
            tensor.set_shape((None,) + tuple(source.shape[1:]))
        if len(gathered) == 3:
            logits = topk.reconstruct_tensor(*gathered, classes)
        else:
            logits = tf.cast(gathered[0], tf.float32)  # (block, classes)
        return inputs, teacher_outputs_lib.attach_teacher_logits(
            labels, logits, temperature
        )

    sentinel = tf.data.Dataset.from_tensors((
        tf.zeros((0,) + tuple(x_spec.shape[1:]), x_spec.dtype),
        tf.zeros((0,) + tuple(y_spec.shape[1:]), y_spec.dtype),
    ))
    blocks = (
        dataset.unbatch()
        .batch(row_blocks.ROWS_PER_BLOCK)
        .concatenate(sentinel)
        .enumerate()
    )
    joined = blocks.map(
        join, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    ).unbatch()
    if shuffle_buffer is not None:
        joined = joined.shuffle(
            shuffle_buffer, seed=seed,
            reshuffle_each_iteration=reshuffle_each_iteration,
        )
    joined = joined.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = auto_shard_policy
    return joined.with_options(options).prefetch(tf.data.AUTOTUNE)


def check_order(path, metadata, batches):
    """Checks a pipeline's order against the cache, in one Python pass.

    Args:
        path: The cache (for messages).
        metadata: Metadata of a logits-only cache (or shard).
        batches: Iterable of `(inputs, labels)` NumPy batches.

    Raises:
        StaleCacheError: naming the first block that differs, or the
            counts when the pipeline is shorter or longer.
    """
    hasher = row_blocks.BlockHasher()
    for inputs, labels in batches:
        hasher.update(inputs, labels)
    received = hasher.close()
    digests = metadata["order"]["block_digests"]
    seen_rows = hasher.rows
    if seen_rows != metadata["rows"]:
        raise errors.StaleCacheError(
            f"Teacher cache at {path!r}: the pipeline yields {seen_rows} "
            f"examples and the cache holds {metadata['rows']}. {_HINT}"
        )
    for block, (now, then) in enumerate(zip(received, digests)):
        if now != then:
            start = block * row_blocks.ROWS_PER_BLOCK
            raise errors.StaleCacheError(
                f"Teacher cache at {path!r}: examples from {start} (row "
                f"block {block}) differ from those the teacher saw: the "
                f"pipeline's order, labels or preprocessing changed. {_HINT}"
            )
