"""Tests of tfkd/cache/py_stream.py and of building a cache without tf.data.

On every Keras backend: a cache built from NumPy batches with a plain Keras
teacher, read back through the `keras.utils.PyDataset`. On TensorFlow also:
the same bytes on disk as a `tf.data` build, and the same batches as the
`tf.data` stream.
"""

import os

import keras
import numpy as np
import pytest

from tfkd.cache import TeacherCache
from tfkd.cache import py_stream

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
needs_tensorflow = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="compares with the tf.data path"
)

N, BATCH = 40, 16


def _data(seed=0):
    rng = np.random.default_rng(seed)
    # 8-bit images scaled to [0, 1]: stored as uint8, bit-exact.
    x = (rng.integers(0, 256, size=(N, 4, 4, 1)) / 255.0).astype("float32")
    y = rng.integers(0, 5, size=N).astype("int32")
    y[::7] = -1  # unlabelled examples stay -1
    return x, y


def _batches(x, y, batch=BATCH):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def _teacher(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]
    )


def _epoch(stream):
    """Every batch of one epoch as NumPy `(x, labels, logits)`."""
    if isinstance(stream, keras.utils.PyDataset):
        batches = [stream[i] for i in range(len(stream))]
        stream.on_epoch_end()
    else:
        batches = list(stream.as_numpy_iterator())
    return [
        (np.asarray(x), np.asarray(t["labels"]), np.asarray(t["teacher_logits"]))
        for x, t in batches
    ]


def _concatenated(epoch):
    return [np.concatenate(parts) for parts in zip(*epoch)]


def test_a_cache_built_from_numpy_batches_reads_back_without_tensorflow(tmp_path):
    x, y = _data()
    teacher = _teacher()
    cache = TeacherCache.build(teacher, _batches(x, y), tmp_path / "c", verbose=0,
                               dtype="float32")
    stream = cache.dataset(BATCH, shuffle=False, stream="py_dataset")
    assert isinstance(stream, py_stream.CacheBatches)
    assert len(stream) == 3  # 16 + 16 + 8
    inputs, labels, logits = _concatenated(_epoch(stream))
    np.testing.assert_array_equal(inputs, x)
    np.testing.assert_array_equal(labels, y)
    expected = keras.ops.convert_to_numpy(teacher(x, training=False))
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    assert logits.dtype == np.float32 and inputs.dtype == np.float32


def test_auto_streams_a_py_dataset_off_tensorflow(tmp_path):
    x, y = _data()
    cache = TeacherCache.build(_teacher(), _batches(x, y), tmp_path / "c", verbose=0)
    stream = cache.dataset(8)
    assert isinstance(stream, py_stream.CacheBatches) != ON_TENSORFLOW


def test_a_py_dataset_and_a_generator_build_the_same_cache(tmp_path):
    x, y = _data()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return _batches(x, y)[index]

    from_py = TeacherCache.build(_teacher(), Batches(), tmp_path / "a", verbose=0)
    from_gen = TeacherCache.build(
        _teacher(), (b for b in _batches(x, y)), tmp_path / "b", verbose=0
    )
    assert from_py.metadata["data"] == from_gen.metadata["data"]
    assert from_py.num_examples == N


def test_shuffled_epochs_are_permutations_that_a_seed_repeats(tmp_path):
    x, y = _data()
    cache = TeacherCache.build(_teacher(), _batches(x, y), tmp_path / "c", verbose=0)
    stream = cache.dataset(BATCH, seed=3, stream="py_dataset")
    first, second = _epoch(stream), _epoch(stream)
    # Each epoch shows every example once, inputs still with their labels.
    for epoch in (first, second):
        inputs, labels, _ = _concatenated(epoch)
        order = np.lexsort(inputs.reshape(N, -1).T)
        expected = np.lexsort(x.reshape(N, -1).T)
        np.testing.assert_array_equal(inputs[order], x[expected])
        np.testing.assert_array_equal(labels[order], y[expected])
    assert not np.array_equal(_concatenated(first)[0], _concatenated(second)[0])
    again = cache.dataset(BATCH, seed=3, stream="py_dataset")
    np.testing.assert_array_equal(_concatenated(_epoch(again))[0], _concatenated(first)[0])
    fixed = cache.dataset(BATCH, seed=3, stream="py_dataset", reshuffle_each_iteration=False)
    np.testing.assert_array_equal(
        _concatenated(_epoch(fixed))[0], _concatenated(_epoch(fixed))[0]
    )


