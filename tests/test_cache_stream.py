"""Tests of tfkd/cache/stream.py: the `tf.data` pipeline of a cache."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import conftest
import tfkd
from tfkd.cache import TeacherCache

CLASSES = 4
N = 203  # not a multiple of the batch size


def _id_dataset(n=N, batch_size=32):
    """Examples whose first feature is their id, labels `id % CLASSES`."""
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.float32)
    x = np.stack([ids, rng.normal(size=n).astype(np.float32)], axis=-1)
    y = (np.arange(n) % CLASSES).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.fixture
def teacher():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(CLASSES)], name="teacher"
    )
    # Small weights keep the id feature from dominating float16 rounding.
    model.layers[0].kernel.assign(model.layers[0].kernel * 0.01)
    return model


@pytest.fixture
def cache(tmp_path, teacher):
    return TeacherCache.build(
        teacher, _id_dataset(), str(tmp_path / "cache"), verbose=0
    )


def _check_aligned(teacher, x, targets):
    """Labels and teacher logits belong to the inputs they come with."""
    ids = x[:, 0].astype(np.int64)
    np.testing.assert_array_equal(targets["labels"], ids % CLASSES)
    np.testing.assert_allclose(
        targets["teacher_logits"],
        teacher(x).numpy(),
        rtol=2.0**-10,
        atol=1e-3,
    )
    return ids


def test_batches_have_the_distiller_contract(cache):
    spec = cache.dataset(batch_size=32).element_spec
    x_spec, y_spec = spec
    assert x_spec == tf.TensorSpec((None, 2), tf.float32)
    assert set(y_spec) == {"labels", "teacher_logits"}
    assert y_spec["labels"] == tf.TensorSpec((None,), tf.int32)
    assert y_spec["teacher_logits"] == tf.TensorSpec((None, CLASSES), tf.float32)


def test_shuffled_epochs_are_permutations_with_aligned_triples(cache, teacher):
    dataset = cache.dataset(batch_size=32, seed=7)
    orders = []
    for _ in range(2):
        ids = [
            _check_aligned(teacher, x.numpy(), {k: v.numpy() for k, v in y.items()})
            for x, y in dataset
        ]
        order = np.concatenate(ids)
        np.testing.assert_array_equal(np.sort(order), np.arange(N))
        orders.append(order)
    assert not np.array_equal(orders[0], np.arange(N))  # shuffled
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    # The same seed gives the same sequence of epochs.
    again = np.concatenate([x.numpy()[:, 0] for x, _ in cache.dataset(32, seed=7)])
    np.testing.assert_array_equal(again.astype(np.int64), orders[0])


def test_unshuffled_stream_is_in_storage_order(cache):
    batches = list(cache.dataset(batch_size=50, shuffle=False))
    assert [int(x.shape[0]) for x, _ in batches] == [50, 50, 50, 50, 3]
    ids = np.concatenate([x.numpy()[:, 0] for x, _ in batches])
    np.testing.assert_array_equal(ids, np.arange(N))
    dropped = list(cache.dataset(batch_size=50, shuffle=False, drop_remainder=True))
    assert len(dropped) == 4


def test_invalid_stream_arguments(cache):
    with pytest.raises(ValueError, match="argument `batch_size`"):
        cache.dataset(batch_size=0)
    with pytest.raises(ValueError, match="argument `views`"):
        cache.dataset(views="some")
    with pytest.raises(TypeError, match="argument `seed`"):
        cache.dataset(seed=1.5)


def _two_replicas():
    return conftest.two_replica_strategy()


def test_distributed_batches_stay_aligned_per_replica(cache, teacher):
    strategy = _two_replicas()
    distributed = strategy.experimental_distribute_dataset(
        cache.dataset(batch_size=64, seed=3)
    )
    seen = []
    for x, y in distributed:
        local_x = strategy.experimental_local_results(x)
        local_labels = strategy.experimental_local_results(y["labels"])
        local_logits = strategy.experimental_local_results(y["teacher_logits"])
        assert len(local_x) == 2
        for part_x, labels, logits in zip(local_x, local_labels, local_logits):
            seen.append(
                _check_aligned(
                    teacher,
                    part_x.numpy(),
                    {"labels": labels.numpy(), "teacher_logits": logits.numpy()},
                )
            )
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(N))


def test_distiller_trains_from_the_cache_under_mirrored_strategy(cache):
    strategy = _two_replicas()
    with strategy.scope():
        student = keras.Sequential([keras.Input((2,)), keras.layers.Dense(CLASSES)])
        distiller = tfkd.Distiller(student=student, teacher=None, alpha=0.5)
        distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(cache.dataset(batch_size=64, seed=0), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["distillation_loss"]))
    assert distiller.distribute_strategy is strategy
