"""Image-classification datasets as batched, prefetched `tf.data` pipelines.

`load("fashion_mnist")` works offline: it reads the IDX files from Keras's
dataset cache (`~/.keras/datasets/fashion-mnist/`) or from
`/usr/share/datasets/fashion-mnist/` (Debian: `apt-get install
dataset-fashion-mnist`), and only then tries Keras's download; its 60,000
small images are held in memory. Any other name is streamed from
`tensorflow-datasets` (`tfkd.data.tfds_datasets`): tfds downloads and
prepares the data once, then reads it shard by shard, never all at once.
A `tf.data.Dataset` of your own goes through `tfkd.data.from_dataset`.

Images come out as float32 in [0, 1], shape `(height, width, channels)`;
labels as int32 class ids. Every model in tfkd expects this convention.
"""

import os

import numpy as np

from tfkd import backend_support
from tfkd.data import idx
from tfkd.data import pipelines
from tfkd.data import tfds_datasets
from tfkd.data.image_dataset import ImageDataset
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "tfkd.data's tf.data pipelines",
    "tfkd.data.load_fashion_mnist_arrays (NumPy arrays) with fit(x, y) "
    "or a keras.utils.PyDataset",
)

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
#: Environment variable naming an extra directory of Fashion-MNIST IDX files.
FASHION_MNIST_DIR_ENV = "TFKD_FASHION_MNIST_DIR"


def fashion_mnist_directories():
    """Directories searched for Fashion-MNIST IDX files, in order."""
    directories = []
    if os.environ.get(FASHION_MNIST_DIR_ENV):
        directories.append(os.environ[FASHION_MNIST_DIR_ENV])
    keras_home = os.environ.get(
        "KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")
    )
    directories.append(os.path.join(keras_home, "datasets", "fashion-mnist"))
    directories.append("/usr/share/datasets/fashion-mnist")
    return directories


def _find_idx(directory, stem):
    for candidate in (stem + ".gz", stem):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_fashion_mnist_arrays(directories=None, download=True):
    """Loads Fashion-MNIST as NumPy arrays, offline when possible.

    Args:
        directories: Directories to search for the four IDX files (plain or
            gzipped). Defaults to `fashion_mnist_directories()`.
        download: Whether to fall back on Keras's download when no
            directory holds the files. Defaults to `True`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images of shape
        `(n, 28, 28)` and uint8 labels.

    Raises:
        FileNotFoundError: when the files are nowhere and cannot be
            downloaded; the message says how to get them.
    """
    directories = (
        fashion_mnist_directories() if directories is None else directories
    )
    for directory in directories:
        paths = {
            key: _find_idx(directory, stem)
            for key, stem in _FASHION_MNIST_FILES.items()
        }
        if all(paths.values()):
            arrays = {key: idx.read_idx(path) for key, path in paths.items()}
            return (arrays["x_train"], arrays["y_train"]), (
                arrays["x_test"],
                arrays["y_test"],
            )
    download_error = None
    if download:
        import keras

        try:
            return keras.datasets.fashion_mnist.load_data()
        except Exception as error:  # no network, proxy, HTTP error...
            download_error = error
    raise FileNotFoundError(
        "Fashion-MNIST was not found in any of "
        f"{list(directories)} and "
        + (
            f"could not be downloaded ({download_error})."
            if download
            else "download=False."
        )
        + " Get it offline with `apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu; files land in /usr/share/datasets/fashion-mnist), "
        f"or point {FASHION_MNIST_DIR_ENV} at a directory holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, or copy "
        "them to ~/.keras/datasets/fashion-mnist/."
    )


def _with_channels(images):
    """uint8 `(n, h, w)` or `(n, h, w, c)` -> `(n, h, w, c)`."""
    return images[..., np.newaxis] if images.ndim == 3 else images


