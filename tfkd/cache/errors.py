"""The errors a `TeacherCache` raises when a cache on disk cannot be trusted."""


class InvalidCacheError(ValueError):
    """A cache directory is incomplete, truncated or corrupted.

    Raised by `TeacherCache.open` (and `TeacherCache.verify`) instead of
    training on outputs that do not match their inputs. The message names
    the file at fault and how to recover (delete the directory and build
    again, or open with `on_stale="rebuild"`).

    Example:

    >>> try:  # doctest: +SKIP
    ...     cache = tfkd.TeacherCache.open("cache/fmnist")
    ... except tfkd.cache.InvalidCacheError as error:
    ...     print(error)
    """


class StaleCacheError(InvalidCacheError):
    """A valid cache that no longer matches the teacher or the data.

    Raised by `TeacherCache.open(path, teacher=..., dataset=...)` when the
    teacher's weights or the input data differ from those the cache was
    built from: its outputs are then another model's (or other images').

    Example:

    >>> try:  # doctest: +SKIP
    ...     cache = tfkd.TeacherCache.open("cache/fmnist", teacher=teacher)
    ... except tfkd.cache.StaleCacheError:
    ...     cache = tfkd.TeacherCache.open(
    ...         "cache/fmnist", teacher=teacher, dataset=train_ds,
    ...         on_stale="rebuild")
    """
