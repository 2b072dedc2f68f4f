"""benchmarks.plots: each plot writes a readable PNG; the grid flags the right cells."""

import matplotlib.image
import numpy as np
import pytest

from benchmarks import plots, report, schema


@pytest.fixture(autouse=True)
def clear_keras_session():
    """Overrides conftest's Keras reset, which costs ~0.8 s a test: these
    tests never touch Keras or TensorFlow."""
    yield


def make_results():
    """Two classes; a teacher, a distilled student with only validation
    accuracy, a student without history or matrix, and a failed arm."""

    def arm(label, role, accuracy, parameters, p50, history, confusion):
        return {
            "label": label, "role": role, "status": "done", "error": None,
            "accuracy": {"mean": accuracy, "std": 0.01, "per_seed": [accuracy]},
            "parameters": parameters, "size_bytes": parameters * 4,
            "latency_ms": {"p50": p50, "p95": p50 * 2},
            "throughput_per_s": 1000.0 / p50, "train_seconds": 30.0,
            "epoch_seconds": {"median": 3.0, "min": 2.0, "max": 4.0},
            "history": history, "confusion_matrix": confusion,
        }

    results = {
        "schema_version": 1, "created": "2026-11-23T15:00:00Z",
        "dataset": "toy", "preset": "smoke",
        "environment": {
            "tensorflow": "2.21.0", "keras": "3.12.4", "autokeras": None,
            "tensorflow_datasets": None, "python": "3.11.7", "device": "CPU",
            "cpu": "Test CPU", "cpu_count": 2, "platform": "Linux",
        },
        "config": {}, "class_names": ["no", "yes"],
        "arms": {
            "teacher": arm("Teacher", "teacher", 0.9, 500_000, 3.0,
                           {"loss": [0.6, 0.3, 0.2], "accuracy": [0.7, 0.85, 0.9],
                            "val_loss": [0.7, 0.4, 0.3],
                            "val_accuracy": [0.68, 0.8, 0.88]},
                           [[45, 5], [5, 45]]),
            "tfkd": arm("Distilled", "student", 0.85, 20_000, 0.5,
                        {"val_accuracy": [0.6, 0.8, 0.84]}, [[40, 10], [5, 45]]),
            "scratch": arm("Scratch", "student", 0.8, 20_000, 0.5, None, None),
            "autokeras": {"label": "AutoKeras", "role": "automl",
                          "status": "failed", "error": "boom"},
        },
    }
    results["derived"] = report.derive(results)
    return results


def _read_png(path, min_kilobytes=10):
    with open(path, "rb") as handle:
        data = handle.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_kilobytes * 1024
    return matplotlib.image.imread(path)


def _pixels(width_inches, height_inches):
    # Matplotlib truncates the canvas size to whole pixels.
    return (int(height_inches * plots.DPI), int(width_inches * plots.DPI))


def test_fixture_is_valid():
    schema.validate(make_results())


def test_pareto_front_keeps_only_undominated_points():
    costs = [10, 20, 20, 30, 5, 40]
    accuracies = [0.80, 0.85, 0.90, 0.88, 0.70, 0.95]
    assert plots.pareto_front(costs, accuracies) == [4, 0, 2, 5]
    assert plots.pareto_front([], []) == []


def _grid_inputs():
    true = np.array([0, 1, 2, 0, 1, 2])
    teacher = np.array([0, 1, 1, 0, 2, 2])  # wrong on 2 and 4
    student = np.array([0, 2, 1, 1, 2, 2])  # wrong on 1, 2, 3, 4
    return true, teacher, student


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """All plots of `make_results()` and a grid, written once (rendering is
    the slow part of these tests)."""
    true, teacher, student = _grid_inputs()
    grid = {"images": np.zeros((6, 28, 28), np.uint8), "true_labels": true % 2,
            "teacher_predictions": teacher % 2, "student_predictions": student % 2}
    directory = tmp_path_factory.mktemp("plots")
    paths = plots.write_all_plots(make_results(), directory / "out", grid=grid)
    return {path.rsplit("/", 1)[-1]: path for path in paths}, directory / "out"


