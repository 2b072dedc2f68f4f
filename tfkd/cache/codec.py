"""How a cache stores its inputs, and how the stream gets them back.

Images in tfkd are float32 in [0, 1], most of them 8-bit images divided by
255. Those are stored as uint8 (4x smaller than float32, bit-exact on the
way back: float32(k) / 255 is correctly rounded in both NumPy and
TensorFlow). Other inputs are stored in their own dtype, or cast to
float16/float32 on request.

The rule that keeps a cache consistent: the teacher is run on
`decode(encode(x))`, the very tensor the student will get from the stream,
so a lossy storage dtype (float16, or uint8 on non-8-bit images) never
makes the teacher and the student see different inputs.
"""

import numpy as np

from tfkd import backend_support
from tfkd.utils import validation

tf = backend_support.lazy_tensorflow(
    "decoding cached inputs inside a tf.data pipeline",
    "TeacherCache.dataset(stream='py_dataset') (a keras.utils.PyDataset)",
)

#: The values `TeacherCache.build(input_dtype=...)` accepts.
INPUT_DTYPES = ("auto", "uint8", "float16", "float32")

_UNIT_SCALE = 255.0


def _decode_unit_uint8(stored, source_dtype):
    # Same operation order as tfkd.data.preprocess, so the bits match.
    return (stored.astype(np.float32) / np.float32(_UNIT_SCALE)).astype(
        source_dtype
    )


class InputCodec:
    """Encodes input batches for storage and decodes them for training.

    Use `InputCodec.resolve` to build one from the first batch.

    Args:
        kind: `"unit_uint8"` (floats in [0, 1] stored as round(255 x)),
            `"cast"` (stored as `stored_dtype`) or `"identity"`.
        source_dtype: Dtype of the inputs as the dataset yields them.
        stored_dtype: Dtype on disk.
    """

    def __init__(self, kind, source_dtype, stored_dtype):
        self.kind = kind
        self.source_dtype = np.dtype(source_dtype)
        self.stored_dtype = np.dtype(stored_dtype)

    @classmethod
    def resolve(cls, input_dtype, first_inputs):
        """Chooses the storage of inputs like `first_inputs`.

        Args:
            input_dtype: One of `INPUT_DTYPES`. `"auto"` stores uint8 when
                the first batch is exactly 8-bit images scaled to [0, 1],
                and the inputs' own dtype otherwise.
            first_inputs: NumPy array, the first batch of inputs.

        Returns:
            An `InputCodec`.

        Raises:
            ValueError: for an unknown `input_dtype`, or `"uint8"` for
                inputs that are neither uint8 nor floats in [0, 1].
        """
        validation.check_choice("input_dtype", input_dtype, INPUT_DTYPES)
        source = first_inputs.dtype
        floating = np.issubdtype(source, np.floating)
        if input_dtype == "auto":
            if floating:
                candidate = cls("unit_uint8", source, np.uint8)
                if candidate.is_exact(first_inputs):
                    return candidate
            return cls("identity", source, source)
        if input_dtype == "uint8":
            if source == np.uint8:
                return cls("identity", source, source)
            in_unit_range = floating and (
                first_inputs.size == 0
                or (first_inputs.min() >= 0.0 and first_inputs.max() <= 1.0)
            )
            if not in_unit_range:
                raise validation.invalid_value(
                    "input_dtype",
                    "'uint8' only for uint8 inputs or float images in "
                    f"[0, 1]; these inputs are {source}"
                    + (
                        f" from {first_inputs.min()} to {first_inputs.max()}"
                        if first_inputs.size
                        else ""
                    ),
                    input_dtype,
                )
            return cls("unit_uint8", source, np.uint8)
        if np.dtype(input_dtype) == source:
            return cls("identity", source, source)
        return cls("cast", source, input_dtype)

    def encode(self, inputs):
        """NumPy inputs `(batch, ...)` -> the stored array."""
        if self.kind == "unit_uint8":
            scaled = np.rint(np.clip(inputs, 0.0, 1.0) * _UNIT_SCALE)
            return scaled.astype(np.uint8)
        return inputs.astype(self.stored_dtype, copy=False)

    def decode(self, stored):
        """Stored NumPy array -> inputs as the stream yields them."""
        if self.kind == "unit_uint8":
            return _decode_unit_uint8(stored, self.source_dtype)
        return stored.astype(self.source_dtype, copy=False)

    def decode_tensor(self, stored):
        """Stored batch tensor -> inputs, inside a `tf.data` map."""
        if self.kind == "unit_uint8":
            decoded = tf.cast(stored, tf.float32) / _UNIT_SCALE
            return tf.cast(decoded, self.source_dtype)
        return tf.cast(stored, self.source_dtype)

    def is_exact(self, inputs):
        """Whether storing `inputs` loses nothing (bit-for-bit round trip)."""
        decoded = self.decode(self.encode(inputs))
        return bool(np.array_equal(decoded, inputs))

    def get_config(self):
        """The metadata entry that `from_config` reads back."""
        return {
            "kind": self.kind,
            "source_dtype": self.source_dtype.str,
            "stored_dtype": self.stored_dtype.str,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the codec recorded in a cache's metadata."""
        return cls(
            config["kind"], config["source_dtype"], config["stored_dtype"]
        )
