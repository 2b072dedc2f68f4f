"""The AutoKeras arm: an `ImageClassifier` search under a trial and time budget.

AutoKeras 3.0.0 needs Keras < 3.13 (it passes `numpy.int64` units to
`Dense`); tfkd pins Keras 3.12 for that reason. Its first trial is a plain
CNN block; later trials try ResNet/EfficientNet backbones with ImageNet
weights, which need a download — on an offline machine those trials fail
and the search moves on, as keras-tuner does with any failed trial.
"""

import time

import keras


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `seconds` have passed since `start`.

    Shared by every trial of a search, so that the whole search, not each
    trial, respects the budget: trials that start after it run one batch.

    Args:
        seconds: The budget in seconds.
        start: `time.perf_counter()` value the budget counts from.
            Defaults to now.
    """

    def __init__(self, seconds, start=None):
        super().__init__()
        self.seconds = seconds
        self.start = time.perf_counter() if start is None else start
        self.exhausted = False

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start > self.seconds:
            self.exhausted = True
            self.model.stop_training = True


def search(x_train, y_train, x_val, y_val, *, trials, epochs, seconds,
           batch_size, directory, seed=0, verbose=0):
    """Runs the AutoKeras search and returns the exported best model.

    Args:
        x_train: float32 images in [0, 1], `(n, h, w, c)`.
        y_train: int class ids.
        x_val: Validation images.
        y_val: Validation labels.
        trials: `max_trials` of the search.
        epochs: Epochs of each trial.
        seconds: Time budget of the whole search.
        batch_size: Batch size.
        directory: Where AutoKeras keeps its trials.
        seed: Search seed. Defaults to `0`.
        verbose: Keras verbosity. Defaults to `0`.

    Returns:
        `(model, info)`: the exported `keras.Model` (it ends in softmax) and
        a dict with `search_seconds`, `trials` and `budget_exhausted`.
    """
    import autokeras

    classifier = autokeras.ImageClassifier(
        max_trials=trials,
        overwrite=True,
        directory=str(directory),
        project_name="autokeras",
        seed=seed,
    )
    budget = TimeBudget(seconds)
    start = time.perf_counter()
    classifier.fit(
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x_val, y_val),
        callbacks=[budget],
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    model = classifier.export_model()
    trials = len(classifier.tuner.oracle.trials)
    return model, {
        "search_seconds": seconds,
        "trials": trials,
        "budget_exhausted": budget.exhausted,
    }
