"""`ImageDataset`: the pipelines every loader of `tfkd.data` returns.

Its own module so that the loaders (`loading`, `tfds_datasets`,
`user_datasets`) share it without importing each other.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Train, validation and test pipelines of one image dataset.

    Attributes:
        train: `tf.data.Dataset` of `(images, labels)` batches, shuffled
            each epoch.
        validation: Same, not shuffled.
        test: Same, not shuffled; `None` when `from_dataset` got no test
            set.
        num_classes: Number of classes.
        input_shape: `(height, width, channels)` of one image.
        class_names: Names of the classes.
        num_examples: Dict of examples per split (`None` for a split of a
            user dataset whose size `tf.data` does not know).
    """

    # Strings: the annotations must not import TensorFlow.
    train: "tf.data.Dataset"
    validation: "tf.data.Dataset"
    test: "tf.data.Dataset"
    num_classes: int
    input_shape: tuple
    class_names: tuple
    num_examples: dict
