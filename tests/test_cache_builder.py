"""Tests of tfkd/cache/builder.py: the streaming, atomic build."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import data
from tfkd.cache import InvalidCacheError
from tfkd.cache import TeacherCache
from tfkd.cache import format as format_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# float16 keeps 11 significant bits: relative rounding error <= 2**-11.
FLOAT16_RTOL = 2.0**-11


def _images(fashion_mnist, n=96):
    (x, y), _ = fashion_mnist
    images, labels = data.preprocess(x[:n, ..., np.newaxis], y[:n])
    return images.numpy(), labels.numpy()


def _dataset(x, y, batch_size=32):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _cnn(activation=None, classes=10):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation=activation),
        ]
    )


def test_round_trip_equals_teacher_predict_within_float16(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist)
    teacher = _cnn()
    teacher.layers[-1].kernel.assign(teacher.layers[-1].kernel * 30.0)
    cache = TeacherCache.build(
        teacher, _dataset(x, y), str(tmp_path / "cache"), verbose=0
    )
    predicted = teacher.predict(x, verbose=0)
    inputs, labels, logits = cache.read()

    np.testing.assert_array_equal(inputs, x)  # uint8 storage, bit-exact
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(logits, predicted, rtol=FLOAT16_RTOL, atol=1e-6)
    assert np.abs(predicted).max() > 1.0  # not a vacuous tolerance
    metadata = cache.metadata
    assert metadata["examples"] == len(x) and metadata["classes"] == 10
    assert metadata["outputs"]["dtype"] == "float16"
    assert metadata["arrays"]["inputs"]["dtype"] == "|u1"
    assert metadata["teacher"]["parameters"] == teacher.count_params()
    assert metadata["tfkd_version"] == tfkd.__version__
    assert cache.nbytes == len(x) * (28 * 28 + 4 + 2 * 10)


def test_float32_outputs_are_exact(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 40)
    teacher = _cnn()
    cache = TeacherCache.build(
        teacher, _dataset(x, y), str(tmp_path / "c"), dtype="float32", verbose=0
    )
    np.testing.assert_allclose(
        cache.read()[2], teacher.predict(x, verbose=0), rtol=1e-6, atol=1e-7
    )


def test_softmax_teacher_is_stored_as_log_probabilities(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 40)
    teacher = _cnn(activation="softmax")
    cache = TeacherCache.build(teacher, _dataset(x, y), str(tmp_path / "c"), verbose=0)
    assert cache.teacher_outputs == "probabilities"
    assert cache.metadata["teacher"]["stored_as"] == "log_probabilities"
    np.testing.assert_allclose(
        cache.read()[2],
        np.log(teacher.predict(x, verbose=0)),
        rtol=FLOAT16_RTOL,
        atol=1e-6,
    )


def test_keras_applications_softmax_teacher(tmp_path):
    teacher = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        weights=None,
        classes=10,
        minimalistic=True,
        classifier_activation="softmax",
    )
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    cache = TeacherCache.build(
        teacher, _dataset(x, np.arange(8, dtype=np.int32), 4),
        str(tmp_path / "c"), verbose=0,
    )
    assert cache.metadata["teacher"]["stored_as"] == "log_probabilities"
    probabilities = np.exp(cache.read()[2].astype(np.float64))
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-2)


@pytest.mark.filterwarnings("ignore::UserWarning")  # upstream AutoKeras export noise
def test_autokeras_export_is_cached_as_log_probabilities(tmp_path, fashion_mnist):
    ak = pytest.importorskip("autokeras")
    x, y = _images(fashion_mnist, 64)
    search = ak.AutoModel(
        inputs=ak.Input(),
        outputs=ak.ClassificationHead(num_classes=10),
        max_trials=1,
        overwrite=True,
        directory=str(tmp_path / "search"),
        seed=0,
    )
    search.fit(x.reshape(64, -1), y, epochs=1, batch_size=32, verbose=0,
               validation_split=0.25)
    teacher = search.export_model()
    flat = x.reshape(64, -1)
    cache = TeacherCache.build(
        teacher, _dataset(flat, y), str(tmp_path / "c"), verbose=0
    )
    assert cache.metadata["teacher"]["stored_as"] == "log_probabilities"
    np.testing.assert_allclose(
        cache.read()[2],
        np.log(np.maximum(teacher.predict(flat, verbose=0), 1e-38)),
        rtol=FLOAT16_RTOL,
        atol=1e-3,
    )


def _raising_dataset(x, y, fail_after):
    def batches():
        for step in range(len(x) // 16):
            if step == fail_after:
                raise RuntimeError("simulated failure in the input pipeline")
            yield x[16 * step : 16 * step + 16], y[16 * step : 16 * step + 16]

    return tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 28, 28, 1), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )


def test_failed_build_leaves_nothing_behind(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 64)
    path = str(tmp_path / "cache")
    teacher = _cnn()
    with pytest.raises(Exception, match="simulated failure"):
        TeacherCache.build(teacher, _raising_dataset(x, y, 2), path, verbose=0)
    assert os.listdir(str(tmp_path)) == []  # no cache, no partial directory
    with pytest.raises(FileNotFoundError, match="No teacher cache"):
        TeacherCache.open(path)
    # The same call with good data then succeeds.
    TeacherCache.build(teacher, _dataset(x, y), path, verbose=0)
    TeacherCache.open(path)


_KILLED_BUILD = textwrap.dedent(
    """
    import os, sys, numpy as np, tensorflow as tf, keras
    from tfkd.cache import TeacherCache

    def batches():
        for step in range(6):
            if step == 3:
                os._exit(17)  # like SIGKILL: no exception handler, no cleanup
            yield np.full((8, 4), step + 0.5, np.float32), np.zeros(8, np.int32)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int32)))
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    TeacherCache.build(teacher, dataset, sys.argv[1], verbose=0)
    """
)


def test_killed_build_leaves_nothing_that_opens(tmp_path):
    path = str(tmp_path / "cache")
    environment = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(
        [sys.executable, "-c", _KILLED_BUILD, path],
        env=environment,
        capture_output=True,
        timeout=120,
    )
    assert completed.returncode == 17, completed.stderr.decode()[-2000:]
    assert not os.path.exists(path)
    (partial,) = format_lib.leftover_partials(path)
    assert os.path.exists(os.path.join(partial, "inputs.bin"))  # mid-write
    with pytest.raises(FileNotFoundError, match="interrupted builds"):
        TeacherCache.open(path)
    with pytest.raises(InvalidCacheError, match="never finished"):
        TeacherCache.open(partial)


def test_progress_bar_counts_batches(tmp_path, capsys, fashion_mnist):
    x, y = _images(fashion_mnist, 64)
    TeacherCache.build(_cnn(), _dataset(x, y, 16), str(tmp_path / "c"), verbose=1)
    assert "4/4" in capsys.readouterr().out


def test_existing_path_needs_overwrite(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 32)
    path = str(tmp_path / "c")
    teacher = _cnn()
    TeacherCache.build(teacher, _dataset(x, y), path, verbose=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        TeacherCache.build(teacher, _dataset(x, y), path, verbose=0)
    replaced = TeacherCache.build(
        teacher, _dataset(x[:16], y[:16]), path, overwrite=True, verbose=0
    )
    assert replaced.num_examples == 16
    assert os.listdir(str(tmp_path)) == ["c"]


def test_auto_uint8_refuses_a_later_batch_it_would_change(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 64)
    x = x.copy()
    x[40] += 1e-3  # batch 2 is no longer 8-bit
    with pytest.raises(ValueError, match="batch 2 holds other values"):
        TeacherCache.build(_cnn(), _dataset(x, y), str(tmp_path / "c"), verbose=0)
    assert not os.listdir(str(tmp_path))


def test_float16_overflow_is_refused(tmp_path):
    x = np.ones((4, 2), np.float32)
    teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    teacher.layers[0].kernel.assign(np.full((2, 3), 1e5, np.float32))
    with pytest.raises(ValueError, match="dtype='float32'"):
        TeacherCache.build(
            teacher, _dataset(x, np.zeros(4, np.int32)), str(tmp_path / "c"),
            verbose=0,
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dtype": "bfloat16"}, ValueError, "argument `dtype`"),
        ({"top_k": 0}, ValueError, "argument `top_k`"),
        ({"top_k_temperature": -1.0}, ValueError, "argument `top_k_temperature`"),
        ({"views": 3}, TypeError, "argument `augmentation`"),
        ({"augmentation": keras.layers.RandomFlip()}, ValueError,
         "argument `augmentation`.*views=K"),
        ({"teacher_outputs": "soft"}, ValueError, "argument `teacher_outputs`"),
    ],
)
def test_invalid_arguments_are_refused_before_any_work(tmp_path, kwargs, error, match):
    x = np.zeros((4, 2), np.float32)
    teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(error, match=match):
        TeacherCache.build(
            teacher, _dataset(x, np.zeros(4, np.int32)), str(tmp_path / "c"),
            verbose=0, **kwargs,
        )
    assert not os.listdir(str(tmp_path))


def test_dataset_must_be_batches_of_inputs_and_labels(tmp_path):
    teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="argument `dataset`"):
        TeacherCache.build(teacher, np.zeros((4, 2)), str(tmp_path / "c"))
    endless = _dataset(np.zeros((4, 2), np.float32), np.zeros(4, np.int32)).repeat()
    with pytest.raises(ValueError, match="a finite dataset"):
        TeacherCache.build(teacher, endless, str(tmp_path / "c"))
    weighted = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 2), np.float32), np.zeros(4, np.int32), np.ones(4, np.float32))
    )
    with pytest.raises(ValueError, match=r"Expected batches `\(inputs, labels\)`"):
        TeacherCache.build(teacher, weighted.batch(2), str(tmp_path / "c"), verbose=0)
    assert not os.listdir(str(tmp_path))


def test_build_streams_batches_to_disk_while_reading(tmp_path):
    """Memory stays bounded because each batch is on disk before the next
    few are read: the partial files grow while the dataset is consumed."""
    path = str(tmp_path / "cache")
    row_bytes = 1024 * 4  # float32 rows; 16 rows per batch = 64 KiB
    sizes_seen = []

    def batches():
        for step in range(6):
            partials = format_lib.leftover_partials(path)
            inputs_file = os.path.join(partials[0], "inputs.bin") if partials else ""
            sizes_seen.append(
                os.path.getsize(inputs_file) if os.path.exists(inputs_file) else 0
            )
            yield np.full((16, 1024), step + 0.5, np.float32), np.zeros(16, np.int32)

    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, 1024), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )
    teacher = keras.Sequential([keras.Input((1024,)), keras.layers.Dense(3)])
    cache = TeacherCache.build(teacher, dataset, path, verbose=0)
    assert cache.num_examples == 96
    # When batch i is produced, at least batches 0..i-3 are already written
    # (two batches of slack for tf.data's read-ahead).
    for step, size in enumerate(sizes_seen):
        assert size >= max(0, step - 2) * 16 * row_bytes, sizes_seen
    assert sizes_seen[-1] > 0


def _vector_teacher():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])


def test_unlabelled_inputs_are_stored_with_labels_minus_one(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 5)).astype("float32")
    teacher = _vector_teacher()
    only_inputs = tf.data.Dataset.from_tensor_slices(x).batch(8)
    cache = TeacherCache.build(
        teacher, only_inputs, str(tmp_path / "c"), dtype="float32", verbose=0
    )
    inputs, labels, logits = cache.read()
    np.testing.assert_array_equal(inputs, x)
    np.testing.assert_array_equal(labels, np.full(20, -1))
    np.testing.assert_allclose(logits, teacher.predict(x, verbose=0), rtol=1e-6)
    # Streamed back as they are, and fresh against the same data.
    _, targets = next(iter(cache.dataset(batch_size=20, shuffle=False)))
    np.testing.assert_array_equal(targets["labels"].numpy(), np.full(20, -1))
    TeacherCache.open(str(tmp_path / "c"), teacher=teacher, dataset=only_inputs, verbose=0)


def test_minus_one_labels_are_stored_and_a_student_trains_on_them(tmp_path):
    x = np.random.default_rng(1).normal(size=(32, 5)).astype("float32")
    y = np.array([0, 1, 2, -1] * 8, np.int32)
    cache = TeacherCache.build(
        _vector_teacher(), _dataset(x, y, 16), str(tmp_path / "c"),
        dtype="float32", verbose=0,
    )
    np.testing.assert_array_equal(cache.read()[1], y)
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    distiller = tfkd.Distiller(student=student, teacher=None, alpha=0.5)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    history = distiller.fit(cache.dataset(batch_size=16, seed=0), epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())


# -- teacher ensembles ---------------------------------------------------------


def _dense_pair():
    def dense(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [keras.Input((5,)), keras.layers.Dense(4)], name=f"t{seed}"
        )

    return dense(0), dense(1)


def _tabular(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


def _np_log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _ensemble_cache(t1, t2, x, y, tmp_path):
    """The float32 cache of `t1`, `t2` weighted 1 : 3 at T = 3."""
    return TeacherCache.build(
        [t1, t2], _dataset(x, y), str(tmp_path / "ensemble"), dtype="float32",
        teacher_weights=[1.0, 3.0], temperature=3.0, input_dtype="float32",
        verbose=0,
    )


def test_ensemble_cache_stores_the_mixture_at_its_temperature(tmp_path):
    x, y = _tabular()
    t1, t2 = _dense_pair()
    cache = _ensemble_cache(t1, t2, x, y, tmp_path)
    _, _, stored = cache.read()
    p_ens = 0.25 * np.exp(_np_log_softmax(np.asarray(t1(x)) / 3.0)) + 0.75 * np.exp(
        _np_log_softmax(np.asarray(t2(x)) / 3.0)
    )
    np.testing.assert_allclose(np.exp(_np_log_softmax(stored / 3.0)), p_ens, rtol=1e-5)
    ensemble = cache.metadata["teacher"]["ensemble"]
    assert ensemble["weights"] == [0.25, 0.75] and ensemble["temperature"] == 3.0
    assert [m["name"] for m in ensemble["teachers"]] == ["t0", "t1"]
    assert cache.metadata["teacher"]["stored_as"] == "ensemble_mixture_logits"
    assert "exact" in ensemble["temperature_note"]
    assert cache.soft_target_temperature == 3.0
    _, targets = next(iter(cache.dataset(8, shuffle=False)))
    np.testing.assert_array_equal(targets["soft_target_temperature"].numpy(), 3.0)
    # A reopened cache streams the same.
    assert TeacherCache.open(str(tmp_path / "ensemble")).soft_target_temperature == 3.0


def test_distilling_an_ensemble_cache_equals_the_online_ensemble(tmp_path):
    x, y = _tabular()
    t1, t2 = _dense_pair()
    cache = _ensemble_cache(t1, t2, x, y, tmp_path)
    keras.utils.set_random_seed(5)
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    online = tfkd.Distiller(
        teacher=[t1, t2], teacher_weights=[1.0, 3.0], student=student, temperature=3.0
    )
    online.compile(optimizer="sgd")
    offline = tfkd.Distiller(student=student, temperature=3.0)
    offline.compile(optimizer="sgd")
    expected = online.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    got = offline.evaluate(cache.dataset(32, shuffle=False), verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    offline.fit(cache.dataset(16, seed=0), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"temperature": 4.0}, "temperature=3"),
     ({"temperature": 3.0, "logit_standardization": True}, "logit_standardization")],
)
@pytest.mark.parametrize("store_inputs", [True, False])
def test_distiller_refuses_an_ensemble_cache_where_it_is_not_exact(
        tmp_path, kwargs, match, store_inputs):
    x, y = _tabular()
    cache = TeacherCache.build(
        list(_dense_pair()), _dataset(x, y), str(tmp_path / "ensemble"),
        temperature=3.0, input_dtype="float32", verbose=0, store_inputs=store_inputs,
    )
    # A logits-only cache re-joined with the pipeline carries its T as well.
    batches = cache.dataset(16) if store_inputs else cache.attach(_dataset(x, y))
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    distiller = tfkd.Distiller(student=student, **kwargs)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=match):
        distiller.fit(batches, epochs=1, verbose=0)


def test_ensemble_build_needs_a_temperature_and_one_teacher_is_plain(tmp_path):
    x, y = _tabular()
    t1, t2 = _dense_pair()
    with pytest.raises(ValueError, match="temperature"):
        TeacherCache.build([t1, t2], _dataset(x, y), str(tmp_path / "a"), verbose=0)
    with pytest.raises(ValueError, match="teacher_weights"):
        TeacherCache.build(t1, _dataset(x, y), str(tmp_path / "b"),
                           teacher_weights=[1.0], verbose=0)
    single = TeacherCache.build(t1, _dataset(x, y), str(tmp_path / "c"),
                                input_dtype="float32", verbose=0)
    listed = TeacherCache.build([t1], _dataset(x, y), str(tmp_path / "d"),
                                input_dtype="float32", verbose=0)
    np.testing.assert_array_equal(listed.read()[2], single.read()[2])
    assert "ensemble" not in listed.metadata["teacher"]
    assert listed.metadata["teacher"] == single.metadata["teacher"]
    assert listed.soft_target_temperature is None


def _nan_blind_teacher():
    """A teacher whose logits stay finite on NaN inputs (NaN -> 0 first),
    as a ReLU teacher's can: nothing downstream would notice the NaN."""
    inputs = keras.Input((4,))
    cleaned = keras.layers.Lambda(
        lambda x: keras.ops.where(keras.ops.isfinite(x), x, 0.0)
    )(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(cleaned))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_refused_naming_the_batch(tmp_path, bad):
    x = np.ones((48, 4), np.float32)
    x[21, 2] = bad  # example 5 of batch 2
    dataset = tf.data.Dataset.from_tensor_slices(
        (x, np.zeros(48, np.int32))
    ).batch(16)
    for store_inputs in (True, False):
        path = str(tmp_path / f"c{store_inputs}")
        with pytest.raises(ValueError, match=r"batch 2 .*\[5\]"):
            TeacherCache.build(
                _nan_blind_teacher(), dataset, path, store_inputs=store_inputs,
                verbose=0,
            )
    assert os.listdir(str(tmp_path)) == []  # nothing committed, no leftovers


def test_non_finite_teacher_outputs_are_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: keras.ops.log(x - 1.0))(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(3)(outputs))
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.ones((16, 4), np.float32), np.zeros(16, np.int32))
    ).batch(8)
    with pytest.raises(ValueError, match="batch 1"):
        TeacherCache.build(teacher, dataset, str(tmp_path / "c"), verbose=0)
    assert os.listdir(str(tmp_path)) == []


def test_a_build_creates_missing_parent_directories(tmp_path):
    path = str(tmp_path / "cache" / "fmnist")  # as the README's "cache/fmnist"
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.ones((8, 4), np.float32), np.zeros(8, np.int32))
    ).batch(4)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert TeacherCache.build(teacher, dataset, path, verbose=0).num_examples == 8
    assert sorted(os.listdir(str(tmp_path / "cache"))) == ["fmnist"]
