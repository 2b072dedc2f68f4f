"""Trains a Distiller on a GPU through JAX or PyTorch, with no TensorFlow.

Issue #23, item 6. The GPU machines these projects borrow carry JAX and
PyTorch but no TensorFlow, and nothing can be downloaded there. This script
installs Keras and tfkd from wheels carried in the ignored folder
`gpu_wheels/`, trains the reference CNN student of `benchmarks.models` on
Fashion-MNIST arrays carried in the same folder, and prints JSON:

- images/s of the student trained alone (`student.fit`), of online KD
  (`tfkd.Distiller`, the teacher runs every step), of cached KD from
  logits in memory (`tfkd.attach_teacher_logits`, the teacher never runs)
  and of cached KD streamed from a `tfkd.TeacherCache` on disk (a
  `keras.utils.PyDataset` off TensorFlow);
- the epoch-time ratios of each KD arm to the student alone;
- the device JAX or PyTorch saw, the backend, the versions, where Keras
  and tfkd were imported from, and the git commit (and whether the tree
  was clean);
- the test accuracy of every student after training, and whether the KD
  losses (total, hard `student_loss` and soft `distillation_loss`) fell.

The arms start from one set of initial weights and train interleaved,
one epoch each in a rotating order; an epoch is `--steps-per-epoch`
batches over the same examples. The first epoch (compilation) is untimed;
each figure is the median of the other `--repeats` epochs, with min and max.
An epoch's clock stops after reading its loss, so JAX's asynchronous
dispatch and CUDA's queue are inside it.

Filling `gpu_wheels/` (on a machine with internet; `make gpu-wheels` does
all of it):

    pip download keras==3.15.1 namex --no-deps -d gpu_wheels
    pip download optree --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 \\
        --platform manylinux_2_17_x86_64 -d gpu_wheels
    pip wheel . --no-deps -w gpu_wheels                      # tfkd itself
    python scripts/gpu_check.py --prepare-data               # the .npz

Keras 3.15.1 needs absl-py, numpy, rich, namex, h5py, optree, ml-dtypes and
packaging (`pip download keras==3.15.1 -d DIR` lists them). Four are binary
(numpy, h5py, ml-dtypes, optree): their wheels must match the GPU
machine's Python (`--python-version`). A JAX or PyTorch machine usually has
numpy, h5py, ml-dtypes, absl-py, rich and packaging already (the lent
H200s do); it lacks namex and optree. A dependency wheel in the folder is
installed only where its distribution is missing; Keras and tfkd always
are, into `$TMPDIR/tfkd-gpu-check-site` (nothing else on the machine
changes).

Run, on the GPU machine, from the repository's root:

    make gpu-check                             # JAX; GPU_BACKEND=torch for PyTorch
    python3 scripts/gpu_check.py --backend jax --out results.json

About a minute on a GPU (most of it compiling). Without a GPU it stops,
unless `--allow-cpu`; the proof run on 2 shared CPU cores took about 3
minutes:

    JAX_PLATFORMS=cpu KERAS_BACKEND=jax python scripts/gpu_check.py \\
        --allow-cpu --preset cpu

Exit status 0 when every KD loss fell and every student beat
`--min-accuracy`, 1 otherwise.
"""

import argparse
import importlib
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The ignored folder of wheels and data carried to the GPU machine.
WHEELS = ROOT / "gpu_wheels"
#: The Fashion-MNIST arrays, uint8, prepared by `--prepare-data`.
DATA = WHEELS / "fashion_mnist.npz"
#: Where the wheels install: outside the folder, which then stays small
#: enough to carry (the wheels and the .npz, about 34 MB).
SITE = pathlib.Path(tempfile.gettempdir()) / "tfkd-gpu-check-site"
#: Distributions installed from the folder even when already installed.
ALWAYS_INSTALLED = ("keras", "tfkd")
BACKENDS = ("jax", "torch")
ARMS = ("student", "online", "cached", "teacher_cache")

#: Sizes. `gpu`: a few hundred steps per arm; `cpu`: the proof run on 2
#: cores; `tiny`: the test (seconds, its numbers mean nothing).
PRESETS = {
    "gpu": dict(batch_size=256, steps_per_epoch=100, repeats=5,
                teacher_examples=None, teacher_epochs=3, test_examples=None),
    "cpu": dict(batch_size=128, steps_per_epoch=25, repeats=3,
                teacher_examples=10_000, teacher_epochs=2, test_examples=2_000),
    "tiny": dict(batch_size=16, steps_per_epoch=3, repeats=2,
                 teacher_examples=64, teacher_epochs=1, test_examples=64),
}
TEMPERATURE = 4.0
ALPHA = 0.1
LEARNING_RATE = 2e-3


