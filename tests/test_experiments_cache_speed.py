"""The `cache_speed` experiment: the smoke preset measures every arm."""

import json

import pytest

from benchmarks.experiments import cache_speed


def test_model_sizes():
    from benchmarks import models

    quick = cache_speed.PRESETS["quick"]
    teacher = models.teacher_cnn((28, 28, 1), 10, width=quick.teacher_width,
                                 dense_units=quick.teacher_dense_units)
    assert teacher.count_params() >= 1_000_000
    student = models.student_cnn((28, 28, 1), 10, width=quick.student_width)
    assert student.count_params() <= 50_000


def test_smoke_preset_measures_every_arm(tmp_path):
    assert cache_speed.main(["--preset", "smoke", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["preset"] == "smoke" and results["git"]["commit"]
    assert set(results["epoch_seconds"]) == set(cache_speed.ARMS)
    assert not results["failures"]
    for ratio in results["ratios"].values():
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert ratio["median"] > 0 and ratio["cpu_median"] > 0
    # float32 images stored as 8-bit, int32 labels, 10 float16 logits, + metadata.
    assert 808 <= results["disk"]["bytes_per_example"] < 808 + 64
    markdown = (tmp_path / "results.md").read_text()
    assert "cached over student alone" in markdown


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="argument `preset`"):
        cache_speed.run("huge")
