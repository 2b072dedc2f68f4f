"""`tfkd.tuning`: a real keras-tuner search on a tiny Fashion-MNIST task.

128 training and 300 validation images, a small dense teacher and a linear
student, 1 epoch per trial: each trial takes seconds, and the tests check
the search's contract (values in the declared ranges, results written,
resuming, the time budget, errors before training), not its accuracy.
"""

import json
import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import tuning
from tfkd.tuning import budget as budget_lib
from tfkd.tuning import memory_cache

TEMPERATURES = (2.0, 8.0)
ALPHAS = (0.2, 0.6)


def _student():
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)],
        name="student",
    )


@pytest.fixture(scope="module")
def task():
    data = tfkd.data.load(
        "fashion_mnist", batch_size=64, train_examples=128,
        validation_fraction=0.005, seed=0,
    )
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="teacher",
    )
    teacher.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(data.train, epochs=2, verbose=0)
    return data, teacher


def _search(task, directory, **kwargs):
    data, teacher = task
    arguments = dict(
        epochs=1, max_trials=2, temperature_range=TEMPERATURES,
        alpha_range=ALPHAS, directory=str(directory), verbose=0,
    )
    arguments.update(kwargs)
    return tuning.search(teacher, _student, data.train, data.validation, **arguments)


@pytest.fixture(scope="module")
def two_trials(task, tmp_path_factory):
    directory = tmp_path_factory.mktemp("search")
    lines = []
    result = _search(task, directory, log=lines.append)
    return directory, result, lines


def test_two_trials_return_values_inside_the_ranges(two_trials):
    _, result, lines = two_trials
    assert [row["status"] for row in result.trials] == ["COMPLETED"] * 2
    for row in result.trials:
        assert TEMPERATURES[0] <= row["temperature"] <= TEMPERATURES[1]
        assert ALPHAS[0] <= row["alpha"] <= ALPHAS[1]
        assert 0.0 <= row["val_accuracy"] <= 1.0
        assert row["seconds"] > 0
    # Two random proposals, not one value twice.
    assert result.trials[0]["temperature"] != result.trials[1]["temperature"]
    best = max(result.trials, key=lambda row: row["val_accuracy"])
    assert (result.temperature, result.alpha) == (best["temperature"], best["alpha"])
    assert result.val_accuracy == best["val_accuracy"]
    assert result.learning_rate == 1e-3  # not tuned: the fixed value
    assert result.distiller_kwargs() == {
        "temperature": result.temperature, "alpha": result.alpha,
    }
    trial_lines = [line for line in lines if "trial " in line]
    assert len(trial_lines) == 2 and trial_lines[1].startswith("tuning: trial 2/2")


def test_results_are_written_as_json_and_heatmap(two_trials):
    directory, result, _ = two_trials
    project = directory / "distillation"
    assert result.json_path == str(project / "tuning.json")
    on_disk = json.loads((project / "tuning.json").read_text())
    assert on_disk["best"]["temperature"] == result.temperature
    assert on_disk["best"]["alpha"] == result.alpha
    assert len(on_disk["trials"]) == 2
    assert on_disk["settings"]["temperature_range"] == list(TEMPERATURES)
    assert tuning.TuningResult.from_json(result.json_path).alpha == result.alpha
    assert os.path.getsize(result.heatmap_path) > 10_000
    assert not list(project.glob(".tmp-*"))  # atomic writes leave nothing


def test_a_second_call_resumes_and_extends_the_search(task, two_trials):
    directory, first, _ = two_trials
    lines = []
    again = _search(task, directory, max_trials=3, log=lines.append)
    assert len(again.trials) == 3
    assert again.trials[:2] == first.trials  # reloaded, not retrained
    assert [line for line in lines if "trial " in line] == [
        next(line for line in lines if line.startswith("tuning: trial 3/3"))
    ]
    assert again.val_accuracy >= first.val_accuracy


def test_resuming_with_other_settings_is_refused(task, two_trials):
    directory, _, _ = two_trials
    with pytest.raises(ValueError, match=r"`project_name`.*epochs=1 \(now 2\)"):
        _search(task, directory, epochs=2, log=None)


def test_the_time_budget_stops_the_search_between_trials(task, tmp_path):
    result = _search(task, tmp_path, max_trials=5, max_seconds=1e-3, log=None)
    # The first trial always runs; the next one would overrun the budget.
    assert len(result.trials) == 1
    assert result.budget_exhausted
    assert json.loads(open(result.json_path).read())["budget_exhausted"] is True


def test_online_teacher_and_tuned_learning_rate(task, tmp_path):
    data, teacher = task
    before = [w.copy() for w in teacher.get_weights()]
    result = _search(
        task, tmp_path, max_trials=1, cache_teacher_logits=False,
        learning_rate_range=(1e-3, 1e-2), log=None,
    )
    assert 1e-3 <= result.learning_rate <= 1e-2
    assert result.learning_rate != 1e-3
    assert result.settings["cache_teacher_logits"] is False
    # The teacher is shared by every trial and never trained.
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert not teacher.trainable


