"""`TuningResult`: what a search found, as an object and as `tuning.json`."""

import dataclasses
import math
import os

from tfkd.tuning import hypermodel as hypermodel_lib
from tfkd.utils import files

#: Version of the `tuning.json` layout; bumped on incompatible changes.
SCHEMA_VERSION = 1
#: File name of the results in the output directory.
JSON_NAME = "tuning.json"
#: File name of the T x alpha heatmap in the output directory.
HEATMAP_NAME = "tuning_heatmap.png"


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """The best distillation hyper-parameters of a search, and every trial.

    Attributes:
        temperature: The best trial's temperature T.
        alpha: The best trial's α (weight of the hard-label loss).
        learning_rate: The best trial's learning rate (the fixed one when
            it was not tuned).
        val_accuracy: The best trial's student validation accuracy (last
            epoch), the search objective.
        best_trial_id: keras-tuner's id of the best trial.
        trials: Tuple of dicts, one per trial in start order, with
            `trial_id`, `status` (`"COMPLETED"`, `"FAILED"`, ...),
            `temperature`, `alpha`, `learning_rate`, `val_accuracy`,
            `val_loss`, `accuracy` (training), `seconds` and `error`
            (first line of a failed trial's error, else `None`).
        settings: The search settings (ranges, epochs, tuner, budget...).
        budget_exhausted: Whether the time budget stopped the search
            before `max_trials`.
        search_seconds: Wall time of this session's search.
        json_path: Where `tuning.json` was written, or `None`.
        heatmap_path: Where the heatmap PNG was written, or `None`
            (matplotlib missing, or no finished trial).

    Example:

    >>> result = TuningResult(
    ...     temperature=4.0, alpha=0.3, learning_rate=1e-3, val_accuracy=0.9,
    ...     best_trial_id="0", trials=(), settings={})
    >>> result.distiller_kwargs()
    {'temperature': 4.0, 'alpha': 0.3}
    """

    temperature: float
    alpha: float
    learning_rate: float
    val_accuracy: float
    best_trial_id: str
    trials: tuple
    settings: dict
    budget_exhausted: bool = False
    search_seconds: float = 0.0
    json_path: str | None = None
    heatmap_path: str | None = None

    def distiller_kwargs(self):
        """`{"temperature": T, "alpha": α}`, for `tfkd.Distiller(**...)`."""
        return {"temperature": self.temperature, "alpha": self.alpha}

    def to_dict(self):
        """The result as the JSON-ready dict written to `tuning.json`."""
        return {
            "schema_version": SCHEMA_VERSION,
            "best": {
                "trial_id": self.best_trial_id,
                "temperature": self.temperature,
                "alpha": self.alpha,
                "learning_rate": self.learning_rate,
                "val_accuracy": self.val_accuracy,
            },
            "settings": dict(self.settings),
            "budget_exhausted": self.budget_exhausted,
            "search_seconds": self.search_seconds,
            "trials": [dict(trial) for trial in self.trials],
            "heatmap": (
                None
                if self.heatmap_path is None
                else os.path.basename(self.heatmap_path)
            ),
        }

    @classmethod
    def from_json(cls, path):
        """Reads a `tuning.json` written by `tfkd.tuning.search`.

        Args:
            path: Path of the file.

        Returns:
            A `TuningResult`.

        Raises:
            ValueError: if the file is not a `tuning.json` of this version.
        """
        path = os.fspath(path)
        data = files.read_versioned_json(path, SCHEMA_VERSION, JSON_NAME)
        best = data["best"]
        heatmap = data.get("heatmap")
        heatmap_path = (
            None
            if heatmap is None
            else os.path.join(os.path.dirname(path), heatmap)
        )
        return cls(
            temperature=best["temperature"],
            alpha=best["alpha"],
            learning_rate=best["learning_rate"],
            val_accuracy=best["val_accuracy"],
            best_trial_id=best["trial_id"],
            trials=tuple(data["trials"]),
            settings=data["settings"],
            budget_exhausted=data["budget_exhausted"],
            search_seconds=data["search_seconds"],
            json_path=path,
            heatmap_path=heatmap_path,
        )


def trial_table(oracle, fixed_learning_rate):
    """One dict per trial of `oracle`, in the order the trials started.

    Args:
        oracle: A keras-tuner oracle after (part of) a search.
        fixed_learning_rate: The learning rate of trials that did not tune
            it.

    Returns:
        A list of dicts (see `TuningResult.trials`).
    """
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        metrics = {
            name: _last(trial, name)
            for name in ("val_accuracy", "val_loss", "accuracy", "seconds")
        }
        status = str(getattr(trial.status, "value", trial.status))
        rows.append(
            {
                "trial_id": trial_id,
                "status": status,
                "temperature": _float(values.get(hypermodel_lib.TEMPERATURE)),
                "alpha": _float(values.get(hypermodel_lib.ALPHA)),
                "learning_rate": _float(
                    values.get(
                        hypermodel_lib.LEARNING_RATE, fixed_learning_rate
                    )
                ),
                **metrics,
                "error": (
                    None
                    if status == "COMPLETED"
                    else _error_line(trial.message)
                ),
            }
        )
    return rows


def best_row(rows):
    """The completed row with the highest `val_accuracy`, or `None`.

    Ties go to the earlier trial, as keras-tuner's own ranking does.
    """
    done = [
        row
        for row in rows
        if row["status"] == "COMPLETED" and row["val_accuracy"] is not None
    ]
    if not done:
        return None
    return max(done, key=lambda row: row["val_accuracy"])


def _last(trial, name):
    if not trial.metrics.exists(name):
        return None
    value = trial.metrics.get_last_value(name)
    return _float(value)


def _float(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _error_line(text, limit=300):
    """The last non-empty line of a traceback (the error itself), shortened."""
    if not text:
        return None
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
