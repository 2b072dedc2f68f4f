"""Streams a cache as a `keras.utils.PyDataset`: every backend, no TensorFlow.

The same batches as `tfkd.cache.stream` (its `tf.data` twin), from the same
memory-mapped arrays the reader verified and pinned: `(x, {"labels": y,
"teacher_logits": t})` with `x` decoded as the stream decodes it (the same
bits: uint8 / 255 is correctly rounded in NumPy and TensorFlow alike), `y`
as stored and `t` float32 logits (dense even for a top-k cache). Each batch
gathers its rows from all arrays at once, sorted for locality, so inputs,
labels and outputs cannot drift apart.

Shuffling is a full permutation of the examples per epoch from a NumPy
generator (`seed`, then the epoch number), so a seeded run repeats; the
order differs from `tf.data`'s (another generator), the examples per epoch
are the same. Per-worker shards come from the cache's own selection
(`TeacherCache.open(shard=(i, n))` maps that worker's shards only).
"""

import keras
import numpy as np

from tfkd import teacher_outputs as teacher_outputs_lib
from tfkd.cache import format as format_lib
from tfkd.cache import topk


class CacheBatches(keras.utils.PyDataset):
    """The batches of an opened cache, for `fit` on any Keras backend.

    Use `TeacherCache.dataset()`, which returns one on backends other than
    TensorFlow (or `TeacherCache.dataset(stream="py_dataset")` on any).

    Args:
        arrays: Dict from array name to `np.memmap` (`reader.map_arrays_at`).
        metadata: The cache's metadata dict.
        codec: The `InputCodec` the inputs were stored with.
        batch_size: Examples per batch.
        shuffle: Whether to shuffle the examples each epoch.
        seed: Optional int seed of the shuffle and the choice of views.
        drop_remainder: Whether to drop a last, smaller batch.
        views: `"random"` or `"all"` (see `TeacherCache.dataset`).
        reshuffle_each_iteration: Whether each epoch draws a new order.
    """

    def __init__(
        self,
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
    ):
        # One process, no workers: the gather is a NumPy fancy index, and
        # the memory maps must not be pickled into other processes.
        super().__init__(workers=1, use_multiprocessing=False)
        names = (format_lib.INPUTS, format_lib.LABELS)
        names += format_lib.output_array_names(metadata)
        self._sources = [arrays[name] for name in names]
        self._metadata = metadata
        self._codec = codec
        self._batch_size = batch_size
        self._shuffle = shuffle
        self._seed = seed
        self._drop_remainder = drop_remainder
        self._reshuffle = reshuffle_each_iteration
        self._num_views = metadata["views"]
        self._pick_random_view = self._num_views > 1 and views == "random"
        self._count = metadata[
            "examples" if self._pick_random_view else "rows"
        ]
        # An ensemble's mixture is exact at its build T only.
        self._temperature = format_lib.soft_target_temperature(metadata)
        # Without a seed, each object draws its own orders.
        self._entropy = (
            np.random.SeedSequence().entropy if seed is None else int(seed)
        )
        self._epoch = 0
        self._draw_epoch()

    def _draw_epoch(self):
        """This epoch's row of every position: `(count,)` int64."""
        epoch = self._epoch if self._reshuffle else 0
        generator = np.random.default_rng([self._entropy, epoch])
        order = np.arange(self._count, dtype=np.int64)
        if self._shuffle:
            order = generator.permutation(order)
        if self._pick_random_view:
            # Row i * K + v is view v of example i (`tfkd.cache.views`).
            choice = generator.integers(0, self._num_views, size=self._count)
            order = order * self._num_views + choice
        self._rows = order

    @property
    def num_batches(self):
        """Batches per epoch."""
        if self._drop_remainder:
            return self._count // self._batch_size
        return -(-self._count // self._batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(
                f"Batch {index} of a cache stream of {self.num_batches} "
                "batches."
            )
        start = index * self._batch_size
        # (batch,), sorted: better locality on disk, same batch.
        rows = np.sort(self._rows[start : start + self._batch_size])
        gathered = [
            np.asarray(source[rows]).astype(
                source.dtype.newbyteorder("="), copy=False
            )
            for source in self._sources
        ]
        inputs = self._codec.decode(gathered[0])  # (batch, *input_shape)
        labels = gathered[1]
        if self._metadata["outputs"]["storage"] == "top_k":
            values, positions, fill = gathered[2:]
            logits = topk.reconstruct(
                values, positions, fill, self._metadata["classes"]
            )  # (batch, classes)
        else:
            logits = gathered[2].astype(np.float32)  # (batch, classes)
        targets = {
            teacher_outputs_lib.LABELS_KEY: labels,
            teacher_outputs_lib.TEACHER_LOGITS_KEY: logits,
        }
        if self._temperature is not None:
            targets[teacher_outputs_lib.SOFT_TARGET_TEMPERATURE_KEY] = np.full(
                (len(rows),), self._temperature, np.float32
            )  # (batch,)
        return inputs, targets

    def on_epoch_end(self):
        self._epoch += 1
        if self._reshuffle:
            self._draw_epoch()
