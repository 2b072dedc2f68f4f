"""Tests for tfkd/teachers/schedules.py."""

import math

import keras
import numpy as np
import pytest

import conftest
from tfkd.teachers import SlantedTriangularLR


def reference_stlr(t, total, max_lr, cut_frac, ratio):
    """Howard & Ruder (2018), eq. (3), written out in plain Python."""
    cut = math.floor(total * cut_frac)
    if t < cut:
        p = t / cut
    else:
        p = 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return max_lr * (1 + p * (ratio - 1)) / ratio


def _values(schedule, steps):
    # The schedule is elementwise, so one call evaluates every step.
    return keras.ops.convert_to_numpy(schedule(np.asarray(steps))).astype(
        "float64")


def test_matches_the_papers_formula_at_every_step():
    schedule = SlantedTriangularLR(0.01, total_steps=200, cut_frac=0.1,
                                   ratio=32)
    steps = np.arange(201)
    expected = [reference_stlr(t, 200, 0.01, 0.1, 32) for t in steps]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-5)


def test_published_shape_rise_then_linear_decay_ratio_32():
    total, cut_frac = 1000, 0.1
    schedule = SlantedTriangularLR(0.01, total_steps=total, cut_frac=cut_frac)
    values = _values(schedule, np.arange(total + 1))
    cut = int(total * cut_frac)
    assert int(np.argmax(values)) == cut
    np.testing.assert_allclose(values[cut], 0.01, rtol=1e-6)
    np.testing.assert_allclose(values[0], 0.01 / 32, rtol=1e-5)
    np.testing.assert_allclose(values[total], 0.01 / 32, rtol=1e-5)
    np.testing.assert_allclose(values.max() / values.min(), 32, rtol=1e-4)
    rise, fall = np.diff(values[: cut + 1]), np.diff(values[cut:])
    # Linear: constant positive slope up, constant negative slope down, and
    # the fall is (1 / cut_frac - 1) = 9 times longer than the rise.
    np.testing.assert_allclose(rise, rise[0], rtol=1e-3)
    np.testing.assert_allclose(fall, fall[0], rtol=1e-3)
    assert rise[0] > 0 > fall[0]
    np.testing.assert_allclose(rise[0] / -fall[0], 9, rtol=1e-3)


def test_holds_the_minimum_after_total_steps():
    schedule = SlantedTriangularLR(1.0, total_steps=10, cut_frac=0.5, ratio=4)
    np.testing.assert_allclose(_values(schedule, [10, 11, 50]), 0.25,
                               rtol=1e-6)


def test_short_schedules_rise_for_one_step():
    schedule = SlantedTriangularLR(1.0, total_steps=3, cut_frac=0.1, ratio=2)
    assert schedule.cut == 1
    assert float(schedule(1)) == pytest.approx(1.0)


def test_get_config_round_trip():
    schedule = SlantedTriangularLR(3e-3, total_steps=77, cut_frac=0.2,
                                   ratio=16, name="stlr")
    config = schedule.get_config()
    assert config == {"max_learning_rate": 3e-3, "total_steps": 77,
                      "cut_frac": 0.2, "ratio": 16.0, "name": "stlr"}
    clone = SlantedTriangularLR.from_config(config)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert isinstance(restored, SlantedTriangularLR)
    steps = np.arange(0, 90, 7)
    np.testing.assert_allclose(_values(restored, steps),
                               _values(schedule, steps))
    np.testing.assert_allclose(_values(clone, steps), _values(schedule, steps))


def test_round_trips_inside_an_optimizer():
    optimizer = keras.optimizers.Adam(
        SlantedTriangularLR(1e-3, total_steps=100))
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    saved = restored.get_config()["learning_rate"]
    assert saved["class_name"] == "SlantedTriangularLR"
    assert saved["config"]["total_steps"] == 100
    assert float(restored.learning_rate) == pytest.approx(1e-3 / 32)


_assert_each_rejected = conftest.assert_each_rejected

def test_invalid_arguments():
    _assert_each_rejected(
        SlantedTriangularLR,
        dict(max_learning_rate=0.01, total_steps=100),
        [
            ({"max_learning_rate": 0.0}, "argument `max_learning_rate`"),
            ({"total_steps": 0}, "argument `total_steps`"),
            ({"cut_frac": 1.0}, "argument `cut_frac`"),
            ({"ratio": 0.5}, "argument `ratio`"),
        ],
    )
    _assert_each_rejected(
        SlantedTriangularLR,
        dict(max_learning_rate=0.01, total_steps=100),
        [
            ({"total_steps": 10.0}, "Invalid type for argument `total_steps`"),
            ({"max_learning_rate": "fast"},
             "Invalid type for argument `max_learning_rate`"),
        ],
        errors=TypeError,
    )
