"""Tests for tfkd/teachers/fine_tuning.py."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import conftest
from tfkd.teachers import DiscriminativeOptimizer
from tfkd.teachers import FineTuneHistory
from tfkd.teachers import build
from tfkd.teachers import find_backbone
from tfkd.teachers import fine_tune
from tfkd.teachers import layer_groups


def _dataset(shape, num_classes=3, count=16, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((count,) + shape).astype("float32")  # [0, 1]
    labels = rng.integers(0, num_classes, count).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


_small_cnn = conftest.small_conv_bn_model


class _Snapshots(keras.callbacks.Callback):
    """Copies every weight of the model at the end of each epoch."""

    def __init__(self, model):
        super().__init__()
        self.initial = self._copy(model)
        self.per_epoch = []

    @staticmethod
    def _copy(model):
        return {id(v): v.numpy().copy() for v in model.weights}

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(self._copy(self.model))


def _changed(variables, before, after):
    return [v for v in variables
            if not np.array_equal(before[id(v)], after[id(v)])]


def _batchnorm_statistics(model):
    return [v for layer in find_backbone(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


def test_two_stages_on_a_built_teacher_keep_batchnorm_statistics():
    keras.utils.set_random_seed(0)
    # inference_mode=True is what pretrained weights give by default.
    teacher = build("mobilenetv3small", 3, (28, 28, 1), weights=None,
                    inference_mode=True)
    groups = layer_groups(teacher)
    statistics = _batchnorm_statistics(teacher)
    assert statistics
    snapshots = _Snapshots(teacher)
    # train_batchnorm=True unfreezes BatchNorm scale/offset, so only the
    # backbone's inference mode keeps the moving statistics in place.
    history = fine_tune(
        teacher, _dataset((28, 28, 1), count=8), epochs=(1, 1), unfreeze=2,
        train_batchnorm=True, callbacks=[snapshots], run_eagerly=True,
        verbose=0)

    stage1, stage2 = snapshots.per_epoch
    start = snapshots.initial
    for variable in statistics:  # frozen BatchNorm statistics never move
        np.testing.assert_array_equal(stage1[id(variable)], start[id(variable)])
        np.testing.assert_array_equal(stage2[id(variable)], start[id(variable)])

    def changed_in(group, before, after):
        variables = [v for layer in group for v in layer.weights]
        return _changed(variables, before, after)

    # Stage 1: the head alone.
    assert changed_in(groups[0], start, stage1)
    for group in groups[1:]:
        assert not changed_in(group, start, stage1)
    # Stage 2: the head and the top two backbone groups, nothing deeper.
    assert changed_in(groups[0], stage1, stage2)
    assert changed_in(groups[1], stage1, stage2)
    assert changed_in(groups[2], stage1, stage2)
    for group in groups[3:]:
        assert not changed_in(group, stage1, stage2)

    assert isinstance(history, FineTuneHistory)
    assert history.epoch == [0, 1]
    assert history.stage_of_epoch == [1, 2]
    assert len(history.history["loss"]) == 2
    assert len(history.history["accuracy"]) == 2
    assert history.stages[0].epoch == [0] and history.stages[1].epoch == [1]
    optimizer = teacher.optimizer
    assert isinstance(optimizer, DiscriminativeOptimizer)
    assert optimizer.factor == pytest.approx(2.6)
    schedule = optimizer.get_config()["optimizer"]["config"]["learning_rate"]
    assert schedule["class_name"] == "SlantedTriangularLR"
    assert schedule["config"]["total_steps"] == 1  # 1 epoch x 1 batch
    assert schedule["config"]["max_learning_rate"] == pytest.approx(1e-4)


def test_teacher_from_scratch_trains_its_batchnorm_by_default():
    keras.utils.set_random_seed(0)
    teacher = build("mobilenetv3small", 3, (28, 28, 1), weights=None)
    groups = layer_groups(teacher)
    top_statistics = [v for layer in groups[1]
                      if isinstance(layer, keras.layers.BatchNormalization)
                      for v in (layer.moving_mean, layer.moving_variance)]
    before = [v.numpy().copy() for v in top_statistics]
    # unfreeze=1 leaves the lower random groups frozen: trained, but warned.
    with pytest.warns(UserWarning, match=r"top 1 of 5 backbone groups.*"
                                         r"unfreeze='all'"):
        fine_tune(teacher, _dataset((28, 28, 1), count=8), epochs=(0, 1),
                  unfreeze=1, run_eagerly=True, verbose=0)
    assert any(not np.array_equal(v.numpy(), old)
               for v, old in zip(top_statistics, before))
    assert all(layer.trainable for layer in groups[1])


def test_user_model_with_gradual_unfreezing():
    model = _small_cnn()
    # [head], [hidden], [conv_b, bn_b], [conv_a, bn_a]
    groups = layer_groups(model)
    names = {id(layer): layer.name for group in groups for layer in group}
    snapshots = _Snapshots(model)
    history = fine_tune(
        model, _dataset((8, 8, 1)), epochs=(1, 3),
        learning_rate=(1e-2, 1e-2), unfreeze="all",
        gradual_unfreezing=True, schedule="constant",
        callbacks=[snapshots], verbose=0)
    states = [snapshots.initial] + snapshots.per_epoch
    changed = []
    for before, after in zip(states[:-1], states[1:]):
        changed.append(sorted({
            names[id(layer)] for group in groups for layer in group
            if _changed(layer.weights, before, after)}))
    # Stage 1: head. Stage 2 starts with the head and the top group and adds
    # one group per epoch; BatchNorm (frozen) never changes.
    assert changed == [
        ["head"],
        ["head", "hidden"],
        ["conv_b", "head", "hidden"],
        ["conv_a", "conv_b", "head", "hidden"],
    ]
    assert len(history.history["loss"]) == 4


def test_stage_with_zero_epochs_is_skipped():
    model = _small_cnn()
    history = fine_tune(model, _dataset((8, 8, 1)), epochs=(0, 1),
                        schedule="constant", unfreeze=1, verbose=0)
    assert history.stages[0] is None
    assert history.epoch == [0] and history.stage_of_epoch == [2]


_assert_each_rejected = conftest.assert_each_rejected

def test_invalid_arguments_fail_before_training():
    model = _small_cnn()
    before = [w.copy() for w in model.get_weights()]
    base = dict(teacher=model, train_ds=_dataset((8, 8, 1)))
    _assert_each_rejected(fine_tune, base, [
        ({"epochs": (3,)}, "epochs"),
        ({"epochs": (-1, 2)}, "epochs"),
        ({"learning_rate": (0.0, 1e-4)}, "learning_rate"),
        ({"schedule": "cosine"}, "schedule"),
        ({"unfreeze": 0}, "unfreeze"),
        ({"unfreeze": 4}, "unfreeze"),
        ({"discriminative_factor": -1.0}, "discriminative_factor"),
        ({"num_groups": 9}, "num_groups"),
        ({"optimizer": "no_such_optimizer"}, "no_such_optimizer"),
        ({"steps_per_epoch": 0, "schedule": "constant"}, "steps_per_epoch"),
    ])
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_stlr_needs_steps_for_an_infinite_dataset():
    model = _small_cnn()
    infinite = _dataset((8, 8, 1)).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fine_tune(model, infinite, epochs=(1, 1))
    history = fine_tune(model, infinite, epochs=(1, 0), steps_per_epoch=2,
                        verbose=0)
    assert history.stages[0].params["steps"] == 2
