"""Summaries of accuracies over seeds and of repeated timings.

Pure Python and NumPy (no scipy, no TensorFlow), so reports can be rebuilt
anywhere. Accuracy over seeds is the mean with the sample standard
deviation (ddof=1). An arm is compared with the student trained from
scratch seed by seed: both started from the same initial weights and saw
the same batches, so the per-seed differences are paired, and their mean
gets a Student-t confidence interval.
"""

import math
import statistics

import numpy as np

#: Two-sided 95 % quantiles t(0.975, df) for df = 1..30.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile_975(df):
    """t(0.975, df): the table up to 30, a Cornish-Fisher expansion beyond.

    Example:

    >>> t_quantile_975(2)
    4.303
    >>> round(t_quantile_975(120), 3)
    1.98
    """
    if df < 1:
        raise ValueError(f"Invalid value for argument `df`. Expected an int >= 1. Received: df={df}")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_std(values):
    """`{"mean", "std", "per_seed"}`; std is the sample std (0 for one value)."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "per_seed": values}


def paired_difference(values, baseline):
    """Mean of `values[i] - baseline[i]` with its 95 % t-interval.

    Args:
        values: Per-seed accuracies of an arm.
        baseline: Per-seed accuracies of the baseline, same seeds in the
            same order.

    Returns:
        `{"mean", "low", "high", "seeds"}`; `low`/`high` are `None` for
        fewer than two seeds.

    Example:

    >>> d = paired_difference([.82, .83, .84], [.80, .80, .82])
    >>> [round(d[key], 3) for key in ("mean", "low", "high")]
    [0.023, 0.009, 0.038]
    """
    differences = [float(a) - float(b) for a, b in zip(values, baseline)]
    if not differences or len(values) != len(baseline):
        return None
    mean = float(np.mean(differences))
    if len(differences) < 2:
        return {"mean": mean, "low": None, "high": None, "seeds": 1}
    half = t_quantile_975(len(differences) - 1) * statistics.stdev(
        differences) / math.sqrt(len(differences))
    return {"mean": mean, "low": mean - half, "high": mean + half,
            "seeds": len(differences)}


def spread(values):
    """`{"median", "min", "max", "repeats"}` of repeated measurements."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "repeats": 0}
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "repeats": len(values)}


def format_interval(difference):
    """`"+1.23 pp [+0.40, +2.06]"`, `"+1.23 pp (1 seed)"` or `"—"`."""
    if difference is None:
        return "—"
    mean = f"{100 * difference['mean']:+.2f} pp"
    if difference["low"] is None:
        return f"{mean} (1 seed)"
    return f"{mean} [{100 * difference['low']:+.2f}, {100 * difference['high']:+.2f}]"


def format_accuracy(summary):
    """`"91.23 %"`, or `"91.23 ± 0.40 %"` (sample std) over several seeds."""
    if summary is None:
        return "—"
    if len(summary["per_seed"]) < 2:
        return f"{100 * summary['mean']:.2f} %"
    return f"{100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} %"
