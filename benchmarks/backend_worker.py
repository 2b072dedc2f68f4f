"""One Keras backend's share of `python -m benchmarks backends`, in its own process.

Keras fixes its backend when it is imported, so the experiment
(`benchmarks.experiments.backends`) starts this module once per backend
and seed with `KERAS_BACKEND` set:

    KERAS_BACKEND=jax python -m benchmarks.backend_worker SPEC.json

`SPEC.json` says what to do and where every input lies; the worker writes
its record (JSON) where the spec says, `{"status": "failed", "error": ...}`
included, so the experiment can say why a backend did not run. Two jobs:

- `prepare`: train the teacher and draw each seed's initial student
  weights, as `.weights.h5` files (the same bytes for every backend);
- `train`: from those weights, train the student alone and with online
  logit KD (`tfkd.Distiller`), interleaved epoch by epoch, each epoch in
  the order the experiment wrote, and evaluate both.

Nothing here imports TensorFlow unless it is the backend.
"""

import json
import pathlib
import sys
import traceback

import keras
import numpy as np


def _adam(spec):
    return keras.optimizers.Adam(spec["learning_rate"])


def _compile_classifier(model, spec):
    model.compile(_adam(spec), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    return model


def _data(spec):
    with np.load(spec["data"]) as arrays:
        data = {key: arrays[key] for key in arrays.files}

    def images(x):  # uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1]
        return (x.astype("float32") / 255.0)[..., None]

    return {key: images(value) if key.startswith("x_") else value.astype("int32")
            for key, value in data.items()}


def _teacher(spec, shape):
    from benchmarks import models

    return models.teacher_cnn(shape, spec["num_classes"], width=spec["teacher_width"],
                              dense_units=spec["teacher_dense_units"])


def _student(spec, shape):
    from benchmarks import models

    return models.student_cnn(shape, spec["num_classes"], width=spec["student_width"])


def accuracy(model, x, y):
    """Test accuracy of a logits model."""
    logits = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.asarray(logits).argmax(-1) == y))


def prepare(spec):
    """Trains the teacher, draws the initial students; returns the record."""
    data = _data(spec)
    x_test, y_test = data["x_test"], data["y_test"]
    shape = x_test.shape[1:]
    keras.utils.set_random_seed(0)
    teacher = _compile_classifier(_teacher(spec, shape), spec)
    teacher.fit(data["x_teacher"], data["y_teacher"], batch_size=spec["batch_size"],
                epochs=spec["teacher_epochs"], verbose=0)
    teacher.save_weights(spec["teacher"])
    for seed, path in spec["students"].items():
        keras.utils.set_random_seed(int(seed))
        _student(spec, shape).save_weights(path)
    return {"status": "done", "teacher_accuracy": accuracy(teacher, x_test, y_test),
            "teacher_parameters": int(teacher.count_params()),
            "student_parameters": int(_student(spec, shape).count_params())}


def train(spec):
    """Trains scratch and KD students from one start; returns the record."""
    import tfkd
    from benchmarks import clock

    data = _data(spec)
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    shape = x_train.shape[1:]
    orders = np.load(spec["orders"])  # (epochs, examples)
    keras.utils.set_random_seed(spec["seed"])
    teacher = _teacher(spec, shape)
    teacher.load_weights(spec["teacher"])
    students = {arm: _student(spec, shape) for arm in ("scratch", "kd")}
    for student in students.values():
        student.load_weights(spec["student_init"])
    # The Distiller first: a backend it refuses fails before any training.
    distiller = tfkd.Distiller(teacher=teacher, student=students["kd"],
                               temperature=spec["temperature"], alpha=spec["alpha"])
    distiller.compile(_adam(spec), metrics=["accuracy"])
    trainers = {"scratch": _compile_classifier(students["scratch"], spec),
                "kd": distiller}
    clocks = {arm: clock.EpochClock() for arm in trainers}
    losses = {arm: [] for arm in trainers}
    arms = list(trainers)
    for epoch, rows in enumerate(orders):
        x, y = x_train[rows], y_train[rows]
        shift = epoch % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            history = trainers[arm].fit(
                x, y, batch_size=spec["batch_size"], shuffle=False,
                initial_epoch=epoch, epochs=epoch + 1, callbacks=[clocks[arm]],
                verbose=0).history
            losses[arm].extend(float(v) for v in history["loss"])
    return {"status": "done", "epoch_seconds_raw": {a: c.seconds for a, c in clocks.items()},
            "loss": losses,
            "accuracy": {arm: accuracy(s, x_test, y_test) for arm, s in students.items()},
            "versions": versions()}


def versions():
    """The Keras backend, its version and Keras's."""
    import importlib

    backend = keras.backend.backend()
    module = importlib.import_module(backend)
    return {"backend": backend, backend: module.__version__, "keras": keras.__version__}


JOBS = {"prepare": prepare, "train": train}


def main(argv=None):
    """Runs the spec's job; writes its record; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(pathlib.Path(argv[0]).read_text())
    try:
        record = JOBS[spec["job"]](spec)
        status = 0
    except Exception as error:  # the experiment reports it
        traceback.print_exc()
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        record = {"status": "failed", "error": f"{type(error).__name__}: {first_line}"}
        status = 1
    pathlib.Path(spec["out"]).write_text(json.dumps(record, indent=1) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
