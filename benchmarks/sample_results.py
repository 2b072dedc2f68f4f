"""Made-up results that follow `benchmarks.schema`, for docs and tests.

`example_results()` is a complete, valid results dict for trying the
report and plots without running the benchmark. Its own module, because
it needs both the schema and `benchmarks.report.derive`, which itself
validates against the schema.
"""

import numpy as np

from benchmarks import report
from benchmarks.schema import SCHEMA_VERSION


def example_results():
    """A complete, valid results dict with made-up numbers.

    For documentation examples and for trying the report and plots without
    running the benchmark. The numbers are plausible for Fashion-MNIST on a
    CPU but were not measured.

    Returns:
        A new results dict (safe to modify) with every arm: six finished
        arms with histories and confusion matrices, and a failed AutoKeras
        arm.

    Example:

    >>> from benchmarks import sample_results
    >>> sorted(sample_results.example_results()["arms"])[:3]
    ['autokeras', 'keras_distillation', 'keras_distillation_kl']
    """
    class_names = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    arms = {
        "teacher": _example_arm(
            "Teacher (CNN)", "teacher", (0.9123,), 1_234_890, 3.42, 0.85, 0.75
        ),
        "scratch": _example_arm(
            "Student from scratch", "student", (0.8512, 0.8544, 0.8490),
            52_314, 0.61, 0.30, 0.55,
        ),
        "tfkd": _example_arm(
            "Distilled student (tfkd, online)", "student",
            (0.8731, 0.8702, 0.8755), 52_314, 0.60, 1.60, 0.62,
        ),
        "tfkd_cached": _example_arm(
            "Distilled student (tfkd, cached teacher)", "student",
            (0.8718, 0.8724, 0.8690), 52_314, 0.62, 0.35, 0.60,
        ),
        "keras_distillation": _example_arm(
            "keras.distillation (default loss)", "student",
            (0.8420, 0.8391, 0.8455), 52_314, 0.59, 2.30, 0.52,
        ),
        "keras_distillation_kl": _example_arm(
            "keras.distillation (KLDivergence)", "student",
            (0.8702, 0.8688, 0.8730), 52_314, 0.63, 2.10, 0.60,
        ),
        "autokeras": {
            "label": "AutoKeras ImageClassifier",
            "role": "automl",
            "status": "failed",
            "error": "TimeoutError: search exceeded its 240 s budget",
        },
    }
    # The cache build is not part of the cached arm's epochs, so its
    # epochs are about as fast as training from scratch.
    return {
        "schema_version": SCHEMA_VERSION,
        "created": "2026-11-23T15:00:00+00:00",
        "dataset": "fashion_mnist",
        "preset": "quick",
        "environment": {
            "tensorflow": "2.21.0",
            "keras": "3.12.4",
            "autokeras": "3.0.0",
            "tensorflow_datasets": "4.9.9",
            "python": "3.11.7",
            "device": "CPU",
            "cpu": "Intel(R) Xeon(R) CPU @ 2.20GHz",
            "cpu_count": 2,
            "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
        },
        "config": {
            "train_examples": 6000,
            "batch_size": 128,
            "teacher_epochs": 4,
            "student_epochs": 8,
            "seeds": [0, 1, 2],
            "temperature": 4.0,
            "alpha": 0.1,
        },
        "class_names": class_names,
        "arms": arms,
        "derived": _example_derived(arms),
    }


def _example_arm(label, role, per_seed, parameters, p50, epoch_extra, final):
    """One finished arm; `final` shapes its learning curve."""
    mean = float(np.mean(per_seed))
    epochs = 8
    progress = 1.0 - np.exp(-np.arange(1, epochs + 1) / 2.5)
    val_accuracy = (mean - 0.12) + 0.12 * progress
    history = {
        "loss": [round(float(v), 4) for v in 1.6 - final * 1.8 * progress],
        "accuracy": [round(float(v), 4) for v in val_accuracy + 0.01 * progress],
        "val_loss": [round(float(v), 4) for v in 1.5 - final * 1.6 * progress],
        "val_accuracy": [round(float(v), 4) for v in val_accuracy],
    }
    return {
        "label": label,
        "role": role,
        "status": "done",
        "error": None,
        "accuracy": {
            "mean": round(mean, 4),
            "std": round(float(np.std(per_seed)), 4),
            "per_seed": list(per_seed),
        },
        "parameters": parameters,
        "size_bytes": parameters * 4 + 24_576,
        "latency_ms": {"p50": p50, "p95": round(p50 * 1.45, 3)},
        "throughput_per_s": round(2_600.0 / p50 * 10, 1),
        "train_seconds": round(epochs * (1.0 + epoch_extra) * 6.0, 1),
        "epoch_seconds": {
            "median": round((1.0 + epoch_extra) * 6.0, 2),
            "min": round((1.0 + epoch_extra) * 5.7, 2),
            "max": round((1.0 + epoch_extra) * 6.9, 2),
        },
        "history": history,
        "confusion_matrix": _example_confusion(mean),
    }


def _example_confusion(accuracy):
    """1000 test images per class; errors go mostly to look-alike classes."""
    # Shirt, pullover, coat and T-shirt are the classes Fashion-MNIST
    # models confuse; give them most of the errors.
    difficulty = np.array([1.3, 0.2, 1.6, 0.9, 1.5, 0.3, 2.8, 0.5, 0.3, 0.6])
    error_rate = (1.0 - accuracy) * difficulty / difficulty.mean()
    look_alike = {0: 6, 1: 3, 2: 4, 3: 0, 4: 2, 5: 7, 6: 0, 7: 9, 8: 2, 9: 7}
    matrix = np.zeros((10, 10), dtype=int)
    for true_class in range(10):
        wrong = int(round(1000 * error_rate[true_class]))
        matrix[true_class, true_class] = 1000 - wrong
        matrix[true_class, look_alike[true_class]] += wrong * 2 // 3
        rest = wrong - wrong * 2 // 3
        others = [c for c in range(10) if c not in (true_class, look_alike[true_class])]
        for offset in range(rest):
            matrix[true_class, others[offset % len(others)]] += 1
    return matrix.tolist()


def _example_derived(arms):
    return report.derive({"arms": arms})
