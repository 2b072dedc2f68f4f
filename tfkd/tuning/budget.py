"""A time budget for a whole search, enforced between trials.

keras-tuner stops a search when its oracle answers a request for a new
trial with the status `STOPPED` (that is how `max_trials` works). The
oracles here add one more reason to answer so: the time budget is spent.
No trial is cut short, so every finished trial's score comes from the same
number of epochs and the scores stay comparable; the price is that a search
can overrun its budget by at most one trial, which the budget makes rare by
not starting a trial it does not expect to finish in time.
"""

import time

import keras_tuner

# keras-tuner 1.4 exposes `TrialStatus` under `keras_tuner.engine.trial`.
from keras_tuner.engine import trial as trial_module


class TimeBudget:
    """Wall-clock seconds one search may spend, counted from `start`.

    A new trial starts only if the time already spent plus the mean
    duration of the trials finished so far (in this session) fits within
    `seconds`. The first trial of a session always starts, so a search
    makes progress even when the budget is shorter than one trial.

    Args:
        seconds: The budget in seconds (> 0), or `None` for no limit.
        start: A `time.perf_counter()` value the budget counts from.
            Defaults to now.

    Attributes:
        exhausted: Whether the budget has refused a trial.
        trial_seconds: Durations of the trials finished in this session.

    Example:

    >>> budget = TimeBudget(3600.0)
    >>> budget.allows_another_trial()
    True
    >>> budget.record_trial(10.0); budget.exhausted
    False
    """

    def __init__(self, seconds, start=None):
        self.seconds = seconds
        self.start = time.perf_counter() if start is None else start
        self.exhausted = False
        self.trial_seconds = []

    def elapsed(self):
        """Seconds spent since `start`."""
        return time.perf_counter() - self.start

    def record_trial(self, seconds):
        """Notes the duration of a finished trial."""
        self.trial_seconds.append(float(seconds))

    def allows_another_trial(self):
        """Whether a new trial is expected to finish within the budget."""
        if self.seconds is None or not self.trial_seconds:
            return True
        expected = sum(self.trial_seconds) / len(self.trial_seconds)
        if self.elapsed() + expected <= self.seconds:
            return True
        self.exhausted = True
        return False


class _BudgetedOracleMixin:
    """Answers `STOPPED` to a trial request once `self.budget` is spent.

    Only `populate_space` (the proposal of a new trial) is affected: a
    trial interrupted in an earlier session is retried by keras-tuner
    before any new proposal, whatever the budget.
    """

    budget = None

    def populate_space(self, trial_id):
        if self.budget is not None and not self.budget.allows_another_trial():
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)


class BudgetedBayesianOracle(
    _BudgetedOracleMixin, keras_tuner.oracles.BayesianOptimizationOracle
):
    """`keras_tuner.oracles.BayesianOptimizationOracle` with a `budget`."""


class BudgetedRandomSearchOracle(
    _BudgetedOracleMixin, keras_tuner.oracles.RandomSearchOracle
):
    """`keras_tuner.oracles.RandomSearchOracle` with a `budget`."""


#: The oracles `tfkd.tuning.search(tuner=...)` accepts, by name.
ORACLES = {
    "random": BudgetedRandomSearchOracle,
    "bayesian": BudgetedBayesianOracle,
}


def check_bayesian_available():
    """Raises a clear `ImportError` if scipy, which the Bayesian oracle
    needs, is not installed (keras-tuner only checks when the oracle is
    made, with advice about its own extras)."""
    try:
        import scipy  # noqa: F401
    except ImportError:
        raise ImportError(
            "tuner='bayesian' needs scipy, which tfkd does not install: "
            "`pip install scipy`, or use tuner='random'."
        ) from None