# ------------------------------------------------------------ installation


def _wheel_fits(path):
    """Whether the wheel file `path` installs on this interpreter."""
    from packaging import tags
    from packaging.utils import parse_wheel_filename

    _, _, _, wheel_tags = parse_wheel_filename(path.name)
    return not wheel_tags.isdisjoint(tags.sys_tags())


def _distribution(path):
    from packaging.utils import parse_wheel_filename

    return str(parse_wheel_filename(path.name)[0])


def install_wheels(wheels=WHEELS, site=SITE, log=print):
    """Installs Keras, tfkd and the missing dependencies from `wheels`.

    Into `site`, with `pip --no-index --no-deps`, which then goes first on
    `sys.path`; again only when the wheels' contents changed. Keras and tfkd are always installed from their
    wheels; any other wheel only when its distribution is missing here
    and the wheel fits this interpreter.

    Args:
        wheels: The folder of wheels. Defaults to `gpu_wheels/`.
        site: Where they install. Defaults to `SITE` (in the system's
            temporary directory).
        log: Where progress lines go. Defaults to `print`.

    Returns:
        Dict distribution -> the wheel installed, or why it was not.

    Raises:
        FileNotFoundError: when the folder lacks the Keras or tfkd wheel.
    """
    wheels = pathlib.Path(wheels)
    found = sorted(wheels.glob("*.whl"))
    names = {_distribution(path): path for path in found}
    missing = [name for name in ALWAYS_INSTALLED if name not in names]
    if missing:
        raise FileNotFoundError(
            f"No wheel of {missing} in {wheels}. Fill it on a machine with "
            "internet: `make gpu-wheels` (see this script's docstring).")
    chosen, report = [], {}
    for name, path in names.items():
        if name not in ALWAYS_INSTALLED and _installed_version(name):
            report[name] = f"already installed ({_installed_version(name)})"
        elif not _wheel_fits(path):
            report[name] = f"{path.name} does not fit this Python"
        else:
            chosen.append(path)
            report[name] = f"{path.name} (sha256 {_sha256(path)[:16]})"
    site = pathlib.Path(site)
    stamp = site / "installed.json"
    # By content: a rebuilt tfkd wheel keeps its file name.
    wanted = sorted([p.name, _sha256(p)] for p in chosen)
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        log(f"installing {', '.join(p.name for p in chosen)} into {site}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "--no-index", "--no-deps", "--upgrade", "--target",
                        str(site), *map(str, chosen)], check=True)
        stamp.write_text(json.dumps(wanted))
    sys.path.insert(0, str(site))
    return report


def _sha256(path):
    import hashlib

    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def _installed_version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_keras_requirements():
    """Raises `ImportError` naming Keras's requirements missing here."""
    requires = importlib.metadata.requires("keras") or []
    names = [r.split(";")[0].split("[")[0].split("<")[0].split(">")[0]
             .split("=")[0].strip() for r in requires if "extra ==" not in r]
    missing = [name for name in names if not _installed_version(name)]
    if missing:
        raise ImportError(
            f"Keras needs {missing}, missing on this machine. Add their wheels "
            "to gpu_wheels/ (`pip download NAME --no-deps --only-binary=:all: "
            "--python-version X.Y ...`, see scripts/gpu_check.py).")


# -------------------------------------------------------------------- data


def prepare_data(path=DATA):
    """Writes Fashion-MNIST's four arrays (uint8) to the `.npz` at `path`.

    Read offline by `tfkd.data.load_fashion_mnist_arrays` (the IDX files
    of `make data`); about 30 MB compressed.
    """
    import numpy as np
    import tfkd

    (x_train, y_train), (x_test, y_test) = tfkd.data.load_fashion_mnist_arrays(
        download=False)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez_compressed(temporary, x_train=x_train, y_train=y_train,
                        x_test=x_test, y_test=y_test)
    os.replace(temporary, path)
    return path


