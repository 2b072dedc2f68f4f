"""Teacher outputs computed once: build a cache, stream it every epoch.

>>> cache = tfkd.TeacherCache.build(teacher, train_ds, "cache/fmnist")  # doctest: +SKIP
>>> distiller = tfkd.Distiller(student=student, teacher=None)  # doctest: +SKIP
>>> distiller.compile(optimizer="adam", metrics=["accuracy"])  # doctest: +SKIP
>>> distiller.fit(cache.dataset(batch_size=128), epochs=20)  # doctest: +SKIP

Modules, one job each: `format` (on-disk layout, metadata, checksums),
`fingerprint` (teacher-weight and data fingerprints), `codec` (how inputs
are stored), `topk` (top-k storage and its error), `views` (K fixed
augmented views), `builder` (the streaming, atomic build), `locking` (one
writer per path), `owned` (replace only what tfkd made), `reader` (open one
generation, pinned), `stream` (the `tf.data` pipeline), `row_blocks` and
`join` (logits-only caches re-joined with the user's pipeline), `shards`,
`shard_builds`, `selection` and `concatenated` (sharded builds and
per-worker reads) and `teacher_cache` (the `TeacherCache` class).
"""

from tfkd.cache.errors import InvalidCacheError
from tfkd.cache.errors import StaleCacheError
from tfkd.cache.teacher_cache import TeacherCache
from tfkd.utils.ownership import ForeignPathError

__all__ = ["ForeignPathError", "InvalidCacheError", "StaleCacheError", "TeacherCache"]
