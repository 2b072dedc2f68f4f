"""`tfkd.doctor()`: is this environment able to distil, and fast?

Collects versions (TensorFlow, Keras, AutoKeras, keras-tuner, TensorBoard,
tensorflow-datasets, JAX, PyTorch), checks them against each other and
against the combinations known to break, and looks at the accelerators of
the Keras backend in use. On TensorFlow it lists the GPUs and the
CUDA/cuDNN versions the build expects, and runs a tiny mixed-precision
layer and a tiny XLA-compiled function to see whether they work here; on
JAX it lists `jax.devices()`, on PyTorch it asks `torch.cuda.is_available()`.
TensorFlow's advice is given on TensorFlow only: a JAX or PyTorch user is
never told to install or switch to TensorFlow. Every problem comes with a
concrete fix.

Each check runs on its own and turns any exception into a reported
problem, so the doctor never crashes, also without a GPU or with a broken
TensorFlow. This module imports only the standard library at import time;
if even `import tfkd` fails, run it as a script:
`python path/to/tfkd/environment_report.py`.

Command line: `python -m tfkd doctor [--strict]`.
"""

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys

#: The distributions whose versions the report lists, in order.
PACKAGES = (
    "tensorflow",
    "tensorflow-cpu",
    "tensorflow-macos",
    "tensorflow-intel",
    "tf-keras",
    "keras",
    "autokeras",
    "keras-tuner",
    "tensorboard",
    "tensorflow-datasets",
    "jax",
    "jaxlib",
    "torch",
    "numpy",
)

#: The module each Keras backend runs on, imported by the doctor.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

#: Keras releases from which AutoKeras 3.0.0 breaks: `keras.layers.Dense`
#: rejects the `numpy.int64` units its hyper-parameter search produces.
AUTOKERAS_3_0_BREAKING_KERAS = (3, 13)

#: The oldest TensorFlow whose `tf.keras` is Keras 3.
MIN_TENSORFLOW = (2, 16)

