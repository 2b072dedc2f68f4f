"""benchmarks.report and benchmarks.schema on a fixed, hand-written results dict."""

import copy
import json
import math
import os
import re

import numpy as np
import pytest

from benchmarks import report, sample_results, schema


@pytest.fixture(autouse=True)
def clear_keras_session():
    """Overrides conftest's Keras reset, which costs ~0.8 s a test: these
    tests never touch Keras or TensorFlow."""
    yield


def _arm(label, role, per_seed, std, parameters, size_bytes, p50, p95,
         throughput, train_seconds, epoch_median, history=None, confusion=None):
    return {
        "label": label,
        "role": role,
        "status": "done",
        "error": None,
        "accuracy": {"mean": sum(per_seed) / len(per_seed), "std": std,
                     "per_seed": list(per_seed)},
        "parameters": parameters,
        "size_bytes": size_bytes,
        "latency_ms": {"p50": p50, "p95": p95},
        "throughput_per_s": throughput,
        "train_seconds": train_seconds,
        "epoch_seconds": {"median": epoch_median, "min": epoch_median * 0.9,
                          "max": epoch_median * 1.2},
        "history": history,
        "confusion_matrix": confusion,
    }


def make_results():
    """Three classes, five finished arms, one failed and one skipped arm.

    The numbers are chosen so that every derived value is easy to check by
    hand: teacher 90 % / 1 M parameters / 4 ms; students 100 k / 1 ms.
    """
    history = {"loss": [1.0, 0.5], "accuracy": [0.7, 0.8],
               "val_loss": [1.1, 0.6], "val_accuracy": [0.68, 0.79]}
    arms = {
        "teacher": _arm("Teacher (CNN)", "teacher", [0.9], 0.0, 1_000_000,
                        4_000_000, 4.0, 6.0, 5_000.0, 120.0, 10.0, history,
                        [[90, 5, 5], [10, 85, 5], [0, 5, 95]]),
        "scratch": _arm("Student from scratch", "student", [0.79, 0.81], 0.01,
                        100_000, 409_600, 1.0, 1.5, 25_000.0, 40.0, 4.0),
        "tfkd": _arm("Distilled student (tfkd, online)", "student", [0.84, 0.86],
                     0.01, 100_000, 409_600, 0.8, 1.2, 26_000.0, 61.5, 6.0),
        "tfkd_cached": _arm("Distilled student (tfkd, cached teacher)", "student",
                            [0.84], 0.0, 100_000, 409_600, 1.0, 1.5, 25_000.0,
                            3_790.0, 5.0),
        "keras_distillation_kl": _arm(
            "keras.distillation (KLDivergence)", "student", [0.83], 0.0,
            100_000, 409_600, 1.0, 1.5, 25_000.0, 70.0, 8.0),
        "keras_distillation": {
            "label": "keras.distillation (default loss)", "role": "student",
            "status": "skipped", "error": None,
        },
        "autokeras": {
            "label": "AutoKeras ImageClassifier", "role": "automl",
            "status": "failed",
            "error": "RuntimeError: out of memory\nTraceback (most recent call last):",
            "accuracy": None, "parameters": None,
        },
    }
    # The distilled arm records no history at all (the key is absent).
    del arms["tfkd"]["history"]
    results = {
        "schema_version": 1,
        "created": "2026-11-23T15:00:00+00:00",
        "dataset": "fashion_mnist",
        "preset": "quick",
        "environment": {
            "tensorflow": "2.21.0", "keras": "3.12.4", "autokeras": None,
            "tensorflow_datasets": "4.9.9", "python": "3.11.7", "device": "CPU",
            "cpu": "Test CPU @ 2.0GHz", "cpu_count": 2, "platform": "Linux-test",
        },
        "config": {"student_epochs": 2, "seeds": [0, 1], "temperature": 4.0,
                   "alpha": 0.1},
        "class_names": ["cat", "dog", "bird"],
        "arms": arms,
    }
    results["derived"] = report.derive(results)
    return results


# derive


