"""Command line of the benchmarks: `python -m benchmarks run ...`.

This file only parses arguments; the logic lives in `benchmarks.runner`
and, for `transfer`, `capacity` and `teachers`, in `benchmarks.experiments`.
"""

import argparse
import importlib
import sys

from benchmarks import presets

#: Subcommands implemented in `benchmarks.experiments.<name>`.
EXPERIMENTS = {
    "transfer": "tune T and α on one task, transfer them to another "
                "(--source, --target)",
    "capacity": "accuracy of students of growing size, from scratch and "
                "distilled",
    "teachers": "accuracy, size and speed of keras.applications teachers "
                "(tfkd.teachers)",
}


def parse_args(argv=None):
    """Parses the command line (see `--help`)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="tfkd benchmarks: teacher vs student vs distilled "
        "student vs keras.distillation vs AutoKeras.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="compare all arms on one dataset",
        description="Trains the teacher, the student arms (interleaved, so "
        "epoch-time ratios are measured under the same conditions) and "
        "AutoKeras, then writes results.json, results.md and PNG plots. "
        "Rerunning the same command resumes after the last finished arm.",
    )
    run.add_argument("--dataset", default="fashion_mnist",
                     help="fashion_mnist (offline) or any tfds image dataset name")
    run.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS),
                     help="smoke: seconds; quick: ~20 min on 2 CPU cores; full: GPU")
    run.add_argument("--output", default=None,
                     help="output directory (default benchmarks/results/<dataset>-<preset>)")
    run.add_argument("--arms", default=None,
                     help="comma-separated arm ids to run (default: all)")
    run.add_argument("--fresh", action="store_true",
                     help="start over instead of resuming finished arms")
    run.add_argument("--verbose", type=int, default=None, choices=(0, 1, 2),
                     help="Keras verbosity of teacher and AutoKeras training")
    # The experiments parse their own options (`python -m benchmarks
    # transfer --help`), so that this parser stays free of TensorFlow.
    for name, summary in EXPERIMENTS.items():
        commands.add_parser(name, help=summary, add_help=False)
    args, options = parser.parse_known_args(argv)
    if args.command in EXPERIMENTS:
        args.options = options
    elif options:
        parser.error(f"unrecognized arguments: {' '.join(options)}")
    return args


def main(argv=None):
    """Entry point; returns the process exit code."""
    args = parse_args(argv)
    if args.command in EXPERIMENTS:
        module = importlib.import_module(f"benchmarks.experiments.{args.command}")
        return module.main(
            args.options, prog=f"python -m benchmarks {args.command}"
        )
    from benchmarks import runner

    if args.command == "run":
        runner.run(
            dataset=args.dataset,
            preset=args.preset,
            output=args.output,
            arms=args.arms.split(",") if args.arms else None,
            fresh=args.fresh,
            verbose=args.verbose,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
