"""The `python -m tfkd` command line; only parses arguments.

    python -m tfkd doctor [--strict]

`doctor` prints the environment report of `tfkd.doctor()` and exits 0, or
1 with `--strict` when it lists any problem.
"""

import argparse
import importlib
import sys


def main(argv=None):
    """Runs the command in `argv` (default: `sys.argv[1:]`); returns its status.

    Example:

    >>> main(["doctor"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(prog="python -m tfkd")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor_parser = commands.add_parser(
        "doctor", help="check Keras, its backend (TensorFlow, JAX or PyTorch) and its GPUs"
    )
    doctor_parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any problem (also a warning) is found",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    # Imported late so `--help` answers even where TensorFlow is broken.
    environment_report = importlib.import_module("tfkd.environment_report")
    return environment_report.main(["--strict"] if args.strict else [])


if __name__ == "__main__":
    sys.exit(main())
