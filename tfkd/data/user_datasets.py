"""Your own `tf.data.Dataset` as tfkd's train/validation/test pipelines.

`from_dataset` gives a dataset of `(image, label)` pairs the same
treatment `tfkd.data.load` gives a named one: a validation set held out,
an optional class-balanced subset, preprocessing in the pipeline,
batching and prefetching, all lazily, so the dataset may be larger than
memory or endless. Nothing is read when the pipelines are built.
"""

from tfkd import backend_support
from tfkd.data import pipelines
from tfkd.data.image_dataset import ImageDataset
from tfkd.data.loading import check_loading_arguments
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "tfkd.data.from_dataset (a tf.data pipeline)",
    "your own arrays with fit(x, y) or a keras.utils.PyDataset",
)


def _check_pairs(argument, dataset, allow_none=False):
    """Checks `dataset` yields unbatched `(image, label)` pairs."""
    if dataset is None and allow_none:
        return None
    if not isinstance(dataset, tf.data.Dataset):
        raise validation.invalid_type(
            argument, "a `tf.data.Dataset` of (image, label) pairs"
            + (" or None" if allow_none else ""), dataset,
        )
    spec = dataset.element_spec
    expected = (
        "a `tf.data.Dataset` of unbatched (image, label) pairs: images "
        "(height, width) or (height, width, channels), integer scalar labels"
    )
    if not (
        isinstance(spec, tuple)
        and len(spec) == 2
        and all(isinstance(s, tf.TensorSpec) for s in spec)
        and spec[0].shape.rank in (2, 3)
        and spec[1].shape.rank == 0
        and spec[1].dtype.is_integer
    ):
        raise validation.invalid_value(
            argument, expected, f"a dataset with element_spec {spec}"
        )
    if spec[0].shape.rank == 2:
        dataset = dataset.map(lambda x, y: (x[..., tf.newaxis], y))
    return dataset


def _known_size(dataset):
    size = int(dataset.cardinality())
    return size if size >= 0 else None


def from_dataset(
    dataset,
    *,
    num_classes,
    test=None,
    validation_data=None,
    class_names=None,
    batch_size=128,
    image_size=None,
    channels=None,
    validation_fraction=0.1,
    train_examples=None,
    seed=0,
    shuffle_buffer=pipelines.DEFAULT_SHUFFLE_BUFFER,
):
    """Turns a `tf.data.Dataset` of `(image, label)` into an `ImageDataset`.

    Images may be integer (0-255, divided by 255) or float (taken as
    already in [0, 1]); labels are class ids in `[0, num_classes)`. The
    dataset must be unbatched; call `.unbatch()` on a batched one.

    Without `validation_data`, `validation_fraction` of `dataset` is held
    out with `pipelines.hold_out` (positions drawn from `seed` in each
    block of 100 examples, both parts read lazily from `dataset`); `dataset` must then
    come in the same order on every pass, so do not shuffle it yourself:
    the training pipeline shuffles (`shuffle_buffer` examples in memory).
    `train_examples` keeps a class-balanced subset with
    `pipelines.balanced_take`, re-read each epoch from the start of the
    training part until every class has its quota.

    Args:
        dataset: Unbatched `tf.data.Dataset` of `(image, label)` pairs,
            the training data.
        num_classes: Number of classes (required: a stream does not say).
        test: Optional dataset like `dataset`, the test set. Defaults to
            `None` (the result's `test` is then `None`).
        validation_data: Optional dataset like `dataset`, the validation
            set; when given, nothing is held out of `dataset`. Defaults
            to `None`.
        class_names: Optional names of the classes. Defaults to `None`
            (`"0"`, `"1"`, ...).
        batch_size: Examples per batch. Defaults to `128`.
        image_size: Optional `(height, width)` to resize every image to;
            required when the images have no fixed size. Defaults to
            `None`.
        channels: Optional 1 or 3: convert grayscale to RGB or back.
            Defaults to `None` (keep).
        validation_fraction: Share of `dataset` held out for validation
            when `validation_data` is `None`, in [0, 1). Defaults to
            `0.1`.
        train_examples: Optional number of training examples to keep,
            class-balanced. Defaults to `None` (all).
        seed: Seed of the held-out positions and of the shuffling.
            Defaults to `0`.
        shuffle_buffer: Examples in the training shuffle buffer. Defaults
            to `10_000`.

    Returns:
        An `ImageDataset`. `num_examples` holds the split sizes when
        `dataset.cardinality()` knows them, `None` otherwise.

    Raises:
        ValueError: for an invalid argument, e.g. `num_classes` missing,
            a dataset that does not yield `(image, label)` pairs, or an
            endless (`.repeat()`ed) dataset without `validation_data`.
        TypeError: for an argument of the wrong type.

    Example:

    >>> import numpy as np
    >>> images = np.zeros((100, 28, 28), np.uint8)
    >>> labels = np.arange(100) % 10
    >>> stream = tf.data.Dataset.from_tensor_slices((images, labels))
    >>> data = from_dataset(stream, num_classes=10, batch_size=32,
    ...                     train_examples=50)
    >>> data.input_shape, data.num_examples
    ((28, 28, 1), {'train': 50, 'validation': 10, 'test': None})
    >>> batch_images, batch_labels = next(iter(data.train))
    >>> batch_images.shape, batch_images.dtype.name
    (TensorShape([32, 28, 28, 1]), 'float32')
    """
    dataset = _check_pairs("dataset", dataset)
    test = _check_pairs("test", test, allow_none=True)
    validation_data = _check_pairs(
        "validation_data", validation_data, allow_none=True
    )
    image_size = check_loading_arguments(
        batch_size=batch_size, image_size=image_size, channels=channels,
        validation_fraction=validation_fraction,
        train_examples=train_examples, shuffle_buffer=shuffle_buffer,
    )
    num_classes, class_names = _check_classes(num_classes, class_names)
    input_shape = _input_shape(dataset, image_size, channels)
    train, validation_data, n_train, n_validation = _train_and_validation(
        dataset, validation_data, validation_fraction=validation_fraction,
        train_examples=train_examples, num_classes=num_classes, seed=seed)

    def batches(stream, shuffle):
        return pipelines.to_batches(
            stream, batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
            seed=seed, image_size=image_size, channels=channels,
        )

    return ImageDataset(
        train=batches(train, True),
        validation=batches(validation_data, False),
        test=None if test is None else batches(test, False),
        num_classes=num_classes,
        input_shape=input_shape,
        class_names=class_names,
        num_examples={
            "train": n_train,
            "validation": n_validation,
            "test": None if test is None else _known_size(test),
        },
    )


