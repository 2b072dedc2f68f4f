"""Tests of benchmarks/cache_speed.py: the smoke preset runs every arm."""

import json

import pytest

from benchmarks import cache_speed


def test_models_respect_the_issue_sizes():
    assert cache_speed.make_teacher().count_params() >= 1_000_000
    assert cache_speed.make_student().count_params() <= 50_000


def test_smoke_preset_measures_every_arm(tmp_path, capsys):
    output = tmp_path / "results.json"
    results = cache_speed.main(
        ["--preset", "smoke", "--output", str(output), "--workdir", str(tmp_path)]
    )
    assert json.loads(output.read_text())["preset"] == "smoke"
    assert set(results["epoch_seconds"]) == set(cache_speed.ARMS)
    for ratio in results["ratios"].values():
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert ratio["median"] > 0
    # 8-bit images as uint8, int32 labels, 10 float16 logits, + metadata.
    assert 808 <= results["disk"]["bytes_per_example"] < 808 + 64
    assert "cached over student alone" in capsys.readouterr().out
    assert results["ratios"]["build_over_predict"]["cpu_median"] > 0
    assert (tmp_path / "results.md").exists()


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="argument `preset`"):
        cache_speed.run("huge")
