"""tensorflow-datasets splits streamed as `tf.data` pipelines.

tfds does the reading: `builder.as_dataset` interleaves the split's
TFRecord shards, shuffles the shard order of the training split and
decodes images on the fly. Nothing is read when the pipelines are built;
the number of examples comes from the dataset's metadata. The validation
set is carved with tfds's split slicing (`train[:N]` / `train[N:]`), so
tfds reads only the shards each part needs.

Needs the `tfds` extra (`pip install "tfkd[tfds]"`).
"""

from tfkd import backend_support
from tfkd.data import pipelines
from tfkd.data.image_dataset import ImageDataset

tf = backend_support.lazy_tensorflow(
    "streaming a tensorflow-datasets dataset",
    "tfkd.data.load_fashion_mnist_arrays, or your own arrays in a "
    "keras.utils.PyDataset",
)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Loading a tensorflow-datasets dataset needs the package "
            "`tensorflow-datasets`: pip install \"tfkd[tfds]\"."
        ) from error
    return tfds


def _supervised_features(name, info, tfds):
    """The image and label feature names, checked for classification."""
    if not info.supervised_keys or len(info.supervised_keys) != 2:
        raise ValueError(
            "Invalid value for argument `name`. Expected a tfds dataset with "
            "`supervised_keys` (image, label). "
            f"Received: name={name!r} with supervised_keys="
            f"{info.supervised_keys!r}"
        )
    image_key, label_key = info.supervised_keys
    if not isinstance(label_key, str) or not isinstance(
        info.features[label_key], tfds.features.ClassLabel
    ):
        raise ValueError(
            "Invalid value for argument `name`. Expected a tfds dataset whose "
            "label is a `tfds.features.ClassLabel`. "
            f"Received: name={name!r} with label feature {label_key!r}"
        )
    return image_key, label_key


def _image_shape(name, info, image_key, image_size, channels):
    shape = tuple(info.features[image_key].shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise ValueError(
            "Invalid value for argument `name`. Expected a tfds dataset of "
            f"images (height, width, channels). Received: name={name!r} "
            f"with images of shape {shape}"
        )
    if image_size is None and None in shape[:2]:
        raise ValueError(
            "Invalid value for argument `image_size`. Expected (height, "
            f"width) for {name!r}, whose images have no fixed size "
            f"({shape}). Received: image_size=None"
        )
    height, width = image_size or shape[:2]
    return (int(height), int(width), int(channels or shape[2]))


def load_tfds(
    name,
    *,
    batch_size,
    image_size=None,
    channels=None,
    validation_fraction=0.1,
    train_examples=None,
    seed=0,
    shuffle_buffer=pipelines.DEFAULT_SHUFFLE_BUFFER,
    data_dir=None,
    download=True,
):
    """Streams a tfds image-classification dataset; see `tfkd.data.load`.

    The validation set is the last `validation_fraction` of the `"train"`
    split in tfds's order (tfds shuffles examples once, when it prepares
    the dataset), so it does not depend on `seed`. The test set is the
    `"test"` split, or `"validation"` when there is no test split.
    `train_examples` keeps a class-balanced subset with
    `pipelines.balanced_take`: the first examples of each class in the
    split's order, read anew each epoch (a pass that stops once every
    class has its quota) and then shuffled. Only metadata is read here.

    Returns:
        An `ImageDataset`; `num_examples` comes from tfds's metadata (with
        `train_examples`, the subset's size: a class too rare to fill its
        quota makes reading the subset fail, see
        `pipelines.balanced_take`).

    Raises:
        FileNotFoundError: when the dataset is not prepared in `data_dir`
            and `download=False`.
        ValueError: for a dataset that is not image classification with a
            train and a test split, or images of no fixed size without
            `image_size`.

    Example:

    >>> data = load_tfds("mnist", batch_size=64)  # doctest: +SKIP
    >>> data.input_shape, data.num_classes  # doctest: +SKIP
    ((28, 28, 1), 10)
    """
    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    elif not builder.is_prepared():
        where = data_dir or "the default tfds data directory"
        raise FileNotFoundError(
            f"The tfds dataset {name!r} is not prepared in {where} and "
            "download=False. Prepare it once with download=True (which needs "
            "network access for most datasets), or pass the `data_dir` that "
            "holds it."
        )
    info = builder.info
    image_key, label_key = _supervised_features(name, info, tfds)
    test_split = _test_split(name, info)
    input_shape = _image_shape(name, info, image_key, image_size, channels)
    label_feature = info.features[label_key]
    num_classes = label_feature.num_classes

    total = info.splits["train"].num_examples
    n_validation = int(total * validation_fraction + 0.5)
    n_train = total - n_validation
    subset = train_examples is not None and train_examples < n_train

    def read(split, shuffle_files):
        return _read_split(tfds, builder, split, image_key, shuffle_files, seed)

    # A subset is chosen by stream order, which must then be the same each
    # epoch: no shard shuffling before `balanced_take`.
    train = read(f"train[:{n_train}]", shuffle_files=not subset)
    if subset:
        train = pipelines.balanced_take(train, train_examples, num_classes)
        n_train = train_examples
    if n_validation:
        validation_stream = read(
            f"train[{total - n_validation}:]", shuffle_files=False
        )
    else:
        validation_stream = read("train", shuffle_files=False).take(0)
    test = read(test_split, shuffle_files=False)

    def batches(dataset, shuffle, size):
        return pipelines.to_batches(
            dataset, batch_size, shuffle=shuffle,
            shuffle_buffer=max(1, min(size, shuffle_buffer)), seed=seed,
            image_size=image_size, channels=channels,
        )

    return ImageDataset(
        train=batches(train, True, n_train),
        validation=batches(validation_stream, False, n_validation),
        test=batches(test, False, 1),
        num_classes=int(num_classes),
        input_shape=input_shape,
        class_names=tuple(label_feature.names),
        num_examples={
            "train": n_train,
            "validation": n_validation,
            "test": info.splits[test_split].num_examples,
        },
    )


def _test_split(name, info):
    """The split to test on: "test", else "validation"; needs "train" too."""
    splits = list(info.splits.keys())
    test_split = "test" if "test" in splits else (
        "validation" if "validation" in splits else None
    )
    if "train" not in splits or test_split is None:
        raise ValueError(
            f"Invalid value for argument `name`. Expected a tfds dataset "
            f"with a 'train' and a 'test' (or 'validation') split. "
            f"Received: name={name!r} with splits {splits}"
        )
    return test_split


def _read_split(tfds, builder, split, image_key, shuffle_files, seed):
    """tfds's own streaming read of `split` as `(image, label)` pairs, with
    a channel axis added to 2-D images."""
    # try_autocache=False: tfds would otherwise cache a small split in
    # memory on its first pass, which is the materialisation we avoid.
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, try_autocache=False, add_tfds_id=False
    )
    dataset = builder.as_dataset(
        split=split, as_supervised=True, shuffle_files=shuffle_files,
        read_config=read_config,
    )
    if len(builder.info.features[image_key].shape) == 2:
        dataset = dataset.map(lambda x, y: (x[..., tf.newaxis], y))
    return dataset