def test_write_all_plots_writes_every_file(written):
    paths, directory = written
    assert list(paths) == list(report.STANDARD_PLOTS) + [plots.PREDICTION_GRID]
    assert paths["training_curves.png"] == str(directory / "training_curves.png")


@pytest.mark.parametrize(
    "name, inches",
    [
        ("pareto_parameters.png", (8, 5.5)),
        ("pareto_latency.png", (8, 5.5)),
        ("training_curves.png", (12, 5.5)),
        # Two classes: square panels of 2 + 0.42 * 2 inches, side by side.
        ("confusion_matrices.png", (2 * 2.84 + 1.2, 2.84 + 0.6)),
        # Six images on one row.
        (plots.PREDICTION_GRID, (6 * 1.55, 1.95 + 0.9)),
    ],
)
def test_each_plot_is_a_png_of_the_expected_size(written, name, inches):
    assert _read_png(written[0][name]).shape[:2] == _pixels(*inches)


def test_plot_pareto_rejects_unknown_axis(tmp_path):
    with pytest.raises(ValueError, match="argument `x`"):
        plots.plot_pareto(make_results(), tmp_path / "p.png", x="size")


def test_write_all_plots_rejects_incomplete_grid(tmp_path):
    with pytest.raises(ValueError, match="argument `grid`"):
        plots.write_all_plots(
            make_results(), tmp_path, grid={"images": np.zeros((1, 2, 2))}
        )


def test_plots_survive_results_without_finished_arms(tmp_path):
    results = make_results()
    for arm in results["arms"].values():
        arm["status"] = "skipped"
        arm["confusion_matrix"] = None
    paths = plots.write_all_plots(results, tmp_path)
    assert len(paths) == len(report.STANDARD_PLOTS)
    for path in paths:
        _read_png(path, min_kilobytes=5)


def test_prediction_grid_flags_disagreements_and_errors(tmp_path):
    true, teacher, student = _grid_inputs()
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    grid = plots.plot_prediction_grid(
        images, true, teacher, student, ["a", "b", "c"], tmp_path / "grid.png",
        columns=4,
    )
    assert grid.disagreements == (1, 3)
    assert grid.student_errors == (1, 2, 3, 4)
    assert grid.teacher_errors == (2, 4)
    assert _read_png(grid.path).shape[:2] == _pixels(4 * 1.55, 2 * 1.95 + 0.9)


def test_prediction_grid_takes_rgb_floats_and_scores(tmp_path):
    true, teacher, student = _grid_inputs()
    images = np.random.default_rng(1).random((6, 16, 16, 3))
    teacher_scores = np.eye(3)[teacher] * 5.0  # (n, classes) -> arg-max
    grid = plots.plot_prediction_grid(
        images, true, teacher_scores, student, ["a", "b", "c"], tmp_path / "rgb.png"
    )
    assert grid.disagreements == (1, 3)
    assert _read_png(grid.path).shape[:2] == _pixels(6 * 1.55, 1.95 + 0.9)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"teacher_predictions": [0, 1]}, "argument `teacher_predictions`"),
        ({"student_predictions": [0, 1, 3, 0, 1, 2]}, "argument `student_predictions`"),
        ({"images": np.zeros((6, 4, 4, 2))}, "argument `images`"),
        ({"columns": 0}, "argument `columns`"),
    ],
)
def test_prediction_grid_rejects_bad_inputs(tmp_path, change, message):
    true, teacher, student = _grid_inputs()
    arguments = {
        "images": np.zeros((6, 4, 4)), "true_labels": true,
        "teacher_predictions": teacher, "student_predictions": student,
        "class_names": ["a", "b", "c"], "path": tmp_path / "grid.png",
    }
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        plots.plot_prediction_grid(**arguments)
