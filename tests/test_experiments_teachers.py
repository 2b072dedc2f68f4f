"""The `teachers` experiment: smoke preset end to end, resume, bad input.

The same code path as `quick` (a real `tfkd.teachers.build` +
`fine_tune`, the reference CNN, interleaved throughput, JSON, Markdown,
PNG) on 256 Fashion-MNIST images and 1 epoch, run eagerly.
"""

import json

import keras
import numpy as np
import pytest

import tfkd
from benchmarks import protocol
from benchmarks.experiments import teachers


@pytest.fixture(scope="module")
def teachers_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("teachers")
    assert teachers.main(["--preset", "smoke", "--output", str(output)]) == 0
    return output, json.loads((output / "results.json").read_text()), None


def test_smoke_writes_json_markdown_and_plot(teachers_run):
    output, results, _ = teachers_run
    assert results["experiment"] == "teachers" and results["git"]["commit"]
    rows = {row["id"]: row for row in results["rows"]}
    assert list(rows) == ["mobilenetv3small", teachers.REFERENCE]
    family = rows["mobilenetv3small"]
    # The parameters are those of the teacher `tfkd.teachers.build` makes.
    built = tfkd.teachers.build("mobilenetv3small", 10, (28, 28, 1), weights=None)
    assert family["parameters"] == built.count_params()
    assert family["image_size"] == 32 and rows[teachers.REFERENCE]["image_size"] == 28
    assert family["kind"] == "keras.applications"
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert len(row["validation_accuracy"]) == 1  # epochs (0, 1)
        assert row["train_seconds"] > 0
        for speed in ("inference_images_per_second", "train_images_per_second"):
            spread = row[speed]
            assert 0 < spread["min"] <= spread["median"] <= spread["max"]
            assert spread["repeats"] == 2
    assert results["derived"]["best"] == "mobilenetv3small"
    markdown = (output / "results.md").read_text()
    assert "| `mobilenetv3small` | 945 k | 32×32 |" in markdown
    assert "`teacher_cnn` (reference)" in markdown
    assert "(teachers.png)" in markdown
    png = output / teachers.PLOT_NAME
    assert png.exists() and png.stat().st_size > 10_000


def test_saved_weights_reproduce_the_reported_accuracy(teachers_run):
    output, results, _ = teachers_run
    row = results["rows"][0]
    model = tfkd.teachers.build(row["id"], 10, (28, 28, 1), weights=None)
    model.load_weights(output / "models" / f"{row['id']}.weights.h5")
    data = protocol.load_data(teachers.PRESETS["smoke"])
    x, y = data.x_test, data.y_test
    predicted = keras.ops.convert_to_numpy(model(x, training=False)).argmax(-1)
    assert float(np.mean(predicted == y)) == pytest.approx(row["accuracy"])


def test_command_line_resumes_without_retraining(teachers_run, capsys):
    output, results, _ = teachers_run
    teachers.main(["--preset", "smoke", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "mobilenetv3small: loaded from an earlier run" in printed
    assert "training for" not in printed
    again = json.loads((output / "results.json").read_text())
    for before, after in zip(results["rows"], again["rows"]):
        assert after["accuracy"] == before["accuracy"]
        assert after["train_seconds"] == before["train_seconds"]


def test_bad_arguments_fail_before_training(tmp_path):
    with pytest.raises(SystemExit):
        teachers.main(["--preset", "huge"])
    with pytest.raises(ValueError, match="`preset`"):
        teachers.run(preset="huge", output=tmp_path)
    with pytest.raises(ValueError, match="mobilenetv3small"):  # lists the valid
        teachers.run(preset="smoke", families=["mobilenet_v9"], output=tmp_path)
    with pytest.raises(ValueError, match="`families`"):
        teachers.run(preset="smoke", families=[], output=tmp_path)
    assert not (tmp_path / "models").exists()  # nothing was started


def test_throughput_needs_enough_images():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="at least 8 images"):
        teachers.interleaved_throughput(
            {"m": model}, images=np.zeros((4, 4), "float32"),
            labels=np.zeros(4, "int64"), inference_batch=8, train_batch=2,
            train_steps=1, repeats=1)


def test_derive_picks_fastest_family_within_one_point():
    def row(name, accuracy, speed, kind="keras.applications"):
        return {"id": name, "kind": kind, "accuracy": accuracy,
                "inference_images_per_second": {"median": speed}}

    rows = [row("slow", 0.860, 100.0), row("fast", 0.852, 900.0),
            row("fastest", 0.845, 2000.0),
            row("teacher_cnn", 0.99, 5000.0, kind="reference")]
    assert teachers.derive({"rows": rows}) == {
        "best": "slow", "best_accuracy": 0.860, "fastest_within_1pt": "fast"}
    assert teachers.derive({"rows": rows[3:]}) == {}