def test_bayesian_search_needs_scipy(task, tmp_path):
    try:
        import scipy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="scipy.*tuner='random'"):
            _search(task, tmp_path, tuner="bayesian", log=None)
        return
    result = _search(task, tmp_path, tuner="bayesian", max_trials=1, log=None)
    assert TEMPERATURES[0] <= result.temperature <= TEMPERATURES[1]


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"temperature_range": (0.0, 5.0)}, ValueError, "`temperature_range`"),
        ({"temperature_range": (5.0, 2.0)}, ValueError, "`temperature_range`"),
        ({"alpha_range": (0.5, 1.5)}, ValueError, "`alpha_range`"),
        ({"alpha_range": "0-1"}, TypeError, "`alpha_range`"),
        ({"learning_rate_range": (1e-2, 1e-4)}, ValueError, "`learning_rate_range`"),
        ({"max_trials": 0}, ValueError, "`max_trials`"),
        ({"max_seconds": -1.0}, ValueError, "`max_seconds`"),
        ({"epochs": 1.5}, TypeError, "`epochs`"),
        ({"tuner": "grid"}, ValueError, "`tuner`"),
        ({"verbose": 3}, ValueError, "`verbose`"),
    ],
)
def test_invalid_arguments_fail_before_training(task, tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        _search(task, tmp_path, log=None, **arguments)
    assert not (tmp_path / "distillation").exists()


def test_wrong_models_and_data_fail_before_training(task, tmp_path):
    data, teacher = task
    with pytest.raises(TypeError, match="`student_builder`"):
        tuning.search(teacher, _student(), data.train, data.validation,
                      directory=str(tmp_path))
    with pytest.raises(TypeError, match="`train_ds`"):
        tuning.search(teacher, _student, np.zeros((4, 28, 28, 1)), data.validation,
                      directory=str(tmp_path))

    def three_classes():
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])

    # The teacher has 10 classes: caught up front by the Distiller's checks.
    with pytest.raises(ValueError, match="class"):
        tuning.search(teacher, three_classes, data.train, data.validation,
                      directory=str(tmp_path))
    assert not (tmp_path / "distillation").exists()


def test_cached_logits_are_the_teachers_and_softmax_becomes_log(task):
    data, teacher = task
    cache = memory_cache.TeacherLogitsInMemory.compute(teacher, data.train)
    assert cache.num_examples == 128
    np.testing.assert_allclose(
        cache.teacher_logits, teacher.predict(cache.inputs, verbose=0),
        rtol=1e-5, atol=1e-5,
    )
    with_softmax = keras.Sequential([teacher, keras.layers.Softmax()])
    log_probabilities = memory_cache.TeacherLogitsInMemory.compute(
        with_softmax, data.train
    ).teacher_logits
    np.testing.assert_allclose(
        np.exp(log_probabilities).sum(axis=-1), 1.0, rtol=1e-5
    )
    # Same seed, same order: every trial sees the same epochs.
    first = [y["labels"].numpy() for _, y in cache.dataset(seed=3)]
    second = [y["labels"].numpy() for _, y in cache.dataset(seed=3)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(second))


def test_hypermodel_builds_a_distiller_with_the_trial_values(task):
    import keras_tuner

    _, teacher = task
    keras.utils.set_random_seed(0)
    weights = _student().get_weights()
    hypermodel = tuning.DistillationHyperModel(
        _student, teacher, initial_weights=weights,
        learning_rate_range=(1e-4, 1e-2),
    )
    hp = keras_tuner.HyperParameters()
    hp.Fixed("temperature", 5.5)
    hp.Fixed("alpha", 0.25)
    hp.Fixed("learning_rate", 3e-3)
    distiller = hypermodel.build(hp)
    assert isinstance(distiller, tfkd.Distiller)
    assert (distiller.temperature, distiller.alpha) == (5.5, 0.25)
    assert float(distiller.optimizer.learning_rate) == pytest.approx(3e-3)
    for expected, actual in zip(weights, distiller.student.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(distiller(x), distiller.student(x), rtol=1e-6)


def test_time_budget_refuses_a_trial_it_cannot_fit():
    unlimited = budget_lib.TimeBudget(None)
    unlimited.record_trial(1e6)
    assert unlimited.allows_another_trial()
    budget = budget_lib.TimeBudget(10.0, start=time.perf_counter() - 4.0)
    assert budget.allows_another_trial()  # the first trial always starts
    budget.record_trial(4.0)
    assert budget.allows_another_trial()  # 4 s spent + 4 s expected <= 10 s
    budget.record_trial(8.0)
    assert not budget.allows_another_trial()  # 4 + mean(4, 8) = 10 s + clock
    assert budget.exhausted


def test_heatmap_draws_any_number_of_trials(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        {"status": "COMPLETED", "temperature": float(t), "alpha": float(a),
         "val_accuracy": float(v), "learning_rate": 1e-3}
        for t, a, v in zip(np.exp(rng.uniform(0, 3, 8)), rng.random(8),
                           rng.uniform(0.7, 0.9, 8))
    ]
    rows.append({"status": "FAILED", "temperature": 3.0, "alpha": 0.5,
                 "val_accuracy": None, "learning_rate": 1e-3})
    for count in (0, 1, 2, 9):
        path = tmp_path / f"heatmap_{count}.png"
        assert tuning.plot_heatmap(rows[:count], path) == str(path)
        assert path.stat().st_size > 5_000


def test_datasets_must_be_tf_data(task, tmp_path):
    data, teacher = task
    with pytest.raises(TypeError, match="`val_ds`"):
        tuning.search(teacher, _student, data.train,
                      tf.data.Dataset.range(3).as_numpy_iterator(),
                      directory=str(tmp_path))
