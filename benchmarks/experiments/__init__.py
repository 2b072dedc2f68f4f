"""The experiments, one module each, all on `benchmarks.protocol`.

Each module has a docstring with its command and expected run time,
`PRESETS` (`smoke`, `quick`, `full` of `benchmarks.presets.Preset`), `run()`
and `main(argv=None)`; `python -m benchmarks <name>` runs it. Results land
in `benchmarks/runs/<name>-<preset>/` (ignored by git) as JSON, Markdown
and PNG; `make results` writes the committed ones in `benchmarks/results/`.

- `compare`: the main comparison (alias `run`).
- `transfer`: do T and α tuned on one task carry over to another?
- `capacity`: how small can the student be before accuracy falls off?
- `teachers`: which `keras.applications` family makes a good teacher?
- `methods`: feature, attention, relation and decoupled KD.
- `cache_speed`: what a teacher cache costs and saves, per epoch.
- `gain`: where does distillation beat scratch (labels, patience, teacher
  gap, capacity, T)?
- `deploy`: what each LiteRT format (float32 to int8) costs the students.
"""