def load_data(path=DATA, teacher_examples=None, test_examples=None):
    """The `.npz` as float32 images in [0, 1], `(n, 28, 28, 1)`, int32 labels."""
    import numpy as np

    with np.load(path) as arrays:
        loaded = {key: arrays[key] for key in arrays.files}

    def images(x, count):
        return (x[:count].astype("float32") / 255.0)[..., None]

    return {"x_train": images(loaded["x_train"], teacher_examples),
            "y_train": loaded["y_train"][:teacher_examples].astype("int32"),
            "x_test": images(loaded["x_test"], test_examples),
            "y_test": loaded["y_test"][:test_examples].astype("int32")}


# ----------------------------------------------------------------- devices


def device_description(backend):
    """What the backend computes on: `{"accelerator", "devices"}`."""
    if backend == "jax":
        import jax

        devices = jax.devices()
        return {"accelerator": "gpu" if devices[0].platform == "gpu" else
                devices[0].platform, "devices": [str(d) for d in devices],
                "device_kinds": sorted({d.device_kind for d in devices})}
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return {"accelerator": "gpu", "devices": [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                "cuda": torch.version.cuda}
        return {"accelerator": "cpu", "devices": ["cpu"]}
    return {"accelerator": "cpu", "devices": ["?"]}


def versions(backend):
    """The versions of Python, Keras, tfkd and the backend."""
    import platform

    import keras
    import tfkd

    module = importlib.import_module(backend)
    return {"python": platform.python_version(), "keras": keras.__version__,
            "tfkd": tfkd.__version__, backend: module.__version__,
            "keras_from": keras.__file__, "tfkd_from": tfkd.__file__}


# ------------------------------------------------------------ measurement


def _trainers(teacher, make_student, data, cache, batch_size, seed):
    """Arm -> `(model to fit, fit keyword arguments)`."""
    import keras
    import tfkd

    def adam():
        return keras.optimizers.Adam(LEARNING_RATE)

    student = make_student()
    student.compile(adam(), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    online = tfkd.Distiller(teacher=teacher, student=make_student(),
                            temperature=TEMPERATURE, alpha=ALPHA)
    cached = tfkd.Distiller(teacher=None, student=make_student(),
                            temperature=TEMPERATURE, alpha=ALPHA)
    streamed = tfkd.Distiller(teacher=None, student=make_student(),
                              temperature=TEMPERATURE, alpha=ALPHA)
    for distiller in (online, cached, streamed):
        distiller.compile(adam(), metrics=["accuracy"])
    x, y = data["x_epoch"], data["y_epoch"]
    arrays = dict(batch_size=batch_size, shuffle=True)
    return {
        "student": (student, dict(x=x, y=y, **arrays)),
        "online": (online, dict(x=x, y=y, **arrays)),
        "cached": (cached, dict(x=x, y=tfkd.attach_teacher_logits(
            y, data["teacher_logits"]), **arrays)),
        "teacher_cache": (streamed, dict(x=cache.dataset(batch_size, seed=seed))),
    }


def measure(data, *, backend, batch_size, steps_per_epoch, repeats,
            teacher_epochs, workdir, seed=0, log=print, **_):
    """Trains the teacher, then the four arms interleaved; returns the figures.

    Args:
        data: The dict of `load_data`.
        backend: The Keras backend in use (recorded).
        batch_size: Examples per step.
        steps_per_epoch: Steps of one arm's epoch (its examples are the
            first `batch_size * steps_per_epoch` training images).
        repeats: Timed epochs per arm, after one untimed epoch.
        teacher_epochs: Epochs of the teacher over all of `data`'s
            training images.
        workdir: Directory of the teacher cache.
        seed: Seed of the initial weights. Defaults to `0`.
        log: Where progress lines go. Defaults to `print`.

    Returns:
        A dict: `images_per_second`, `epoch_seconds`, `ratios`,
        `test_accuracy`, `losses`, `checks` (filled by `check`), `setup`.
    """
    import keras
    import numpy as np
    import tfkd
    from benchmarks import clock
    from benchmarks import models
    from benchmarks import stats

    examples = batch_size * steps_per_epoch
    if examples > len(data["y_train"]):
        raise ValueError(
            f"Invalid value for argument `steps_per_epoch`. Expected at most "
            f"{len(data['y_train']) // batch_size} at batch {batch_size}. "
            f"Received: steps_per_epoch={steps_per_epoch}")
    shape, classes = data["x_train"].shape[1:], 10
    keras.utils.set_random_seed(seed)
    teacher = models.teacher_cnn(shape, classes, width=16, dense_units=512)
    teacher.compile(keras.optimizers.Adam(LEARNING_RATE),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    start = time.perf_counter()
    teacher.fit(data["x_train"], data["y_train"], batch_size=batch_size,
                epochs=teacher_epochs, verbose=0)
    teacher_seconds = time.perf_counter() - start
    teacher_accuracy = accuracy(teacher, data)
    log(f"teacher: {teacher_epochs} epochs in {teacher_seconds:.1f} s, "
        f"test accuracy {teacher_accuracy:.4f}")
    data = dict(data, x_epoch=data["x_train"][:examples],
                y_epoch=data["y_train"][:examples])
    data["teacher_logits"] = np.asarray(teacher.predict(
        data["x_epoch"], batch_size=1024, verbose=0), "float32")
    batches = [(data["x_epoch"][i:i + batch_size], data["y_epoch"][i:i + batch_size])
               for i in range(0, examples, batch_size)]
    cache = tfkd.TeacherCache.build(teacher, batches, pathlib.Path(workdir) / "cache",
                                    overwrite=True, verbose=0)
    keras.utils.set_random_seed(seed)
    initial = models.student_cnn(shape, classes).get_weights()

    def make_student():
        student = models.student_cnn(shape, classes)
        student.set_weights(initial)
        return student

    trainers = _trainers(teacher, make_student, data, cache, batch_size, seed)
    clocks = {arm: clock.EpochClock() for arm in ARMS}
    history = {arm: {} for arm in ARMS}
    for epoch in range(repeats + 1):
        shift = epoch % len(ARMS)
        for arm in ARMS[shift:] + ARMS[:shift]:
            model, arguments = trainers[arm]
            fitted = model.fit(**arguments, initial_epoch=epoch, epochs=epoch + 1,
                               callbacks=[clocks[arm]], verbose=0)
            for name, values in fitted.history.items():
                history[arm].setdefault(name, []).extend(float(v) for v in values)
        log(f"epoch {epoch + 1}/{repeats + 1}: " + ", ".join(
            f"{arm} {clocks[arm].seconds[-1]:.2f} s" for arm in ARMS))
    seconds = {arm: clocks[arm].seconds[1:] for arm in ARMS}
    return {
        "setup": {"batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
                  "examples_per_epoch": examples, "timed_epochs": repeats,
                  "teacher_epochs": teacher_epochs,
                  "teacher_examples": len(data["y_train"]),
                  "test_examples": len(data["y_test"]), "temperature": TEMPERATURE,
                  "alpha": ALPHA, "learning_rate": LEARNING_RATE, "seed": seed,
                  "teacher": "benchmarks.models.teacher_cnn(width=16, dense_units=512)",
                  "student": "benchmarks.models.student_cnn(width=8)",
                  "teacher_parameters": int(teacher.count_params()),
                  "student_parameters": int(make_student().count_params())},
        "images_per_second": {arm: stats.spread([examples / s for s in seconds[arm]])
                              for arm in ARMS},
        "epoch_seconds": {arm: stats.spread(seconds[arm]) for arm in ARMS},
        "epoch_seconds_first": {arm: clocks[arm].seconds[0] for arm in ARMS},
        # Epoch time of the arm / that of the student alone, paired epoch by
        # epoch (the same round of the interleaving).
        "ratios": {f"{arm}_over_student": stats.spread(
            [a / b for a, b in zip(seconds[arm], seconds["student"])])
            for arm in ARMS[1:]},
        "teacher": {"test_accuracy": teacher_accuracy,
                    "train_seconds": teacher_seconds},
        "test_accuracy": {arm: accuracy(getattr(trainers[arm][0], "student",
                                                trainers[arm][0]), data)
                          for arm in ARMS},
        "losses": {arm: {name: {"first_epoch": values[0], "last_epoch": values[-1]}
                         for name, values in history[arm].items()
                         if name.endswith("loss")} for arm in ARMS},
    }


def accuracy(model, data):
    """Test accuracy of a logits model on `data["x_test"]`."""
    import numpy as np

    logits = model.predict(data["x_test"], batch_size=1024, verbose=0)
    return float(np.mean(np.asarray(logits).argmax(-1) == data["y_test"]))


def check(figures, min_accuracy):
    """Whether every KD loss fell and every student beat `min_accuracy`.

    Returns:
        `{"kd_losses_fell": bool, "accuracy_above": float, "students_above":
        bool, "passed": bool}`.
    """
    fell = all(value["last_epoch"] < value["first_epoch"]
               for arm in ARMS[1:] for value in figures["losses"][arm].values())
    above = all(a > min_accuracy for a in figures["test_accuracy"].values())
    return {"kd_losses_fell": fell, "accuracy_above": min_accuracy,
            "students_above": above, "passed": fell and above}


# ------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python scripts/gpu_check.py",
        description=__doc__.strip().splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS,
                        default=os.environ.get("KERAS_BACKEND", "jax")
                        if os.environ.get("KERAS_BACKEND") in BACKENDS else "jax",
                        help="Keras backend (default $KERAS_BACKEND, else jax)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu",
                        help="sizes (default gpu; cpu: 2 CPU cores; tiny: seconds)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="steps per timed epoch (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed epochs per arm (default: the preset's)")
    parser.add_argument("--wheels", default=str(WHEELS),
                        help="folder of wheels (default gpu_wheels/)")
    parser.add_argument("--data", default=None,
                        help="the .npz (default <wheels>/fashion_mnist.npz)")
    parser.add_argument("--no-install", action="store_true",
                        help="use this interpreter's Keras and tfkd, not the wheels")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run without a GPU (to prove the script)")
    parser.add_argument("--min-accuracy", type=float, default=0.5,
                        help="every student's test accuracy must beat it (default 0.5)")
    parser.add_argument("--out", default=None,
                        help="also write the JSON here (default: "
                             "$TFKD_BENCHMARK_OUTPUT or benchmarks/runs, then "
                             "/gpu_check/<backend>-<accelerator>.json)")
    parser.add_argument("--prepare-data", action="store_true",
                        help="only write the .npz from the IDX files and exit")
    return parser.parse_args(argv)


def run(args, log=print):
    """Installs, measures and checks as `args` says; returns the JSON dict."""
    os.environ["KERAS_BACKEND"] = args.backend
    installed = None if args.no_install else install_wheels(args.wheels, log=log)
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # `benchmarks.models`; after the wheels' site
    check_keras_requirements()
    import keras

    if keras.backend.backend() != args.backend:
        raise RuntimeError(f"Keras was imported with backend "
                           f"{keras.backend.backend()!r} before {args.backend!r} was set.")
    device = device_description(args.backend)
    if device["accelerator"] != "gpu" and not args.allow_cpu:
        raise RuntimeError(
            f"{args.backend} sees no GPU ({device['devices']}). Pass --allow-cpu "
            "to run on the CPU anyway.")
    from benchmarks import results as results_lib

    git = results_lib.git_provenance(ROOT)  # before anything is written
    sizes = dict(PRESETS[args.preset])
    for key in ("steps_per_epoch", "repeats"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    data = load_data(args.data or pathlib.Path(args.wheels) / "fashion_mnist.npz",
                     sizes["teacher_examples"], sizes["test_examples"])
    with tempfile.TemporaryDirectory() as workdir:
        figures = measure(data, backend=args.backend, workdir=workdir, log=log,
                          **sizes)
    checks = check(figures, args.min_accuracy)
    return {
        "experiment": "gpu_check",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ran_on": ("GPU" if device["accelerator"] == "gpu" else
                   f"{device['accelerator'].upper()}, not a GPU (--allow-cpu)"),
        "backend": args.backend, "device": device, "preset": args.preset,
        "git": git, "versions": versions(args.backend), "wheels": installed,
        "cpu_count": os.cpu_count(), **figures, "checks": checks,
    }


def output_path(result):
    """Where `main` writes a result without `--out`."""
    from benchmarks import results as results_lib

    return (results_lib.output_root() / "gpu_check"
            / f"{result['backend']}-{result['device']['accelerator']}.json")


def main(argv=None):
    """Parses the command line, runs; returns the exit status."""
    args = parse_args(argv)
    if args.prepare_data:
        print(f"wrote {prepare_data(args.data or pathlib.Path(args.wheels) / 'fashion_mnist.npz')}")
        return 0
    result = run(args, log=lambda line: print(line, file=sys.stderr))
    text = json.dumps(result, indent=1, allow_nan=False)
    print(text)
    path = pathlib.Path(args.out) if args.out else output_path(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0 if result["checks"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
