"""Tests for tfkd/teachers/unfreezing.py."""


import keras
import numpy as np
import pytest

import conftest
from tfkd.teachers import DiscriminativeOptimizer
from tfkd.teachers import GradualUnfreezing
from tfkd.teachers import layer_groups
from tfkd.teachers import set_trainable_groups


_small_cnn = conftest.small_conv_bn_model


def _trainable_layer_names(model):
    return sorted({w.path.split("/")[0] for w in model.trainable_weights})


def test_set_trainable_groups_opens_leading_groups_only():
    model = _small_cnn()
    # [head], [hidden], [conv_b, bn_b], [conv_a, bn_a]
    groups = layer_groups(model)
    set_trainable_groups(model, groups, 2)
    assert _trainable_layer_names(model) == ["head", "hidden"]
    set_trainable_groups(model, groups, 4)
    assert _trainable_layer_names(model) == ["conv_a", "conv_b", "head",
                                             "hidden"]
    set_trainable_groups(model, groups, 0)
    assert model.trainable_weights == []


def test_batchnorm_stays_frozen_unless_asked():
    model = _small_cnn()
    groups = layer_groups(model)
    set_trainable_groups(model, groups, 3)
    assert not model.get_layer("bn_b").trainable
    set_trainable_groups(model, groups, 3, train_batchnorm=True)
    assert model.get_layer("bn_b").trainable
    assert not model.get_layer("bn_a").trainable  # group 3 still frozen


def test_layers_outside_the_groups_are_frozen():
    model = _small_cnn()
    groups = layer_groups(model)
    set_trainable_groups(model, groups[:2], 2)  # conv groups not passed
    assert _trainable_layer_names(model) == ["head", "hidden"]


def test_set_trainable_groups_validates():
    model = _small_cnn()
    groups = layer_groups(model)
    for num_trainable in (-1, 5):
        with pytest.raises(ValueError, match="value for argument `num_trainable`"):
            set_trainable_groups(model, groups, num_trainable)
    with pytest.raises(TypeError, match="type for argument `num_trainable`"):
        set_trainable_groups(model, groups, 1.0)


class _ChangedLayers(keras.callbacks.Callback):
    """Records, per epoch, which layers' weights changed during the epoch."""

    def __init__(self):
        super().__init__()
        self.changed = []

    def on_epoch_begin(self, epoch, logs=None):
        self._before = {layer.name: [w.copy() for w in layer.get_weights()]
                        for layer in self.model.layers if layer.weights}

    def on_epoch_end(self, epoch, logs=None):
        self.changed.append(sorted(
            name for name, weights in self._before.items()
            if any(not np.array_equal(w, old) for w, old in zip(
                self.model.get_layer(name).get_weights(), weights))))


def test_gradual_unfreezing_adds_one_group_per_epoch_in_fit():
    model = _small_cnn()
    groups = layer_groups(model)
    set_trainable_groups(model, groups, 1)
    model.compile(
        optimizer=DiscriminativeOptimizer(keras.optimizers.Adam(1e-2), groups,
                                          factor=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 16)
    recorder = _ChangedLayers()
    model.fit(x, y, batch_size=8, epochs=4, verbose=0,
              callbacks=[GradualUnfreezing(groups), recorder])
    # BatchNorm layers never change: frozen, so in inference mode.
    assert recorder.changed == [
        ["head"],
        ["head", "hidden"],
        ["conv_b", "head", "hidden"],
        ["conv_a", "conv_b", "head", "hidden"],
    ]


def test_counts_epochs_from_the_first_epoch_of_fit():
    model = _small_cnn()
    groups = layer_groups(model)
    model.compile(optimizer=DiscriminativeOptimizer("adam", groups),
                  loss="mse")
    callback = GradualUnfreezing(groups, initial_groups=2, epochs_per_group=2)
    callback.set_model(model)
    callback.on_train_begin()
    seen = []
    for epoch in range(5, 11):  # as in fit(initial_epoch=5)
        callback.on_epoch_begin(epoch)
        seen.append(callback.num_trainable)
    assert seen == [2, 2, 3, 3, 4, 4]


def test_plain_optimizer_is_rejected_at_fit_start():
    model = _small_cnn()
    groups = layer_groups(model)
    model.compile(optimizer="adam", loss="mse")
    x = np.zeros((2, 8, 8, 1), "float32")
    with pytest.raises(TypeError, match="DiscriminativeOptimizer"):
        model.fit(x, np.zeros((2, 3)), verbose=0,
                  callbacks=[GradualUnfreezing(groups)])


_assert_each_rejected = conftest.assert_each_rejected

def test_invalid_arguments():
    model = _small_cnn()
    _assert_each_rejected(
        GradualUnfreezing,
        {"groups": layer_groups(model)},
        [
            ({"groups": []}, "groups"),
            ({"initial_groups": 0}, "initial_groups"),
            ({"initial_groups": 9}, "initial_groups"),
            ({"epochs_per_group": 0}, "epochs_per_group"),
        ],
    )
