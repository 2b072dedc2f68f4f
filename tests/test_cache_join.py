"""Tests of tfkd/cache/join.py: logits-only caches re-joined with the pipeline.

Real Fashion-MNIST, real TensorFlow: a 10,000-example logits-only cache is
measured on disk, and a student trained from it through `attach` must equal
one trained from a full cache over the same batches.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd import data
import tfkd
from tfkd.cache import InvalidCacheError
from tfkd.cache import StaleCacheError
from tfkd.cache import TeacherCache
from tfkd.cache import row_blocks

EXAMPLES = 10_000
CLASSES = 10
# metadata.json: counts, teacher entry, 10 block digests (a few KB).
FIXED_OVERHEAD_BYTES = 16 * 1024


def _images(fashion_mnist, n):
    x, y = fashion_mnist[0]
    images, labels = data.preprocess(x[:n, ..., np.newaxis], y[:n])
    return images.numpy(), labels.numpy()


def _pipeline(x, y, batch_size=250):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def _mlp(hidden, name):
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(CLASSES),
        ],
        name=name,
    )


def _directory_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


@pytest.fixture(scope="module")
def caches(tmp_path_factory, fashion_mnist):
    """A full and a logits-only cache of the same 10,000 examples."""
    root = tmp_path_factory.mktemp("join")
    x, y = _images(fashion_mnist, EXAMPLES)
    keras.utils.set_random_seed(0)
    teacher = _mlp(32, "teacher")
    pipeline = _pipeline(x, y)
    full = TeacherCache.build(teacher, pipeline, str(root / "full"), verbose=0)
    logits_only = TeacherCache.build(
        teacher, pipeline, str(root / "logits"), store_inputs=False, verbose=0
    )
    return full, logits_only, x, y, teacher


def test_logits_only_cache_holds_two_bytes_per_class_and_no_images(caches):
    full, logits_only, _, _, _ = caches
    assert sorted(os.listdir(logits_only.path)) == [
        ".tfkd-owner.json", "logits.bin", "metadata.json"  # the marker: tfkd made it
    ]
    on_disk = _directory_bytes(logits_only.path)
    assert on_disk <= EXAMPLES * CLASSES * 2 + FIXED_OVERHEAD_BYTES
    assert logits_only.nbytes == EXAMPLES * CLASSES * 2
    # The full cache holds the images (uint8) and labels on top.
    assert _directory_bytes(full.path) > on_disk + EXAMPLES * 28 * 28
    assert not logits_only.stores_inputs
    assert logits_only.metadata["format_version"] == 2
    assert full.metadata["format_version"] == 1  # old readers still read it


def _train(dataset):
    keras.utils.set_random_seed(1)
    student = _mlp(8, "student")
    distiller = tfkd.Distiller(student=student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    distiller.fit(dataset, epochs=1, verbose=0)
    return student.get_weights()


def test_attach_trains_the_same_student_as_the_full_cache(caches):
    full, logits_only, x, y, _ = caches
    # Same batches in the same order: the full cache unshuffled, the
    # logits-only cache re-joined with the pipeline it was built from.
    from_full = _train(full.dataset(batch_size=250, shuffle=False))
    from_attach = _train(TeacherCache.open(logits_only.path).attach(_pipeline(x, y)))
    for a, b in zip(from_full, from_attach):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    assert not np.allclose(from_full[0], _mlp(8, "fresh").get_weights()[0])


def test_attach_yields_the_cached_outputs_of_each_example(caches):
    full, logits_only, x, y, _ = caches
    _, _, cached = full.read()
    batches = list(logits_only.attach(_pipeline(x, y), 1000))
    assert [int(b[0].shape[0]) for b in batches] == [1000] * 10
    logits = np.concatenate([b[1]["teacher_logits"] for b in batches])
    labels = np.concatenate([b[1]["labels"] for b in batches])
    np.testing.assert_array_equal(logits, cached)
    np.testing.assert_array_equal(labels, y)


def test_shuffling_moves_whole_examples(caches):
    _, logits_only, x, y, teacher = caches
    subset = _pipeline(x, y)
    joined = logits_only.attach(subset, 100, shuffle_buffer=2048, seed=3)
    xb, targets = next(iter(joined))
    # Each shuffled input still carries its own teacher output.
    expected = teacher(xb, training=False).numpy().astype(np.float16)
    np.testing.assert_allclose(
        targets["teacher_logits"], expected.astype(np.float32), atol=1e-2
    )
    first = np.argmax(np.all(x == xb[0].numpy(), axis=(1, 2, 3)))
    assert first != 0  # it did shuffle


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.take(39), "pipeline ended|more or fewer"),
        # 9 whole blocks of 1,024: only the end-of-stream sentinel sees it.
        (lambda d: d.unbatch().take(9216).batch(250), "ended after 9 block"),
        (lambda d: d.skip(1), "more or fewer|differ"),
        (lambda d: d.unbatch().shuffle(100, seed=0).batch(250), "row block 0"),
        (lambda d: d.map(lambda a, b: (a, (b + 1) % 10)), "row block 0"),
        (lambda d: d.concatenate(d.take(1)), "more or fewer"),
    ],
    ids=["shorter", "whole_blocks_shorter", "shifted", "shuffled", "relabelled", "longer"],
)
def test_a_changed_pipeline_is_refused_while_iterating(caches, change, match):
    _, logits_only, x, y, _ = caches
    joined = logits_only.attach(change(_pipeline(x, y)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="InvalidCacheError") as info:
        for _ in joined:
            pass
    assert any(part in str(info.value) for part in match.split("|"))


def test_check_order_raises_the_cache_error_up_front(caches):
    _, logits_only, x, y, _ = caches
    logits_only.check_order(_pipeline(x, y, batch_size=999))  # any batching
    with pytest.raises(StaleCacheError, match="yields 9750 examples"):
        logits_only.check_order(_pipeline(x, y).take(39))
    swapped = np.concatenate([x[1024:2048], x[:1024], x[2048:]])
    with pytest.raises(StaleCacheError, match="row block 0"):
        logits_only.check_order(_pipeline(swapped, y))
    assert issubclass(StaleCacheError, InvalidCacheError)


def test_attach_with_top_k_storage(tmp_path, fashion_mnist):
    x, y = _images(fashion_mnist, 1500)
    keras.utils.set_random_seed(0)
    teacher = _mlp(16, "teacher")
    pipeline = _pipeline(x, y, 100)
    full = TeacherCache.build(teacher, pipeline, str(tmp_path / "f"), top_k=3, verbose=0)
    lean = TeacherCache.build(
        teacher, pipeline, str(tmp_path / "l"), top_k=3, store_inputs=False, verbose=0
    )
    assert sorted(lean.metadata["arrays"]) == ["top_k_fill", "top_k_indices", "top_k_values"]
    joined = np.concatenate([t["teacher_logits"] for _, t in lean.attach(pipeline)])
    np.testing.assert_array_equal(joined, full.read()[2])


def test_attach_and_dataset_refuse_the_wrong_cache_or_data(caches):
    full, logits_only, x, y, _ = caches
    with pytest.raises(ValueError, match="store_inputs=False"):
        full.attach(_pipeline(x, y))
    with pytest.raises(ValueError, match="attach"):
        logits_only.dataset()
    with pytest.raises(ValueError, match="`dataset`.*float32"):
        logits_only.attach(_pipeline(x.astype("float64"), y))
    with pytest.raises(ValueError, match="`shuffle_buffer`"):
        logits_only.attach(_pipeline(x, y), shuffle_buffer=0)
    with pytest.raises(ValueError, match="`store_inputs`"):
        TeacherCache.build(
            _mlp(4, "t"), _pipeline(x[:8], y[:8]), "unused", store_inputs=False,
            views=2, augmentation=keras.layers.RandomFlip(), verbose=0,
        )


def test_block_digests_cover_every_block(caches):
    _, logits_only, _, _, _ = caches
    order = logits_only.metadata["order"]
    assert len(order["block_digests"]) == row_blocks.block_count(EXAMPLES) == 10