def test_derive_per_arm_numbers():
    derived = report.derive(make_results())
    assert derived["teacher"] == {
        "accuracy_kept_vs_teacher": 1.0, "compression_ratio": 1.0,
        "speedup_vs_teacher": 1.0, "kd_gain_over_scratch": None,
        "paired_difference_vs_scratch": None,
    }
    scratch = derived["scratch"]
    assert scratch["accuracy_kept_vs_teacher"] == pytest.approx(0.8 / 0.9, abs=1e-12)
    assert scratch["compression_ratio"] == 10.0
    assert scratch["speedup_vs_teacher"] == 4.0
    assert scratch["kd_gain_over_scratch"] is None
    tfkd = derived["tfkd"]
    assert tfkd["accuracy_kept_vs_teacher"] == pytest.approx(0.85 / 0.9, abs=1e-12)
    assert tfkd["compression_ratio"] == 10.0
    assert tfkd["speedup_vs_teacher"] == 5.0
    assert tfkd["kd_gain_over_scratch"] == pytest.approx(0.05, abs=1e-12)
    # Same seeds, paired: the mean of the per-seed differences, its t-interval.
    paired = tfkd["paired_difference_vs_scratch"]
    assert paired["mean"] == pytest.approx(0.05) and paired["seeds"] == 2
    assert paired["low"] <= paired["mean"] <= paired["high"]
    assert derived["keras_distillation_kl"]["kd_gain_over_scratch"] == pytest.approx(
        0.03, abs=1e-12
    )
    for arm_id in ("autokeras", "keras_distillation"):
        assert set(derived[arm_id].values()) == {None}


def _with_few_labels(results):
    """`results` plus a few-labels block: its scratch and the recipe arm."""
    results["arms"]["scratch_few"] = {
        **_arm("Student from scratch (few labels)", "student", [0.70, 0.72], 0.01,
               100_000, 409_600, 1.0, 1.5, 25_000.0, 40.0, 4.0),
        "baseline": None, "trained_on": "60 labelled"}
    results["arms"]["tfkd_transfer"] = {
        **_arm("tfkd recipe: transfer set (few labels)", "student", [0.75, 0.78],
               0.02, 100_000, 409_600, 1.0, 1.5, 25_000.0, 40.0, 4.0),
        "baseline": "scratch_few", "trained_on": "60 labelled + 540 unlabelled"}
    results["few_labels"] = {
        "teacher_examples": 600, "labelled": 60, "unlabelled": 540, "epochs": 10,
        "batch_size": 64, "steps": 100, "temperature": 2.0, "alpha": 0.0,
        "learning_rate_schedule": "cosine", "scratch_augmentation": False,
        "baseline": "scratch_few", "recipe": "tfkd_transfer",
        "gain": {"mean": 0.055, "low": 0.0, "high": 0.1, "seeds": 2}}
    results["derived"] = report.derive(results)
    return results


def test_derive_compares_an_arm_with_its_own_baseline():
    derived = report.derive(_with_few_labels(make_results()))
    recipe = derived["tfkd_transfer"]
    assert recipe["baseline"] == "scratch_few"
    assert recipe["kd_gain_over_scratch"] == pytest.approx(0.055)  # not vs `scratch`
    assert recipe["paired_difference_vs_scratch"]["mean"] == pytest.approx(0.055)
    # A baseline is compared with nothing; the default arms keep `scratch`.
    assert derived["scratch_few"]["kd_gain_over_scratch"] is None
    assert "baseline" not in derived["scratch_few"] and "baseline" not in derived["tfkd"]
    assert derived["tfkd"]["kd_gain_over_scratch"] == pytest.approx(0.05)


def test_markdown_says_what_data_each_model_saw():
    results = _with_few_labels(make_results())
    results["arms"]["teacher"]["trained_on"] = "600 labelled"
    schema.validate(results)
    text = report.markdown(results)
    assert "| Trained on |" in text
    assert "| 10.0 s | 600 labelled |" in text
    assert "| 4.0 s | 60 labelled + 540 unlabelled |" in text
    assert "| +5.50 pp (vs Student from scratch (few labels)) |" in text
    few = text.split("## Few labels: a transfer set")[1]
    assert "Teacher: 600 labelled images." in few
    assert "the same 60 labelled images plus the other 540 without labels" in few
    assert "+5.50 pp [+0.00, +10.00]" in few
    # Without the block or the data notes, the report is as before.
    assert "Trained on" not in report.markdown(make_results())
    assert "Few labels" not in report.markdown(make_results())


def test_derive_epoch_time_ratios():
    assert report.derive(make_results())["epoch_time_ratios"] == {
        "tfkd_over_scratch": 1.5,
        "tfkd_over_keras_distillation": 0.75,
        "cached_over_scratch": 1.25,
    }


