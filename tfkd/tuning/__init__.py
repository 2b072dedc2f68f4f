"""Choosing the distillation temperature T and α by search.

>>> result = tfkd.tuning.search(teacher, build_student, train_ds, val_ds,
...                             max_trials=20, max_seconds=3600)  # doctest: +SKIP
>>> result.temperature, result.alpha  # doctest: +SKIP
(3.1, 0.24)
>>> distiller = tfkd.Distiller(teacher=teacher, student=build_student(),
...                            **result.distiller_kwargs())  # doctest: +SKIP

A keras-tuner search (random by default, Bayesian optimization with
`tuner="bayesian"`) whose objective is the distilled student's validation
accuracy, with a trial and time budget,
resumable from its directory; the best values and every trial are written
to `tuning.json`, with a T x α heatmap.

Modules, one job each: `hypermodel` (a fresh student and `Distiller` per
trial), `memory_cache` (the teacher's logits computed once), `budget` (the
time budget, as keras-tuner oracles), `tuner` (the `DistillationTuner` and
`search`), `result` (`TuningResult` and `tuning.json`) and `heatmap` (the
plot).
"""

try:
    import keras_tuner  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "tfkd.tuning needs keras-tuner, which is an optional extra of tfkd: "
        "`pip install 'tfkd[tuning]'`."
    ) from error

from tfkd.tuning.heatmap import plot_heatmap
from tfkd.tuning.hypermodel import DistillationHyperModel
from tfkd.tuning.result import TuningResult
from tfkd.tuning.tuner import DistillationTuner
from tfkd.tuning.tuner import search

__all__ = [
    "DistillationHyperModel",
    "DistillationTuner",
    "TuningResult",
    "plot_heatmap",
    "search",
]
