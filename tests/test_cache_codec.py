"""Tests of tfkd/cache/codec.py: how inputs are stored and decoded."""

import numpy as np
import pytest
import tensorflow as tf

from tfkd import data
from tfkd.cache import codec as codec_lib


def _eight_bit_images():
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    images, _ = data.preprocess(pixels, np.zeros(4))  # tfkd's own scaling
    return pixels, images.numpy()


def test_auto_stores_eight_bit_images_as_uint8_bit_exactly():
    pixels, images = _eight_bit_images()
    codec = codec_lib.InputCodec.resolve("auto", images)
    assert codec.kind == "unit_uint8"
    stored = codec.encode(images)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, pixels)
    decoded = codec.decode(stored)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded.view(np.uint32), images.view(np.uint32))
    # The stream decodes with TensorFlow: the very same bits.
    in_graph = codec.decode_tensor(tf.constant(stored)).numpy()
    assert np.array_equal(in_graph.view(np.uint32), images.view(np.uint32))


def test_auto_keeps_other_inputs_in_their_own_dtype():
    _, images = _eight_bit_images()
    noisy = images + np.float32(1e-3)
    codec = codec_lib.InputCodec.resolve("auto", noisy)
    assert codec.kind == "identity"
    assert codec.stored_dtype == np.float32
    np.testing.assert_array_equal(codec.decode(codec.encode(noisy)), noisy)


def test_float16_storage_is_lossy_but_decodes_consistently():
    _, images = _eight_bit_images()
    noisy = images + np.float32(1e-4)
    codec = codec_lib.InputCodec.resolve("float16", noisy)
    stored = codec.encode(noisy)
    assert stored.dtype == np.float16
    assert not codec.is_exact(noisy)
    np.testing.assert_array_equal(
        codec.decode(stored), codec.decode_tensor(tf.constant(stored)).numpy()
    )
    np.testing.assert_allclose(codec.decode(stored), noisy, atol=2**-11)


def test_explicit_uint8_quantizes_unit_floats_and_refuses_others():
    _, images = _eight_bit_images()
    noisy = np.clip(images + np.float32(1e-3), 0, 1)
    codec = codec_lib.InputCodec.resolve("uint8", noisy)
    np.testing.assert_allclose(codec.decode(codec.encode(noisy)), noisy, atol=1 / 510)
    with pytest.raises(ValueError, match="float images in \\[0, 1\\]"):
        codec_lib.InputCodec.resolve("uint8", images * 255.0)


def test_unknown_input_dtype_is_refused_in_keras_wording():
    with pytest.raises(ValueError, match="Invalid value for argument `input_dtype`"):
        codec_lib.InputCodec.resolve("int8", np.zeros((1, 2), np.float32))


def test_config_round_trips():
    _, images = _eight_bit_images()
    codec = codec_lib.InputCodec.resolve("auto", images)
    again = codec_lib.InputCodec.from_config(codec.get_config())
    assert again.get_config() == codec.get_config()
