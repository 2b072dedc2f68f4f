"""Tests of tfkd/cache/fingerprint.py: teacher-weight and data fingerprints."""

import keras
import numpy as np

from tfkd.cache import fingerprint


def _teacher():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )


def test_same_weights_in_a_differently_named_model_fingerprint_the_same():
    teacher = _teacher()
    clone = _teacher()  # new layer names (dense_2, ...) in this session
    clone.set_weights(teacher.get_weights())
    assert [w.path for w in clone.weights] != [w.path for w in teacher.weights]
    assert fingerprint.teacher_fingerprint(clone) == (
        fingerprint.teacher_fingerprint(teacher)
    )


def test_changing_one_weight_changes_the_teacher_fingerprint():
    teacher = _teacher()
    before = fingerprint.teacher_fingerprint(teacher)
    kernel = teacher.layers[-1].kernel
    value = kernel.numpy()
    value[0, 0] = np.nextafter(value[0, 0], np.float32(np.inf))  # one ulp
    kernel.assign(value)
    assert fingerprint.teacher_fingerprint(teacher) != before


def test_non_trainable_statistics_are_part_of_the_teacher_fingerprint():
    teacher = _teacher()
    before = fingerprint.teacher_fingerprint(teacher)
    batch_norm = teacher.layers[1]
    batch_norm.moving_mean.assign(batch_norm.moving_mean.numpy() + 0.5)
    assert fingerprint.teacher_fingerprint(teacher) != before


def test_count_parameters_counts_every_weight():
    assert fingerprint.count_parameters(_teacher()) == _teacher().count_params()


def _fingerprint(x, y, batch_size):
    batches = [
        (x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(x), batch_size)
    ]
    return fingerprint.dataset_fingerprint(batches)


def _data(n=50):
    rng = np.random.default_rng(0)
    x = rng.random((n, 4, 4, 1), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


def test_data_fingerprint_ignores_order_and_batching():
    x, y = _data()
    order = np.random.default_rng(1).permutation(len(x))
    reference = _fingerprint(x, y, batch_size=8)
    shuffled = _fingerprint(x[order], y[order], batch_size=13)
    assert shuffled.hexdigest() == reference.hexdigest()
    assert shuffled.count == reference.count == len(x)


def test_data_fingerprint_sees_a_changed_pixel_label_or_example():
    x, y = _data()
    reference = _fingerprint(x, y, 8).hexdigest()

    pixel = x.copy()
    pixel[7, 1, 2, 0] += 1e-6
    label = y.copy()
    label[3] = (label[3] + 1) % 10
    # Swapping labels between two examples keeps every column's multiset.
    swapped = y.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert y[0] != y[1]
    variants = {
        "pixel": _fingerprint(pixel, y, 8),
        "label": _fingerprint(x, label, 8),
        "swap": _fingerprint(x, swapped, 8),
        "dropped": _fingerprint(x[1:], y[1:], 8),
        "duplicated": _fingerprint(
            np.concatenate([x, x[:1]]), np.concatenate([y, y[:1]]), 8
        ),
        "dtype": _fingerprint(x.astype(np.float64), y, 8),
    }
    for name, variant in variants.items():
        assert variant.hexdigest() != reference, name
