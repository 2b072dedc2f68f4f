"""Experiments beyond the main benchmark, one module each.

- `transfer`: tune T and α on one task, transfer them to another, and
  compare with tfkd's defaults and with tuning on the target itself.
- `capacity`: accuracy of students of growing size, trained from scratch
  and distilled: how small can the student be before accuracy falls off?

Each has `smoke`, `quick` and `full` presets, a `run()` function the tests
call, and a command line (`python -m benchmarks transfer ...`, or
`python -m benchmarks.experiments.transfer ...`); results land in
`benchmarks/results/<experiment>-<preset>/` as JSON, Markdown and PNG.
`common` holds what they share.
"""