_SEVERITIES = ("error", "warning")


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something in the environment that breaks or slows distillation.

    Attributes:
        severity: `"error"` (something will fail) or `"warning"` (it works,
            slowly or with a limitation).
        summary: What is wrong.
        fix: The command or step that fixes it.
    """

    severity: str
    summary: str
    fix: str


@dataclasses.dataclass
class Report:
    """What `doctor` found.

    Attributes:
        facts: Dict of what was looked up (versions, devices, checks), in
            display order, values as strings.
        problems: List of `Problem`s.
    """

    facts: dict = dataclasses.field(default_factory=dict)
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        """True when there is no problem of severity `"error"`."""
        return not any(p.severity == "error" for p in self.problems)

    def add(self, severity, summary, fix):
        """Adds a `Problem`; raises ValueError for an unknown severity."""
        if severity not in _SEVERITIES:
            raise ValueError(
                "Invalid value for argument `severity`. Expected one of "
                f"{_SEVERITIES}. Received: severity={severity!r}"
            )
        self.problems.append(Problem(severity, summary, fix))

    def __str__(self):
        width = max((len(name) for name in self.facts), default=0)
        lines = ["tfkd doctor", ""]
        lines += [
            f"  {name:<{width}}  {value}" for name, value in self.facts.items()
        ]
        lines.append("")
        if not self.problems:
            lines.append("No problems found.")
        for problem in self.problems:
            lines.append(f"[{problem.severity}] {problem.summary}")
            lines.append(f"    fix: {problem.fix}")
        return "\n".join(lines)


# -- versions ------------------------------------------------------------------


def installed_versions(names=PACKAGES):
    """The installed versions of some distributions, from their metadata.

    Args:
        names: Distribution names. Defaults to `PACKAGES`.

    Returns:
        A dict of name -> version string, for those installed only.

    Example:

    >>> "keras" in installed_versions(["keras"])
    True
    """
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def parse_version(text):
    """The leading numeric release of a version string, as a tuple.

    Example:

    >>> parse_version("2.21.0rc1")
    (2, 21, 0)
    """
    match = re.match(r"\d+(\.\d+)*", text or "")
    if not match:
        return ()
    return tuple(int(part) for part in match.group(0).split("."))


def tensorflow_distribution(versions):
    """The distribution providing TensorFlow in `versions`, or None.

    Example:

    >>> tensorflow_distribution({"tensorflow-cpu": "2.21.0"})
    'tensorflow-cpu'
    """
    for name in ("tensorflow", "tensorflow-cpu", "tensorflow-macos"):
        if name in versions:
            return name
    return None


def check_versions(versions, report, platform_name=None, backend="tensorflow"):
    """Adds the problems of a version combination to `report`.

    Pure: works on a dict such as `installed_versions()` returns, so known
    bad combinations can be checked without installing them.

    Args:
        versions: Dict of distribution name -> version string.
        report: The `Report` to add problems to.
        platform_name: `sys.platform` value. Defaults to this machine's.
        backend: The Keras backend in use. TensorFlow must be installed,
            and be 2.16 or newer, only on `"tensorflow"`; on JAX or
            PyTorch it is optional (its `tf.data` features only).
            Defaults to `"tensorflow"`.

    Example:

    >>> report = Report()
    >>> check_versions({"tensorflow": "2.21.0", "keras": "3.13.0",
    ...                 "autokeras": "3.0.0"}, report, "linux")
    >>> report.problems[0].fix
    'pip install "keras<3.13" (or an AutoKeras release newer than 3.0.0)'
    """
    platform_name = platform_name or sys.platform
    tensorflow = tensorflow_distribution(versions)
    keras = parse_version(versions.get("keras"))
    if backend != "tensorflow":
        pass  # TensorFlow is optional there: no advice to install it.
    elif tensorflow is None:
        report.add(
            "error",
            "TensorFlow is not installed.",
            _install_tensorflow_fix(platform_name),
        )
    elif parse_version(versions[tensorflow]) < MIN_TENSORFLOW:
        report.add(
            "error",
            f"{tensorflow} {versions[tensorflow]} is older than 2.16, whose "
            "tf.keras is Keras 2; tfkd needs Keras 3 on TensorFlow.",
            _install_tensorflow_fix(platform_name, upgrade=True),
        )
    if "tensorflow" in versions and "tensorflow-cpu" in versions:
        report.add(
            "error",
            f"Both tensorflow {versions['tensorflow']} and tensorflow-cpu "
            f"{versions['tensorflow-cpu']} are installed; they write the "
            "same files and the result is whichever was installed last, "
            "often a broken mix.",
            "pip uninstall -y tensorflow tensorflow-cpu, then install one: "
            + _install_tensorflow_fix(platform_name),
        )
    if not keras:
        report.add("error", "Keras is not installed.", 'pip install "keras>=3"')
    elif keras[0] < 3:
        report.add(
            "error",
            f"Keras {versions['keras']} is Keras 2; tfkd needs Keras 3.",
            'pip install -U "keras>=3"',
        )
    autokeras = parse_version(versions.get("autokeras"))
    if autokeras and autokeras <= (3, 0, 0) and keras >= (
        AUTOKERAS_3_0_BREAKING_KERAS
    ):
        report.add(
            "error",
            f"AutoKeras {versions['autokeras']} breaks on Keras "
            f"{versions['keras']}: Keras >= 3.13 rejects the numpy.int64 "
            "layer sizes its search produces (Dense(units=numpy.int64)).",
            'pip install "keras<3.13" (or an AutoKeras release newer than '
            "3.0.0)",
        )
    if "keras-tuner" in versions and "tensorboard" not in versions:
        report.add(
            "error",
            "keras-tuner is installed without TensorBoard, which it imports "
            "(AutoKeras searches fail).",
            "pip install tensorboard",
        )


def check_declared_requirements(names, report):
    """Checks the Keras/TensorFlow requirements the packages declare.

    Reads `Requires-Dist` of each installed distribution in `names` and
    reports any requirement on tensorflow, keras, tensorboard or
    keras-tuner that the installed version does not satisfy (what
    `pip check` would say, for this stack only).

    Args:
        names: Distribution names whose requirements to read.
        report: The `Report` to add problems to.
    """
    from packaging.requirements import Requirement

    stack = {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "tensorboard",
        "keras-tuner",
    }
    versions = installed_versions(sorted(stack))
    for name in names:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            target = requirement.name.lower().replace("_", "-")
            if target not in stack or target not in versions:
                continue
            marker = requirement.marker
            if marker is not None and not marker.evaluate({"extra": ""}):
                continue  # an optional extra, or another platform
            if not requirement.specifier.contains(
                versions[target], prereleases=True
            ):
                report.add(
                    "error",
                    f"{name} requires {requirement} but {target} "
                    f"{versions[target]} is installed.",
                    f'pip install "{target}{requirement.specifier}"',
                )


def _install_tensorflow_fix(platform_name, upgrade=False):
    flag = "-U " if upgrade else ""
    if platform_name == "win32":
        return (
            f"pip install {flag}tensorflow (CPU only on native Windows; for "
            'a GPU use WSL2 and pip install "tensorflow[and-cuda]" there)'
        )
    if platform_name == "darwin":
        return f"pip install {flag}tensorflow tensorflow-metal"
    return f'pip install {flag}"tensorflow[and-cuda]" (or tensorflow-cpu)'


# -- the live checks -----------------------------------------------------------


def check_imports(report, backend="tensorflow"):
    """Imports Keras, its backend's module and the optional packages.

    Args:
        report: The `Report` to add import failures to.
        backend: The Keras backend in use: its module (`tensorflow`, `jax`
            or `torch`) must import. TensorFlow's optional companions
            (AutoKeras, tensorflow-datasets) are imported on TensorFlow
            only; elsewhere TensorFlow is not imported at all. Defaults to
            `"tensorflow"`.

    Returns:
        A dict of module name -> module, for those that imported.
    """
    modules = {}
    candidates = [("keras", "keras", True)]
    if backend in BACKEND_MODULES:
        module = BACKEND_MODULES[backend]
        candidates.insert(0, (module, _BACKEND_PACKAGES[backend], True))
    if backend == "tensorflow":
        candidates += [
            ("autokeras", "autokeras", False),
            ("tensorflow_datasets", "tensorflow-datasets", False),
        ]
    for module, package, required in candidates:
        if not required and importlib.util.find_spec(module) is None:
            continue
        try:
            modules[module] = importlib.import_module(module)
        except Exception as error:  # any import-time failure is the finding
            report.add(
                "error",
                f"import {module} fails: {type(error).__name__}: {error}",
                f"pip install -U --force-reinstall {package} (in a clean "
                "virtual environment if that does not help)",
            )
    return modules


#: The pip distribution of each backend's module.
_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def training_backends():
    """The Keras backends the `Distiller` has a training step for.

    Read from `tfkd.distiller.TRAINING_BACKENDS` when tfkd imports; when
    it does not (the doctor run as a script), TensorFlow, JAX and PyTorch.

    Example:

    >>> "tensorflow" in training_backends()
    True
    """
    try:
        distiller = importlib.import_module("tfkd.distiller")
        return tuple(distiller.TRAINING_BACKENDS)
    except Exception:  # the doctor reports, never crashes
        return ("tensorflow", "jax", "torch")


def check_backend(keras, report, backends=None):
    """Checks the Keras backend: one tfkd trains on, not the legacy Keras 2.

    Args:
        keras: The imported `keras` module.
        report: The `Report` to add facts and problems to.
        backends: The backends with a training step. Defaults to
            `training_backends()`.
    """
    backend = keras.backend.backend()
    backends = training_backends() if backends is None else tuple(backends)
    report.facts["keras backend"] = backend
    if backend not in backends:
        # A user off TensorFlow is pointed at the other backends first:
        # TensorFlow is named only when it is the one choice left.
        others = [b for b in backends if b != "tensorflow"] or list(backends)
        report.add(
            "error",
            f"Keras runs on the {backend!r} backend, for which tfkd's "
            "Distiller has no training step (yet).",
            f"export KERAS_BACKEND={others[0]} (or set \"backend\" in "
            "~/.keras/keras.json) with that backend installed; tfkd "
            f"trains on {', '.join(others)}",
        )
    if backend == "tensorflow" and os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true"):
        report.add(
            "warning",
            "TF_USE_LEGACY_KERAS is set: tf.keras is Keras 2 (tf-keras), "
            "and its models cannot be mixed with tfkd's Keras 3 models.",
            "unset TF_USE_LEGACY_KERAS and use `import keras`",
        )


def _in_wsl():
    return "microsoft" in platform.release().lower()


def check_gpus(tf, versions, report, platform_name=None):
    """Lists GPUs and the CUDA/cuDNN the build expects; says how to get one.

    Args:
        tf: The imported `tensorflow` module.
        versions: Dict of installed distribution versions.
        report: The `Report` to add facts and problems to.
        platform_name: `sys.platform` value, to choose the fix. Defaults
            to this machine's.
    """
    platform_name = platform_name or sys.platform
    build = dict(tf.sysconfig.get_build_info())
    cuda_build = bool(build.get("is_cuda_build"))
    report.facts["CUDA build"] = (
        f"yes (CUDA {build.get('cuda_version', '?')}, cuDNN "
        f"{build.get('cudnn_version', '?')})"
        if cuda_build
        else "no"
    )
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    capabilities = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        capabilities.append(capability)
        name = details.get("device_name", gpu.name)
        if capability:
            name += f" (compute {capability[0]}.{capability[1]})"
        names.append(name)
    report.facts["GPUs"] = ", ".join(names) if names else "none"
    if gpus:
        old = [c for c in capabilities if c and tuple(c) < (7, 0)]
        if old:
            report.add(
                "warning",
                "A GPU with compute capability below 7.0 gets no speed-up "
                "from mixed_float16 (no tensor cores).",
                "train in float32 on this GPU",
            )
        return
    report.add(
        "warning",
        "No GPU is visible to TensorFlow: distillation runs on the CPU, "
        "typically 10-50x slower.",
        _gpu_fix(platform_name, versions, cuda_build, build),
    )


def _gpu_fix(platform_name, versions, cuda_build, build):
    if platform_name == "win32":
        return (
            "TensorFlow >= 2.11 has no GPU support on native Windows: "
            "install WSL2 (wsl --install) with the Windows NVIDIA driver, "
            'then pip install "tensorflow[and-cuda]" inside WSL2'
        )
    if platform_name == "darwin":
        return "pip install tensorflow-metal (Apple silicon GPUs)"
    if "tensorflow-cpu" in versions or not cuda_build:
        return (
            "this TensorFlow is a CPU-only build: pip uninstall -y "
            'tensorflow-cpu && pip install "tensorflow[and-cuda]"'
        )
    wanted = (
        f"CUDA {build.get('cuda_version', '?')} and cuDNN "
        f"{build.get('cudnn_version', '?')}"
    )
    if shutil.which("nvidia-smi") is None:
        driver = (
            "install the NVIDIA driver on Windows (WSL2 uses it; do not "
            "install a Linux driver inside WSL2)"
            if _in_wsl()
            else "install the NVIDIA driver (nvidia-smi must work)"
        )
        return f'{driver}, then pip install "tensorflow[and-cuda]"'
    return (
        f'pip install "tensorflow[and-cuda]" to get the {wanted} libraries '
        "this build expects, and make sure no other CUDA is first on "
        "LD_LIBRARY_PATH"
    )


def _nvidia_driver_present():
    return shutil.which("nvidia-smi") is not None


def check_jax_devices(jax, report, platform_name=None, nvidia_driver=None):
    """Lists JAX's devices; says how to get a GPU when JAX sees none.

    Args:
        jax: The imported `jax` module.
        report: The `Report` to add facts and problems to.
        platform_name: `sys.platform` value, to choose the fix. Defaults
            to this machine's.
        nvidia_driver: Whether an NVIDIA driver is installed (a GPU is
            expected). Defaults to whether `nvidia-smi` is on the PATH.
    """
    platform_name = platform_name or sys.platform
    if nvidia_driver is None:
        nvidia_driver = _nvidia_driver_present()
    devices = list(jax.devices())
    names = [
        f"{device.platform}:{device.id} ({getattr(device, 'device_kind', '?')})"
        for device in devices
    ]
    report.facts["jax devices"] = ", ".join(names) if names else "none"
    if any(device.platform in ("gpu", "cuda", "rocm", "tpu", "METAL")
           for device in devices):
        return
    report.add(
        "warning",
        "No GPU or TPU is visible to JAX: distillation runs on the CPU, "
        "typically 10-50x slower.",
        _jax_gpu_fix(platform_name, nvidia_driver),
    )


def _jax_gpu_fix(platform_name, nvidia_driver):
    if platform_name == "win32":
        return (
            "JAX's CUDA wheels are for Linux: install WSL2 (wsl --install) "
            'with the Windows NVIDIA driver, then pip install -U "jax[cuda12]" '
            "inside WSL2"
        )
    if platform_name == "darwin":
        return (
            "JAX has no CUDA on macOS; Apple GPUs have the experimental "
            "jax-metal plugin (pip install jax-metal)"
        )
    if nvidia_driver:
        return (
            'an NVIDIA driver is installed but this jaxlib is CPU-only: pip '
            'install -U "jax[cuda12]" (it brings its own CUDA and cuDNN; '
            'check with python -c "import jax; print(jax.devices())"); on a '
            'Cloud TPU VM, pip install -U "jax[tpu]"'
        )
    return (
        "install the NVIDIA driver (nvidia-smi must work), then pip install "
        '-U "jax[cuda12]"; on a Cloud TPU VM, pip install -U "jax[tpu]"'
    )


def check_torch_devices(torch, report, platform_name=None, nvidia_driver=None):
    """Reports `torch.cuda.is_available()`; says how to get a GPU if not.

    Args:
        torch: The imported `torch` module.
        report: The `Report` to add facts and problems to.
        platform_name: `sys.platform` value, to choose the fix. Defaults
            to this machine's.
        nvidia_driver: Whether an NVIDIA driver is installed. Defaults to
            whether `nvidia-smi` is on the PATH.
    """
    platform_name = platform_name or sys.platform
    if nvidia_driver is None:
        nvidia_driver = _nvidia_driver_present()
    built_for = getattr(torch.version, "cuda", None)
    report.facts["torch CUDA build"] = built_for or "none (CPU-only build)"
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        report.facts["torch.cuda.is_available()"] = (
            f"True ({count} x {torch.cuda.get_device_name(0)})"
        )
        return
    report.facts["torch.cuda.is_available()"] = "False"
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if platform_name == "darwin":
        if mps is not None and mps.is_available():
            report.facts["torch MPS"] = "available"
            return
        fix = "update macOS and PyTorch for the Apple-silicon GPU (MPS)"
    elif platform_name == "win32" and built_for is None:
        fix = (
            "this PyTorch is a CPU-only build: install a CUDA build with the "
            "command of https://pytorch.org/get-started/locally/ (pip "
            "install torch --index-url https://download.pytorch.org/whl/cu126)"
        )
    elif built_for is None:
        fix = (
            "this PyTorch is a CPU-only build: pip install -U torch (Linux "
            "wheels from PyPI carry CUDA), or the command of "
            "https://pytorch.org/get-started/locally/"
        )
    elif not nvidia_driver:
        fix = (
            f"install the NVIDIA driver (nvidia-smi must work; this PyTorch "
            f"was built for CUDA {built_for})"
        )
    else:
        fix = (
            f"this PyTorch was built for CUDA {built_for}: update the NVIDIA "
            "driver to one that supports it (nvidia-smi shows the newest CUDA "
            "it supports), or install the torch build for your driver from "
            "https://pytorch.org/get-started/locally/"
        )
    report.add(
        "warning",
        "torch.cuda.is_available() is False: distillation runs on the CPU, "
        "typically 10-50x slower.",
        fix,
    )


def check_mixed_precision(keras, report):
    """Runs a float16 and a bfloat16 layer forward and backward.

    Args:
        keras: The imported `keras` module.
        report: The `Report` to add facts and problems to.
    """
    import tensorflow as tf

    results = []
    for policy in ("mixed_float16", "mixed_bfloat16"):
        try:
            layer = keras.layers.Dense(4, dtype=policy)
            x = tf.reshape(tf.linspace(-1.0, 1.0, 16), (2, 8))
            with tf.GradientTape() as tape:
                y = layer(x)
                loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
            gradients = tape.gradient(loss, layer.trainable_variables)
            compute = policy.split("_")[1]
            finite = all(
                bool(tf.reduce_all(tf.math.is_finite(g))) for g in gradients
            )
            if y.dtype != compute or not finite:
                raise ValueError(f"got {y.dtype} outputs, finite={finite}")
            results.append(f"{policy} ok")
        except Exception as error:
            results.append(f"{policy} FAILED")
            report.add(
                "error",
                f"Mixed precision {policy} does not work here: {error}",
                "train in float32 (keras.mixed_precision.set_dtype_policy("
                '"float32")), or update TensorFlow',
            )
    report.facts["mixed precision"] = ", ".join(results)


def check_xla(tf, report):
    """Compiles and runs a tiny function with XLA (`jit_compile=True`).

    Args:
        tf: The imported `tensorflow` module.
        report: The `Report` to add facts and problems to.
    """
    try:
        function = tf.function(
            lambda a: tf.nn.relu(tf.matmul(a, a)), jit_compile=True
        )
        value = function(tf.eye(4))
        if not bool(tf.reduce_all(value == tf.eye(4))):
            raise ValueError("wrong result")
        report.facts["XLA"] = "ok"
    except Exception as error:
        report.facts["XLA"] = "FAILED"
        first_line = (str(error).splitlines() or [""])[0]
        report.add(
            "warning",
            "XLA (jit_compile=True) does not work here: "
            f"{type(error).__name__}: {first_line}",
            "compile with jit_compile=False (distiller.compile(..., "
            "jit_compile=False))",
        )


def _run(check, report, *args):
    try:
        return check(*args)
    except Exception as error:  # the doctor reports, never crashes
        report.add(
            "warning",
            f"The check {check.__name__} itself failed: "
            f"{type(error).__name__}: {error}",
            "report this at the tfkd issue tracker with the output above",
        )
        return None


def diagnose():
    """Runs every check and returns the `Report`, without printing.

    Returns:
        A `Report`.
    """
    report = Report()
    report.facts["python"] = sys.version.split()[0]
    report.facts["platform"] = platform.platform() + (
        " (WSL2)" if _in_wsl() else ""
    )
    package = sys.modules.get("tfkd")
    if getattr(package, "__version__", None):
        report.facts["tfkd"] = package.__version__
    versions = installed_versions()
    for name, version in versions.items():
        report.facts[name] = version
    backend = _run(_keras_backend_name, report) or "tensorflow"
    _run(check_versions, report, versions, report, None, backend)
    _run(check_declared_requirements, report, list(versions), report)
    modules = _run(check_imports, report, report, backend) or {}
    keras = modules.get("keras")
    if keras is not None:
        _run(check_backend, report, keras, report)
    if backend == "tensorflow" and "tensorflow" in modules:
        tf = modules["tensorflow"]
        _run(check_gpus, report, tf, versions, report)
        _run(check_xla, report, tf, report)
        if keras is not None:
            _run(check_mixed_precision, report, keras, report)
    elif backend == "jax" and "jax" in modules:
        _run(check_jax_devices, report, modules["jax"], report)
    elif backend == "torch" and "torch" in modules:
        _run(check_torch_devices, report, modules["torch"], report)
    return report


def _keras_backend_name():
    """The Keras backend, as Keras resolves it (`KERAS_BACKEND`, keras.json).

    Importing Keras imports the backend's module; a Keras that fails to
    import is reported by `check_imports`, and the backend is then taken
    from `KERAS_BACKEND` alone.
    """
    try:
        keras = importlib.import_module("keras")
        return keras.backend.backend()
    except Exception:
        return os.environ.get("KERAS_BACKEND", "tensorflow")


def doctor(print_report=True):
    """Checks this environment for distillation and says how to fix it.

    Looks up the TensorFlow, Keras, AutoKeras, keras-tuner, TensorBoard,
    tensorflow-datasets, JAX and PyTorch versions and whether they work
    together (including combinations known to break, such as AutoKeras
    3.0.0 with Keras >= 3.13 or tensorflow next to tensorflow-cpu), and the
    Keras backend's accelerators: on TensorFlow the visible GPUs and the
    CUDA and cuDNN versions its build expects, plus a tiny mixed-precision
    layer and a tiny XLA-compiled function; on JAX `jax.devices()`; on
    PyTorch `torch.cuda.is_available()`. TensorFlow is required, and
    advised, on the TensorFlow backend only. It never raises.

    Args:
        print_report: Whether to print the report. Defaults to `True`.

    Returns:
        A `Report`: `facts` (dict), `problems` (list of `Problem` with
        `severity`, `summary` and `fix`) and `ok` (no errors).

    Example:

    >>> import tfkd
    >>> report = tfkd.doctor(print_report=False)  # doctest: +SKIP
    >>> for problem in report.problems:  # doctest: +SKIP
    ...     print(problem.fix)
    this TensorFlow is a CPU-only build: pip uninstall -y tensorflow-cpu && \
pip install "tensorflow[and-cuda]"
    """
    report = diagnose()
    if print_report:
        print(report)
    return report


def main(argv=None):
    """The `doctor` command line; returns the exit status.

    Args:
        argv: Arguments after `doctor` (`["--strict"]` or `[]`). Defaults
            to `sys.argv[1:]`.

    Returns:
        0, or 1 with `--strict` when the report lists any problem.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tfkd doctor",
        description="Check this environment for tfkd and say how to fix it.",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any problem (also a warning) is found",
    )
    args = parser.parse_args(argv)
    report = doctor(print_report=True)
    return 1 if args.strict and report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