def test_derive_never_raises_on_missing_data():
    assert report.derive({}) == {
        "epoch_time_ratios": dict.fromkeys(schema.EPOCH_TIME_RATIO_KEYS)
    }
    results = make_results()
    results["arms"]["teacher"]["status"] = "failed"
    del results["arms"]["scratch"]
    results["arms"]["tfkd_cached"]["latency_ms"]["p50"] = 0.0
    results["arms"]["tfkd_cached"]["epoch_seconds"] = None
    derived = report.derive(results)
    assert derived["tfkd"] == dict.fromkeys(
        (*schema.DERIVED_ARM_KEYS, "paired_difference_vs_scratch"))
    assert derived["tfkd_cached"]["speedup_vs_teacher"] is None
    assert derived["epoch_time_ratios"] == {
        "tfkd_over_scratch": None,
        "tfkd_over_keras_distillation": 0.75,
        "cached_over_scratch": None,
    }


# markdown


def test_markdown_title_environment_and_table():
    text = report.markdown(make_results())
    lines = text.splitlines()
    assert lines[0] == "# tfkd benchmark: fashion_mnist, preset `quick`"
    assert "2026-11-23 15:00 UTC" in text
    assert "TensorFlow 2.21.0 · Keras 3.12.4 · Python 3.11.7" in text
    assert "CPU (Test CPU @ 2.0GHz, 2 cores)" in text
    assert (
        "| Teacher (CNN) | 90.00 % | 100.0 % | 1.00 M | 3.81 MB "
        "| 4.00 / 6.00 ms | 5.00 k/s | 2 min 00 s | 10.0 s |"
    ) in lines
    assert (
        "| Distilled student (tfkd, online) | 85.00 ± 1.00 % | 94.4 % | 100 k "
        "| 400 KB | 0.80 / 1.20 ms | 26.0 k/s | 1 min 02 s | 6.0 s |"
    ) in lines
    # 3790 s of training reads as hours and minutes.
    assert "| 1 h 03 min | 5.0 s |" in text
    # Only finished arms are rows of the main table.
    results_section = text.split("## Results")[1].split("## Derived")[0]
    assert results_section.count("\n| ") == 6  # header + 5 finished arms
    assert "AutoKeras" not in results_section


def test_markdown_derived_failed_and_plots():
    text = report.markdown(make_results())
    assert ("| Distilled student (tfkd, online) | +5.00 pp "
            "| +5.00 pp [+5.00, +5.00] | 10.0× | 5.00× |") in text
    assert "| Student from scratch | — | — | 10.0× | 4.00× |" in text
    assert "student from scratch: 1.50×" in text
    assert "keras.distillation (KLDivergence): 0.75×" in text
    assert "(cached teacher) / student from scratch: 1.25×" in text
    failed = text.split("## Failed or skipped")[1]
    assert (
        "AutoKeras ImageClassifier (`autokeras`): failed, RuntimeError: out of memory"
    ) in failed
    assert "Traceback" not in text  # only the first line of an error
    assert "keras.distillation (default loss) (`keras_distillation`): skipped" in failed
    # By default every plot `write_all_plots` can write is linked.
    for name in report.STANDARD_PLOTS + (report.PREDICTION_GRID,):
        assert f"]({name})" in text
    custom = report.markdown(
        make_results(), plot_files=["/tmp/out/prediction_grid.png"]
    )
    caption = "Teacher and student predictions on test images"
    assert f"![{caption}](prediction_grid.png)" in custom
    assert "pareto_parameters.png" not in custom


def test_markdown_escapes_table_separators_in_labels():
    results = make_results()
    results["arms"]["scratch"]["label"] = "Student | scratch"
    assert "| Student \\| scratch |" in report.markdown(results)


def test_number_formats():
    assert report.format_percent(0.91234) == "91.23 %"
    assert report.format_count(1_234_567) == "1.23 M"
    assert report.format_count(52_314) == "52.3 k"
    assert report.format_bytes(2_048) == "2.00 KB"
    assert report.format_milliseconds(3.4) == "3.40 ms"
    assert report.format_duration(0.5) == "0.50 s"
    assert report.format_points(-0.0105) == "−1.05 pp"
    assert report.format_ratio(None) == "—"


# schema


def test_fixture_and_example_are_valid():
    results = make_results()
    assert schema.validate(results) is results
    schema.validate(sample_results.example_results())


