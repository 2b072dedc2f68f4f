"""Tests of tfkd/mixing.py: one mixed batch, labels mixed the same way."""

import keras
import numpy as np
import pytest

from tfkd import mixing

BATCH, CLASSES = 8, 3


def _identity_images():
    """Image i is 1 at pixel i and 0 elsewhere, shape (8, 4, 4, 1).

    MixUp turns image i into `λ_i · image_i + (1 − λ_i) · image_j`, so the
    first 8 pixels of a mixed image are exactly its mixing weights over
    the batch's examples: the reference for how its label must be mixed.
    """
    images = np.zeros((BATCH, 16), "float32")
    images[np.arange(BATCH), np.arange(BATCH)] = 1.0
    return images.reshape(BATCH, 4, 4, 1)


def _expected_targets(mixed_images, labels):
    weights = np.asarray(mixed_images, np.float64).reshape(BATCH, 16)[:, :BATCH]
    labelled = (labels != -1).astype(np.float64)
    rows = np.eye(CLASSES)[np.maximum(labels, 0)] * labelled[:, None]
    targets = weights @ rows  # (batch, classes)
    complete = weights @ labelled >= 1.0 - 1e-2
    return targets * complete[:, None], complete


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_mixes_labels_with_the_images_weights(seed):
    labels = np.array([0, 1, 2, -1, 0, -1, 2, 1])
    images, targets = mixing.mix_batch(
        keras.layers.MixUp(alpha=1.0, seed=seed), _identity_images(), labels, CLASSES
    )
    expected, complete = _expected_targets(images, labels)
    np.testing.assert_allclose(np.asarray(targets), expected, atol=1e-6)
    # Pairs with an unlabelled share leave the hard loss (rows of zeros);
    # labelled rows sum to 1.
    sums = np.asarray(targets).sum(axis=-1)
    np.testing.assert_allclose(sums[complete], 1.0, atol=1e-5)
    np.testing.assert_array_equal(sums[~complete], 0.0)


def test_one_hot_labels_mix_like_sparse_labels():
    labels = np.array([0, 1, 2, -1, 0, -1, 2, 1])
    one_hot = np.eye(CLASSES, dtype="float32")[np.maximum(labels, 0)]
    one_hot[labels == -1] = 0.0
    results = [
        mixing.mix_batch(keras.layers.MixUp(seed=4), _identity_images(), y, CLASSES)
        for y in (labels, one_hot)
    ]
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_cutmix_targets_are_label_rows():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])  # all labelled
    images = np.random.default_rng(0).random((BATCH, 8, 8, 3)).astype("float32")
    _, targets = mixing.mix_batch(keras.layers.CutMix(seed=0), images, labels, CLASSES)
    np.testing.assert_allclose(np.asarray(targets).sum(axis=-1), 1.0, atol=1e-5)


def test_no_labels_mixes_the_images_only():
    images, targets = mixing.mix_batch(
        keras.layers.MixUp(seed=0), _identity_images(), None, CLASSES
    )
    assert targets is None and images.shape == (BATCH, 4, 4, 1)


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="`mixing`.*MixUp"):
        mixing.check_mixing("mixup")
    assert mixing.check_mixing(None) is None
    mixup = keras.layers.MixUp()
    assert mixing.check_jit_compile(mixup, "auto") is False
    assert mixing.check_jit_compile(None, "auto") == "auto"
    with pytest.raises(ValueError, match="`jit_compile`.*XLA cannot compile"):
        mixing.check_jit_compile(mixup, True)
