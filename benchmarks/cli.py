"""The command-line options every experiment shares, defined once.

Free of TensorFlow: `python -m benchmarks --help` imports only this and
`benchmarks.__main__`.
"""

import argparse

from benchmarks import presets as presets_lib


def parser(module, experiment, prog=None):
    """An `ArgumentParser` with the shared options of `experiment`.

    `--preset` (choices: the module's `PRESETS`), `--dataset` (unless the
    module sets `DATASET_OPTION = False`), `--output`, `--fresh`,
    `--seeds` and `--verbose`.

    Args:
        module: The experiment module (its docstring's first line is the
            description; its `PRESETS` the preset choices).
        experiment: The experiment's name.
        prog: Program name in `--help`. Defaults to
            `python -m benchmarks <experiment>`.

    Returns:
        An `argparse.ArgumentParser`.
    """
    result = argparse.ArgumentParser(
        prog=prog or f"python -m benchmarks {experiment}",
        description=module.__doc__.strip().splitlines()[0])
    result.add_argument("--preset", default="quick", choices=sorted(module.PRESETS),
                        help="smoke: seconds (the tests); quick: 2 CPU cores; "
                             "full: a GPU (default quick)")
    if getattr(module, "DATASET_OPTION", True):
        result.add_argument("--dataset", default=None,
                            help="fashion_mnist (offline) or a tfds image "
                                 "dataset name (default: the preset's)")
    result.add_argument("--output", default=None,
                        help="output directory (default $TFKD_BENCHMARK_OUTPUT"
                             f" or benchmarks/runs, then /{experiment}-<preset>)")
    result.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming finished pieces")
    result.add_argument("--seeds", default=None, type=seed_list,
                        help="comma-separated seeds (default: the preset's)")
    result.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2),
                        help="Keras verbosity of long trainings (default 0)")
    return result


def seed_list(text):
    """`"0,1,2"` -> `(0, 1, 2)`."""
    try:
        return presets_lib.check_seeds(int(s) for s in text.split(",") if s.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def name_list(text):
    """`"a, b"` -> `["a", "b"]`."""
    return [name.strip() for name in text.split(",") if name.strip()]
