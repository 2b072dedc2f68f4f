"""What the benchmark measures of a trained model: size, latency, speed.

Timings use `time.perf_counter` around a `tf.function` of the model's
inference, after a warm-up, so Python and tracing overheads stay out of the
numbers; batch-1 latency is reported as percentiles because single calls
on a shared CPU are noisy.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf


class EpochTimer(keras.callbacks.Callback):
    """Records the wall and CPU time of every epoch (training steps only).

    CPU time is `time.process_time` of this process, all threads: other
    processes on a shared machine disturb it far less than wall time.

    Attributes:
        seconds: List of epoch durations in seconds, in order.
        cpu_seconds: The CPU seconds of the same epochs.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        # Validation runs after the last batch; stop the clock there so the
        # epoch time is the training time alone.
        self._last_batch_end = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(self._last_batch_end[0] - self._start[0])
        self.cpu_seconds.append(self._last_batch_end[1] - self._start[1])


def summarize_seconds(seconds, skip_first=True):
    """Median/min/max of epoch times; the first (tracing) epoch is dropped.

    Args:
        seconds: Epoch durations.
        skip_first: Drop the first epoch when there are at least two, since
            it includes tracing and graph optimization. Defaults to `True`.

    Returns:
        A dict with `median`, `min`, `max` and `epochs` (count used).
    """
    values = list(seconds)
    if skip_first and len(values) >= 2:
        values = values[1:]
    if not values:
        return {"median": None, "min": None, "max": None, "epochs": 0}
    return {
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "epochs": len(values),
    }


def size_on_disk(model, path):
    """Saves `model` for deployment to `path` (`.keras`); returns its bytes.

    A compiled model's `.keras` file also holds its optimizer state (Adam:
    two slots per weight), which would make a model trained with
    `model.fit` look three times larger than the same model trained inside
    a distiller. The file measured is that of an uncompiled copy with the
    same architecture and weights.
    """
    try:
        # Not keras.models.clone_model: its copy keeps the optimizer.
        copy = type(model).from_config(model.get_config())
        copy.set_weights(model.get_weights())
    except Exception:  # a layer that cannot be cloned: keep the optimizer
        copy = model
    copy.save(path)
    return os.path.getsize(path)


def _inference_function(model):
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def latency_ms(model, example, repeats=200, warmup=10):
    """Batch-1 inference latency percentiles in milliseconds.

    Args:
        model: A Keras model.
        example: One input, shape `(1, ...)`.
        repeats: Timed calls. Defaults to `200`.
        warmup: Untimed calls first. Defaults to `10`.

    Returns:
        A dict with `p50` and `p95`.
    """
    infer = _inference_function(model)
    example = tf.convert_to_tensor(example)
    for _ in range(warmup):
        infer(example).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(example).numpy()
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
    }


def throughput(model, batch, repeats=5):
    """Examples per second at the size of `batch` (median of `repeats`)."""
    infer = _inference_function(model)
    batch = tf.convert_to_tensor(batch)
    infer(batch).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        infer(batch).numpy()
        rates.append(batch.shape[0] / (time.perf_counter() - start))
    return float(np.median(rates))


def accuracy_and_predictions(model, images, labels, batch_size=256):
    """Test accuracy and predicted classes of a logits/probabilities model."""
    outputs = model.predict(images, batch_size=batch_size, verbose=0)
    predicted = np.asarray(outputs).argmax(axis=-1)
    return float(np.mean(predicted == labels)), predicted


def confusion_matrix(labels, predicted, num_classes):
    """Counts with rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def interleaved_speed(models, images, repeats=5, latency_calls=40, batch=256):
    """Batch-1 latency and batch throughput of several models, in turn.

    Each repeat times every model once, in an order that rotates with the
    repeat, so all models see the same machine conditions: a slow minute
    of the shared CPU slows every model, not the one measured then.

    Args:
        models: Dict id -> `keras.Model`.
        images: Test images; the first one is the batch-1 input, the first
            `batch` the throughput batch.
        repeats: Interleaved repeats. Defaults to `5`.
        latency_calls: Timed batch-1 calls per model and repeat. Defaults
            to `40`.
        batch: Examples of the throughput batch. Defaults to `256`.

    Returns:
        Dict id -> `{"latency_ms": {"p50", "p95"}, "throughput_per_s",
        "throughput_spread": {"median", "min", "max", "repeats"}}`.
    """
    from benchmarks import stats

    one = tf.convert_to_tensor(images[:1])
    many = tf.convert_to_tensor(images[:batch])
    functions = {key: _inference_function(model) for key, model in models.items()}
    for infer in functions.values():  # traces, warms up
        for _ in range(3):
            infer(one).numpy()
        infer(many).numpy()
    latencies = {key: [] for key in functions}
    rates = {key: [] for key in functions}
    order = list(functions)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for key in order[shift:] + order[:shift]:
            infer = functions[key]
            for _ in range(latency_calls):
                start = time.perf_counter()
                infer(one).numpy()
                latencies[key].append((time.perf_counter() - start) * 1000.0)
            start = time.perf_counter()
            infer(many).numpy()
            rates[key].append(len(many) / (time.perf_counter() - start))
    return {key: {
        "latency_ms": {"p50": float(np.percentile(latencies[key], 50)),
                       "p95": float(np.percentile(latencies[key], 95))},
        "throughput_per_s": float(np.median(rates[key])),
        "throughput_spread": stats.spread(rates[key]),
    } for key in functions}


def interleaved_calls(timers, repeats=5):
    """Runs timing functions in turn, `repeats` times, rotating the order.

    The scheme of `interleaved_speed` for anything that times itself (a
    LiteRT interpreter, `tfkd.export.TFLiteModel.time_calls`): each repeat
    calls every timer once, starting one further along the list each time,
    so a slow minute of a shared CPU slows every model alike.

    Args:
        timers: Dict id -> function of no argument returning a list of
            call times (ms).
        repeats: Interleaved repeats. Defaults to `5`.

    Returns:
        Dict id -> every time measured (ms), in order.
    """
    times = {key: [] for key in timers}
    order = list(timers)
    for repeat in range(repeats):
        shift = repeat % max(len(order), 1)
        for key in order[shift:] + order[:shift]:
            times[key].extend(timers[key]())
    return times