def _check_classes(num_classes, class_names):
    """`(num_classes, class_names)` checked; names default to "0", "1", ..."""
    if num_classes is None:
        raise validation.invalid_value(
            "num_classes",
            "the number of classes (an int >= 2): a `tf.data.Dataset` does "
            "not say how many classes it has",
            num_classes,
        )
    num_classes = validation.check_int(
        "num_classes", num_classes, minimum=2, expected="an int >= 2"
    )
    if class_names is None:
        return num_classes, tuple(str(i) for i in range(num_classes))
    class_names = tuple(str(c) for c in class_names)
    if len(class_names) != num_classes:
        raise validation.invalid_value(
            "class_names", f"{num_classes} names (num_classes)", class_names,
        )
    return num_classes, class_names


def _input_shape(dataset, image_size, channels):
    """The model input shape: `image_size`/`channels` or the images' own."""
    shape = tuple(dataset.element_spec[0].shape)
    if image_size is None and None in shape[:2]:
        raise validation.invalid_value(
            "image_size",
            f"(height, width): the images have no fixed size ({shape})",
            image_size,
        )
    if channels is None and shape[2] is None:
        raise validation.invalid_value(
            "channels",
            f"1 or 3: the images have no fixed channel count ({shape})",
            channels,
        )
    height, width = image_size or shape[:2]
    return (int(height), int(width), int(channels or shape[2]))


def _train_and_validation(dataset, validation_data, *, validation_fraction,
                          train_examples, num_classes, seed):
    """`(train, validation, n_train, n_validation)` streams and their sizes
    (`None` when unknown): validation held out of `dataset` unless given,
    training cut to a class-balanced `train_examples` if asked."""
    size = _known_size(dataset)
    endless = int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY
    if validation_data is None and endless:
        raise validation.invalid_value(
            "validation_data",
            "a validation dataset: `dataset` repeats forever, so a share "
            "held out of it would never end",
            validation_data,
        )
    if validation_data is None:
        train, validation_data = pipelines.hold_out(
            dataset, validation_fraction, seed
        )
        n_validation = (
            None if size is None
            else pipelines.held_out_count(size, validation_fraction, seed)
        )
        n_train = None if size is None else size - n_validation
    else:
        train = dataset
        n_train, n_validation = size, _known_size(validation_data)
    if train_examples is not None and (n_train is None or train_examples < n_train):
        train = pipelines.balanced_take(train, train_examples, num_classes)
        n_train = train_examples
    return train, validation_data, n_train, n_validation
