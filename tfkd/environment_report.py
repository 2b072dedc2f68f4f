"""`tfkd.doctor()`: is this environment able to distil, and fast?

Collects versions (TensorFlow, Keras, AutoKeras, keras-tuner, TensorBoard,
tensorflow-datasets), checks them against each other and against the
combinations known to break, lists the GPUs and the CUDA/cuDNN versions the
TensorFlow build expects, and runs a tiny mixed-precision layer and a tiny
XLA-compiled function to see whether they work here. Every problem comes
with a concrete fix.

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
    "numpy",
)

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


def check_versions(versions, report, platform_name=None):
    """Adds the problems of a version combination to `report`.

    Pure: works on a dict such as `installed_versions()` returns, so known
    bad combinations can be checked without installing them.

    Args:
        versions: Dict of distribution name -> version string.
        report: The `Report` to add problems to.
        platform_name: `sys.platform` value. Defaults to this machine's.

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
    if tensorflow is None:
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


def check_imports(report):
    """Imports TensorFlow, Keras and the optional packages.

    Args:
        report: The `Report` to add import failures to.

    Returns:
        A dict of module name -> module, for those that imported.
    """
    modules = {}
    for module, package, required in (
        ("tensorflow", "tensorflow", True),
        ("keras", "keras", True),
        ("autokeras", "autokeras", False),
        ("tensorflow_datasets", "tensorflow-datasets", False),
    ):
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


def check_backend(keras, report):
    """Checks that Keras runs on TensorFlow and is not the legacy Keras 2.

    Args:
        keras: The imported `keras` module.
        report: The `Report` to add facts and problems to.
    """
    backend = keras.backend.backend()
    report.facts["keras backend"] = backend
    if backend != "tensorflow":
        report.add(
            "error",
            f"Keras runs on the {backend!r} backend; tfkd needs TensorFlow.",
            "export KERAS_BACKEND=tensorflow (or set \"backend\": "
            '"tensorflow" in ~/.keras/keras.json)',
        )
    if os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true"):
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
    _run(check_versions, report, versions, report)
    _run(check_declared_requirements, report, list(versions), report)
    modules = _run(check_imports, report, report) or {}
    keras = modules.get("keras")
    tf = modules.get("tensorflow")
    if keras is not None:
        _run(check_backend, report, keras, report)
    if tf is not None:
        _run(check_gpus, report, tf, versions, report)
        _run(check_xla, report, tf, report)
    if keras is not None and tf is not None:
        _run(check_mixed_precision, report, keras, report)
    return report


def doctor(print_report=True):
    """Checks this environment for distillation and says how to fix it.

    Looks up the TensorFlow, Keras, AutoKeras, keras-tuner, TensorBoard and
    tensorflow-datasets versions and whether they work together (including
    combinations known to break, such as AutoKeras 3.0.0 with Keras >= 3.13
    or tensorflow next to tensorflow-cpu), the visible GPUs and the CUDA and
    cuDNN versions the TensorFlow build expects, and runs a tiny
    mixed-precision layer and a tiny XLA-compiled function. It never raises.

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
