"""The one launcher of every experiment: `python -m benchmarks <experiment>`.

It only parses the experiment's name and hands the rest of the command
line to `benchmarks.experiments.<name>.main`, imported only then, so that
`python -m benchmarks --help` needs no TensorFlow. Each experiment's
module docstring gives its command and expected run time.
"""

import argparse
import importlib
import sys

from benchmarks import experiments

#: The experiments (`benchmarks.experiments.REGISTRY`) and their aliases.
EXPERIMENTS = experiments.REGISTRY
ALIASES = experiments.ALIASES


def parse_args(argv=None):
    """`(experiment, its arguments)` from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tfkd experiments, one protocol: `python -m benchmarks "
                    "<experiment> --preset smoke|quick|full`; "
                    "`python -m benchmarks <experiment> --help` for its options; "
                    "`python -m benchmarks --list` prints the experiments' names.")
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["--list"]:
        # For `make results`: the registry's names, one per line.
        print("\n".join(EXPERIMENTS))
        raise SystemExit(0)
    parser.add_argument("experiment", choices=[*EXPERIMENTS, *ALIASES],
                        metavar="experiment", help="; ".join(
                            f"{name}: {text}" for name, text in EXPERIMENTS.items())
                        + "; run: compare")
    parser.add_argument("options", nargs=argparse.REMAINDER,
                        help="the experiment's options (--preset, --output, "
                             "--fresh, --seeds, --verbose, ...)")
    args = parser.parse_args(argv)
    return ALIASES.get(args.experiment, args.experiment), args.options


def main(argv=None):
    """Entry point; returns the process exit code."""
    experiment, options = parse_args(argv)
    module = importlib.import_module(f"benchmarks.experiments.{experiment}")
    return module.main(options, prog=f"python -m benchmarks {experiment}")


if __name__ == "__main__":
    sys.exit(main())
