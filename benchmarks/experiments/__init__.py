"""The experiments, one module each, all on `benchmarks.protocol`.

Each module has a docstring with its command and expected run time,
`PRESETS` (`smoke`, `quick`, `full` of `benchmarks.presets.Preset`), `run()`
and `main(argv=None)`; `python -m benchmarks <name>` runs it. Results land
in `benchmarks/runs/<name>-<preset>/` (ignored by git) as JSON, Markdown
and PNG; `make results` writes the committed ones in `benchmarks/results/`.

`REGISTRY` below is the one list of experiments: the launcher
(`python -m benchmarks`), `make results` (through `python -m benchmarks
--list`) and the docs read it. A new experiment is a module here and one
entry in it.
"""

#: Experiment name -> one-line summary (`benchmarks/experiments/<name>.py`),
#: in the order `make results` runs them.
REGISTRY = {
    "compare": "the main comparison: teacher, students, keras.distillation, "
               "AutoKeras",
    "gain": "the KD gain over scratch along labels, patience, teacher gap, "
            "student capacity and T",
    "transfer": "tune T and α on one task, transfer them to another",
    "capacity": "accuracy of students of growing size, scratch and distilled",
    "methods": "feature, attention, relation and decoupled KD next to logit KD",
    "cache_speed": "what a teacher cache costs and saves, per epoch",
    "teachers": "accuracy, size and speed of keras.applications teachers",
    "deploy": "the few-labels students as LiteRT files (float32, float16, "
              "dynamic, int8): accuracy, size, latency",
    "backends": "one KD setting on every installed Keras backend "
                "(TensorFlow, JAX, PyTorch): epoch-time ratios and accuracy",
}
#: Other names accepted on the command line.
ALIASES = {"run": "compare"}