def _set(results, path, value):
    *parents, last = path
    target = results
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, named",
    [
        (("schema_version",), 0, "schema_version"),
        (("created",), "yesterday", "created"),
        (("created",), "2026-11-23T15:00:00", "created"),  # no UTC offset
        (("environment", "cpu_count"), "2", "environment.cpu_count"),
        (("environment", "keras"), _DELETE, "environment.keras"),
        (("class_names", 1), 7, "class_names[1]"),
        (("arms", "scratch", "role"), "pupil", "arms.scratch.role"),
        (("arms", "scratch", "status"), "ok", "arms.scratch.status"),
        (("arms", "tfkd", "accuracy", "mean"), _DELETE, "arms.tfkd.accuracy.mean"),
        (("arms", "tfkd", "accuracy", "mean"), 87.3, "arms.tfkd.accuracy.mean"),
        (("arms", "tfkd", "accuracy", "per_seed", 1), "0.8",
         "arms.tfkd.accuracy.per_seed[1]"),
        (("arms", "tfkd", "latency_ms", "p95"), math.nan, "arms.tfkd.latency_ms.p95"),
        (("arms", "teacher", "parameters"), None, "arms.teacher.parameters"),
        (("arms", "teacher", "parameters"), 1.5, "arms.teacher.parameters"),
        (("arms", "teacher", "history", "loss", 0), None,
         "arms.teacher.history.loss[0]"),
        (("arms", "teacher", "confusion_matrix", 2), [1, 2],
         "arms.teacher.confusion_matrix[2]"),
        (("arms", "autokeras", "error"), None, "arms.autokeras.error"),
        (("derived", "ghost"), dict.fromkeys(schema.DERIVED_ARM_KEYS), "derived.ghost"),
        (("derived", "epoch_time_ratios", "tfkd_over_scratch"), "fast",
         "derived.epoch_time_ratios.tfkd_over_scratch"),
    ],
)
def test_validate_names_the_offending_key_path(path, value, named):
    results = make_results()
    _set(results, path, value)
    with pytest.raises(ValueError, match=re.escape(f"`{named}`")):
        schema.validate(results)


def test_validate_accepts_numpy_values():
    results = make_results()
    results["arms"]["tfkd"]["parameters"] = np.int64(100_000)
    results["arms"]["tfkd"]["accuracy"]["mean"] = np.float32(0.85)
    results["arms"]["teacher"]["confusion_matrix"] = np.eye(3, dtype=np.int64)
    schema.validate(results)
    results["arms"]["teacher"]["confusion_matrix"] = np.eye(3) * 0.5
    with pytest.raises(ValueError, match=re.escape("confusion_matrix[0][0]")):
        schema.validate(results)


# write_report / load_results


def test_write_report_round_trips(tmp_path):
    results = make_results()
    original = copy.deepcopy(results)
    # NumPy values, as the benchmark produces them, become plain JSON.
    results["arms"]["teacher"]["confusion_matrix"] = np.array(
        results["arms"]["teacher"]["confusion_matrix"]
    )
    results["arms"]["scratch"]["parameters"] = np.int64(100_000)
    json_path, markdown_path = report.write_report(results, tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == ["results.json", "results.md"]
    loaded = report.load_results(json_path)
    assert loaded == original
    with open(markdown_path, encoding="utf-8") as handle:
        assert handle.read() == report.markdown(original)


def test_write_report_recomputes_derived_and_keeps_invalid_results(tmp_path):
    results = make_results()
    stale = dict.fromkeys(schema.EPOCH_TIME_RATIO_KEYS)
    results["derived"] = {"epoch_time_ratios": stale}
    json_path, _ = report.write_report(results, tmp_path)
    assert report.load_results(json_path)["derived"] == report.derive(results)

    results["arms"]["tfkd"]["parameters"] = -1
    with pytest.raises(ValueError, match=re.escape("`arms.tfkd.parameters`")):
        report.write_report(results, tmp_path / "bad")
    assert os.listdir(tmp_path / "bad") == ["results.invalid.json"]


def test_load_results_rejects_bad_files(tmp_path):
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        report.load_results(not_json)

    old = make_results()
    old["schema_version"] = 0
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="schema_version 0"):
        report.load_results(old_path)

    broken = make_results()
    del broken["arms"]["scratch"]["label"]
    broken_path = tmp_path / "results.json"
    broken_path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=re.escape("`arms.scratch.label` is missing")):
        report.load_results(broken_path)
