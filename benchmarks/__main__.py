"""The one launcher of every experiment: `python -m benchmarks <experiment>`.

It only parses the experiment's name and hands the rest of the command
line to `benchmarks.experiments.<name>.main`, imported only then, so that
`python -m benchmarks --help` needs no TensorFlow. Each experiment's
module docstring gives its command and expected run time.
"""

import argparse
import importlib
import sys

#: Experiment name -> one-line summary (`benchmarks/experiments/<name>.py`).
EXPERIMENTS = {
    "compare": "the main comparison: teacher, students, keras.distillation, "
               "AutoKeras",
    "transfer": "tune T and α on one task, transfer them to another",
    "capacity": "accuracy of students of growing size, scratch and distilled",
    "teachers": "accuracy, size and speed of keras.applications teachers",
    "methods": "feature, attention, relation and decoupled KD next to logit KD",
    "cache_speed": "what a teacher cache costs and saves, per epoch",
    "gain": "the KD gain over scratch along labels, patience, teacher gap, "
            "student capacity and T",
    "deploy": "the few-labels students as LiteRT files (float32, float16, "
              "dynamic, int8): accuracy, size, latency",
}
#: Other names accepted on the command line.
ALIASES = {"run": "compare"}


def parse_args(argv=None):
    """`(experiment, its arguments)` from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tfkd experiments, one protocol: `python -m benchmarks "
                    "<experiment> --preset smoke|quick|full`; "
                    "`python -m benchmarks <experiment> --help` for its options.")
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