def balanced_subset(labels, count, seed=0):
    """Indices of `count` examples, as equal per class as possible.

    Args:
        labels: 1-D array of class ids.
        count: How many indices to return.
        seed: Seed of the choice. Defaults to `0`.

    Returns:
        A sorted int array of `count` distinct indices.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    chosen = []
    depth = 0
    while len(chosen) < count:
        row = [p[depth] for p in per_class if depth < len(p)]
        if not row:
            break
        chosen.extend(row[: count - len(chosen)])
        depth += 1
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _split_arrays(x, y, validation_fraction, train_examples, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    n_validation = int(round(len(x) * validation_fraction))
    validation_idx = order[:n_validation]
    train_idx = np.sort(order[n_validation:])
    if train_examples is not None and train_examples < len(train_idx):
        train_idx = train_idx[balanced_subset(y[train_idx], train_examples, seed)]
    return (x[train_idx], y[train_idx]), (x[validation_idx], y[validation_idx])


def check_loading_arguments(
    *, batch_size, image_size, channels, validation_fraction, train_examples,
    shuffle_buffer,
):
    """Checks the pipeline arguments `load` and `from_dataset` share.

    Returns:
        `image_size` as a tuple of two ints, or `None`.

    Raises:
        ValueError, TypeError: naming the first invalid argument.
    """
    validation.check_positive_int("batch_size", batch_size)
    validation.check_positive_int("shuffle_buffer", shuffle_buffer)
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, (int, float))
        or not 0.0 <= validation_fraction < 1.0
    ):
        raise validation.invalid_value(
            "validation_fraction", "a float in [0, 1)", validation_fraction
        )
    if train_examples is not None:
        validation.check_positive_int("train_examples", train_examples)
    if channels not in (None, 1, 3):
        raise validation.invalid_value("channels", "None, 1 or 3", channels)
    if image_size is not None:
        try:
            image_size = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            raise validation.invalid_type(
                "image_size", "(height, width) of positive ints", image_size
            ) from None
        if len(image_size) != 2 or min(image_size) <= 0:
            raise validation.invalid_value(
                "image_size", "(height, width) of positive ints", image_size
            )
    return image_size


def load(
    name="fashion_mnist",
    *,
    batch_size=128,
    image_size=None,
    channels=None,
    validation_fraction=0.1,
    train_examples=None,
    seed=0,
    data_dir=None,
    download=True,
    shuffle_buffer=pipelines.DEFAULT_SHUFFLE_BUFFER,
):
    """Loads an image-classification dataset as train/validation/test pipelines.

    `"fashion_mnist"` is read into memory from its IDX files (offline, see
    the module docstring). Any other name is a `tensorflow-datasets`
    dataset, streamed: tfds reads, shards and decodes it as training
    consumes it, and building the pipelines reads only its metadata (see
    `tfkd.data.tfds_datasets.load_tfds`, which also says how the
    validation set and the subset are carved). Every pipeline scales,
    resizes and converts images with TensorFlow ops, batched and
    prefetched. For a `tf.data.Dataset` of your own, use
    `tfkd.data.from_dataset`.

    Args:
        name: `"fashion_mnist"` (offline, see the module docstring) or any
            `tensorflow-datasets` image-classification name (`"mnist"`,
            `"cifar10"`, ...). Defaults to `"fashion_mnist"`.
        batch_size: Examples per batch. Defaults to `128`.
        image_size: Optional `(height, width)` to resize every image to;
            required for tfds datasets whose images vary in size.
            Defaults to `None` (keep the native size).
        channels: Optional 1 or 3: convert grayscale to RGB or back.
            Defaults to `None` (keep).
        validation_fraction: Share of the training split held out for
            validation, in [0, 1). Defaults to `0.1`.
        train_examples: Optional number of training examples to keep
            (class-balanced, after the validation split), for low-data
            experiments. Defaults to `None` (all).
        seed: Seed of the split, the subset and the shuffling (for tfds
            names: of the shuffling only). Defaults to `0`.
        data_dir: For tfds names: where tfds keeps its data. For
            `"fashion_mnist"`: a directory of the four IDX files searched
            first. Defaults to `None`.
        download: Whether a missing dataset may be downloaded. Defaults to
            `True`.
        shuffle_buffer: Examples the training pipeline shuffles among
            (held in memory). Defaults to `10_000`.

    Returns:
        An `ImageDataset`.

    Raises:
        ValueError: for an invalid argument.
        TypeError: for a `name` that is not a string (a
            `tf.data.Dataset` goes to `tfkd.data.from_dataset`).
        FileNotFoundError: when Fashion-MNIST is absent and cannot be
            downloaded (the message says how to get it).

    Example:

    >>> data = load("fashion_mnist", batch_size=64)  # doctest: +SKIP
    >>> data.input_shape, data.num_classes  # doctest: +SKIP
    ((28, 28, 1), 10)
    """
    if not isinstance(name, str):
        expected = "a dataset name (str)"
        if backend_support.is_tf_dataset(name):
            expected += (
                "; for a `tf.data.Dataset`, call "
                "`tfkd.data.from_dataset(dataset, num_classes=...)`"
            )
        raise validation.invalid_type("name", expected, name)
    image_size = check_loading_arguments(
        batch_size=batch_size, image_size=image_size, channels=channels,
        validation_fraction=validation_fraction,
        train_examples=train_examples, shuffle_buffer=shuffle_buffer,
    )
    if name != "fashion_mnist":
        return tfds_datasets.load_tfds(
            name, batch_size=batch_size, image_size=image_size,
            channels=channels, validation_fraction=validation_fraction,
            train_examples=train_examples, seed=seed,
            shuffle_buffer=shuffle_buffer, data_dir=data_dir,
            download=download,
        )
    directories = fashion_mnist_directories()
    if data_dir is not None:
        directories.insert(0, os.fspath(data_dir))
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist_arrays(
        directories, download=download
    )
    x_train, x_test = _with_channels(x_train), _with_channels(x_test)
    (x_tr, y_tr), (x_val, y_val) = _split_arrays(
        x_train, y_train, validation_fraction, train_examples, seed
    )

    def make(x, y, shuffle):
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        return pipelines.to_batches(
            dataset, batch_size, shuffle=shuffle,
            shuffle_buffer=max(1, min(len(x), shuffle_buffer)), seed=seed,
            image_size=image_size, channels=channels,
        )

    height, width = image_size or x_train.shape[1:3]
    depth = channels or x_train.shape[-1]
    return ImageDataset(
        train=make(x_tr, y_tr, shuffle=True),
        validation=make(x_val, y_val, shuffle=False),
        test=make(x_test, y_test, shuffle=False),
        num_classes=len(FASHION_MNIST_CLASS_NAMES),
        input_shape=(int(height), int(width), int(depth)),
        class_names=FASHION_MNIST_CLASS_NAMES,
        num_examples={
            "train": len(x_tr),
            "validation": len(x_val),
            "test": len(x_test),
        },
    )
