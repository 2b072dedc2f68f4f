"""The software and hardware a benchmark ran on, for its results."""

import importlib.metadata
import os
import platform


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe():
    """Versions, device and CPU of this machine as a JSON-ready dict."""
    import keras

    try:  # `python -m benchmarks backends` may run without TensorFlow
        import tensorflow as tf
    except ImportError:
        tf = None
    gpus = tf.config.list_physical_devices("GPU") if tf else []
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}"
    else:
        device = "CPU"
    return {
        "tensorflow": tf.__version__ if tf else None,
        "keras": keras.__version__,
        "autokeras": _version("autokeras"),
        "tensorflow_datasets": _version("tensorflow-datasets"),
        "python": platform.python_version(),
        "device": device,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
