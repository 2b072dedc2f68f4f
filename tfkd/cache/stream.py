"""Streams a cache as `tf.data` batches `(x, {"labels": y, "teacher_logits": t})`.

The pipeline shuffles row *indices*, never data: `range(rows)` is shuffled
with a buffer as large as the dataset (8 bytes per example: 10 MB for
ImageNet), so every epoch is a full uniform permutation. Each batch of
indices is sorted (better locality on disk; the batch's content is
unchanged) and gathered from the memory-mapped files with one
`tf.numpy_function` call per batch, so inputs, labels and teacher outputs
are always taken at the same rows and cannot drift apart. Only the pages
touched are read: a cache larger than RAM streams from disk (random reads,
so an SSD is advisable), a small one from the page cache.

Decoding (uint8 -> float32 / 255, float16 -> float32, top-k -> dense
logits) runs as TensorFlow ops in the same parallel map, and the dataset
prefetches. Batches have a static trailing shape and an unknown batch
dimension, as `tf.distribute` expects: under `MirroredStrategy`, Keras's
`fit` splits each global batch across replicas. The Python gather cannot
run in a `tf.data` service or be serialized; for multi-worker training
each worker streams its own copy of the cache, sharded by `DATA`, or,
from a sharded cache opened with `shard=(i, n)`, its own shards only.
"""

import numpy as np

from tfkd import backend_support
from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.cache import format as format_lib
from tfkd.cache import topk
from tfkd.cache import views as views_lib

tf = backend_support.lazy_tensorflow(
    "TeacherCache.dataset() as a tf.data pipeline",
    "TeacherCache.dataset(stream='py_dataset') (a keras.utils.PyDataset)",
)


def make_dataset(
    arrays,
    metadata,
    codec,
    *,
    batch_size,
    shuffle,
    seed,
    drop_remainder,
    views,
    reshuffle_each_iteration,
    auto_shard_policy=None,
):
    """Builds the training stream of an opened cache.

    Args:
        arrays: Dict from array name to `np.memmap` (`reader.map_arrays_at`).
        metadata: The cache's metadata dict.
        codec: The `InputCodec` the inputs were stored with.
        batch_size: Examples per batch.
        shuffle: Whether to shuffle examples, each epoch anew when
            `reshuffle_each_iteration`.
        seed: Optional int seed of the shuffle and of the choice of views.
        drop_remainder: Whether to drop a last, smaller batch.
        views: `"random"` (each example once, in one of its views) or
            `"all"` (every stored view once).
        reshuffle_each_iteration: Whether each epoch draws a new order.
        auto_shard_policy: How `tf.distribute` splits the stream across
            workers: `DATA` (each worker streams every row and keeps its
            share of each batch) or `OFF` (the rows are this worker's own
            shards already). Defaults to `None` (`DATA`).

    Returns:
        A `tf.data.Dataset`.
    """
    names = (format_lib.INPUTS, format_lib.LABELS) + format_lib.output_array_names(
        metadata
    )
    sources = [arrays[name] for name in names]
    num_views = metadata["views"]
    pick_random_view = num_views > 1 and views == "random"
    count = metadata["examples"] if pick_random_view else metadata["rows"]
    # An ensemble's mixture is exact at its build T only; the Distiller's
    # pre-flight compares it with its own T.
    temperature = format_lib.soft_target_temperature(metadata)

    def gather(rows):
        # Fancy indexing copies just these rows out of the memory maps.
        return tuple(np.asarray(source[rows]) for source in sources)

    def load(indices, view_seed=None):
        if pick_random_view:
            indices = views_lib.choose_view_rows(indices, num_views, view_seed)
        rows = tf.sort(indices)  # (batch,)
        gathered = tf.numpy_function(
            gather,
            [rows],
            Tout=[tf.as_dtype(source.dtype.newbyteorder("=")) for source in sources],
            stateful=False,
        )
        for tensor, source in zip(gathered, sources):
            tensor.set_shape((None,) + source.shape[1:])
        inputs = codec.decode_tensor(gathered[0])  # (batch, *input_shape)
        labels = gathered[1]
        if metadata["outputs"]["storage"] == "top_k":
            values, positions, fill = gathered[2:]
            logits = topk.reconstruct_tensor(
                values, positions, fill, metadata["classes"]
            )  # (batch, classes)
        else:
            logits = tf.cast(gathered[2], tf.float32)  # (batch, classes)
        return inputs, teacher_outputs_lib.attach_teacher_logits(
            labels, logits, temperature
        )

    indices = tf.data.Dataset.range(count)
    if shuffle:
        indices = indices.shuffle(
            count, seed=seed, reshuffle_each_iteration=reshuffle_each_iteration
        )
    indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    if pick_random_view:
        view_seeds = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=reshuffle_each_iteration
        )
        indices = tf.data.Dataset.zip(indices, view_seeds)
    dataset = indices.map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if auto_shard_policy is None:
        auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options = tf.data.Options()
    # The source is a range, not files: shard the elements across workers
    # (DATA), unless the rows are this worker's own shards (OFF).
    options.experimental_distribute.auto_shard_policy = auto_shard_policy
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
