"""The `backends` experiment: the smoke preset runs every installed backend.

In `make test-latest` only TensorFlow is installed, so it runs that one and
lists JAX and PyTorch as skipped; in an environment with more backends
(`make env-backends`) it runs them too, from the same start and batches.
"""

import json

import pytest

from benchmarks.experiments import backends


def test_smoke_preset_reports_every_backend(tmp_path):
    assert backends.main(["--preset", "smoke", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    installed, skipped = backends.installed_backends()
    assert results["preset"] == "smoke" and results["git"]["commit"]
    assert set(results["backends_ran"]) | set(results["backends_skipped"]) == set(
        backends.BACKENDS)
    assert set(skipped) <= set(results["backends_skipped"])
    assert "tensorflow" in results["backends_ran"]
    for backend in results["backends_ran"]:
        summary = results["per_backend"][backend]
        assert summary["versions"]["backend"] == backend
        for arm in backends.ARMS:
            spread = summary["epoch_seconds"][arm]
            assert 0 < spread["min"] <= spread["median"] <= spread["max"]
            assert 0 <= summary["accuracy"][arm]["mean"] <= 1
        assert summary["over_tensorflow"]["kd"]["median"] > 0
    reference = results["per_backend"]["tensorflow"]
    assert reference["over_tensorflow"]["kd"]["median"] == pytest.approx(1.0)
    markdown = (tmp_path / "results.md").read_text()
    assert "| tensorflow" in markdown
    for backend, why in results["backends_skipped"].items():
        assert f"Skipped {backend}: {why}" in markdown
    assert (tmp_path / "backends.png").stat().st_size > 0


def test_a_failed_worker_is_reported_with_its_error():
    record = {"status": "done", "versions": {"backend": "tensorflow"},
              "epoch_seconds_raw": {"scratch": [2.0, 1.0], "kd": [4.0, 3.0]},
              "accuracy": {"scratch": 0.5, "kd": 0.6}, "loss": {"scratch": [1.0], "kd": [1.0]}}
    failed = {"status": "failed", "error": "ValueError: no step"}
    summary = backends.summarize({"tensorflow": [record], "torch": [failed]},
                                 {"jax": "not installed"})
    assert summary["backends_ran"] == ["tensorflow"]
    assert summary["backends_skipped"] == {"jax": "not installed",
                                           "torch": "ValueError: no step"}
    assert summary["per_backend"]["tensorflow"]["kd_over_scratch"]["median"] == 3.0