def test_random_views_show_each_example_once_in_one_of_its_views(tmp_path):
    x, y = _data()
    flip = keras.layers.RandomFlip("horizontal", seed=0)
    cache = TeacherCache.build(_teacher(), _batches(x, y), tmp_path / "c", verbose=0,
                               views=2, augmentation=flip)
    every = _concatenated(_epoch(cache.dataset(BATCH, shuffle=False, views="all",
                                               stream="py_dataset")))
    assert len(every[0]) == 2 * N
    inputs, labels, logits = _concatenated(
        _epoch(cache.dataset(BATCH, shuffle=False, seed=1, stream="py_dataset"))
    )
    assert len(inputs) == N
    np.testing.assert_array_equal(labels, y)
    views = every[0].reshape((N, 2) + x.shape[1:])
    view_logits = every[2].reshape(N, 2, -1)
    shown = set()
    for i in range(N):
        chosen = [v for v in range(2) if np.array_equal(views[i, v], inputs[i])]
        assert chosen, i
        np.testing.assert_array_equal(logits[i], view_logits[i, chosen[0]])
        if len(chosen) == 1:  # the flip changed this example
            shown.add(chosen[0])
    # Drawn at random: both views are shown (all 0 has odds 2**-N or so).
    assert shown == {0, 1}


def test_a_worker_reads_its_own_shards_only(tmp_path):
    x, y = _data()
    path = tmp_path / "sharded"
    TeacherCache.build(_teacher(), _batches(x, y, 8), path, num_shards=2, verbose=0)
    mine = TeacherCache.open(path, shard=(1, 2), verbose=0)
    inputs, labels, _ = _concatenated(
        _epoch(mine.dataset(8, shuffle=False, stream="py_dataset"))
    )
    # Shard 1 holds the batches 1 and 3 of 8 examples.
    np.testing.assert_array_equal(inputs, np.concatenate([x[8:16], x[24:32]]))
    np.testing.assert_array_equal(labels, np.concatenate([y[8:16], y[24:32]]))
    assert [os.path.basename(p) for p in mine.opened_shards] == ["shard-00001-of-00002"]


def test_bad_datasets_and_streams_are_refused(tmp_path):
    x, y = _data()
    with pytest.raises(TypeError, match="`dataset`.*iterable of NumPy"):
        TeacherCache.build(_teacher(), x, tmp_path / "a", verbose=0)
    with pytest.raises(TypeError, match="`dataset`"):
        TeacherCache.build(_teacher(), 3, tmp_path / "b", verbose=0)
    cache = TeacherCache.build(_teacher(), _batches(x, y), tmp_path / "c", verbose=0)
    with pytest.raises(ValueError, match="`stream`"):
        cache.dataset(8, stream="torch")
    with pytest.raises(IndexError):
        cache.dataset(8, stream="py_dataset")[5]


@needs_tensorflow
@pytest.mark.parametrize(
    "options",
    [{}, {"top_k": 2, "dtype": "float32"}, {"input_dtype": "float16"}],
    ids=["dense float16", "top-k", "float16 inputs"],
)
def test_tf_data_and_numpy_builds_write_the_same_bytes_and_stream_the_same(
    tmp_path, options
):
    import tensorflow as tf

    x, y = _data()
    teacher = _teacher()
    by_tf = TeacherCache.build(
        teacher, tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH),
        tmp_path / "tf", verbose=0, **options)
    by_numpy = TeacherCache.build(teacher, _batches(x, y), tmp_path / "np", verbose=0,
                                  **options)
    names = sorted(by_tf.metadata["arrays"])
    assert names == sorted(by_numpy.metadata["arrays"])
    for name in names:
        file = by_tf.metadata["arrays"][name]["file"]
        with open(os.path.join(by_tf.path, file), "rb") as a, open(
            os.path.join(by_numpy.path, file), "rb"
        ) as b:
            assert a.read() == b.read(), name
    for key in ("data", "teacher", "outputs", "inputs"):
        assert by_tf.metadata.get(key) == by_numpy.metadata.get(key), key
    # Either cache, either stream: the same batches, bit for bit.
    for cache in (by_tf, by_numpy):
        via_tf = _epoch(cache.dataset(BATCH, shuffle=False, stream="tf.data"))
        via_py = _epoch(cache.dataset(BATCH, shuffle=False, stream="py_dataset"))
        assert len(via_tf) == len(via_py) == 3
        for batch_tf, batch_py in zip(via_tf, via_py):
            for a, b in zip(batch_tf, batch_py):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


@needs_tensorflow
def test_an_ensemble_cache_streams_its_temperature_both_ways(tmp_path):
    x, y = _data()
    cache = TeacherCache.build([_teacher(0), _teacher(1)], _batches(x, y), tmp_path / "e",
                               verbose=0, temperature=2.0)
    (_, via_tf), = cache.dataset(N, shuffle=False, stream="tf.data").take(1).as_numpy_iterator()
    _, via_py = cache.dataset(N, shuffle=False, stream="py_dataset")[0]
    np.testing.assert_array_equal(via_py["soft_target_temperature"],
                                  via_tf["soft_target_temperature"])
    np.testing.assert_array_equal(via_py["soft_target_temperature"], np.full(N, 2.0, "float32"))
