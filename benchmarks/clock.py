"""An epoch clock for any Keras backend, free of TensorFlow.

`benchmarks.measure.EpochTimer` is the TensorFlow experiments' timer. On
JAX and PyTorch (and on a GPU) a step returns before the device has
finished it, so a clock read at the last batch would miss queued work:
`EpochClock` stops only after reading the epoch's loss as a Python float,
which waits for the device.
"""

import time

import keras


class EpochClock(keras.callbacks.Callback):
    """Records the wall seconds of every epoch, the device drained.

    Attributes:
        seconds: List of epoch durations in seconds, in order.
    """

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])  # waits for the device (asynchronous dispatch)
        self.seconds.append(time.perf_counter() - self._start)
