"""Measures what `tfkd.CRD` adds to a training step, before and after its rewrite.

The sizes of the methods experiment's quick preset
(`benchmarks.experiments.methods`): the reference teacher CNN (width 16,
512-unit head) and student CNN (width 8), 28x28x1 inputs, 10 classes,
batch 64, a memory bank of 4,000 rows, K = 4,096 negatives, 128-d
embeddings, T = 2, α = 0. Four arms, built from the same initial weights
and fed the same kind of batches (random images; the distillers' targets
carry each row's index, 10 % of the rows labelled, the rest -1):

- `scratch`: the student behind 1-pixel random shifts, as the methods
  experiment's scratch arm, compiled with sparse cross-entropy.
- `logit_kd`: `tfkd.Distiller(teacher, student)`.
- `crd`: logit KD + `tfkd.CRD` as it is now: the bank (4,000 rows, at most
  `contrastive.DENSE_SCORES_MAX_ROWS_PER_SAMPLE` × 4,097) is scored whole
  by one product, the draws counted per example.
- `crd_gathered`: logit KD + the CRD step as it was before (commit
  0238322): every example gathers its 4,097 rows of 128 values from each
  bank, `(64, 4097, 128)`, and every read of a bank goes through a full
  read of the variable (which TensorFlow copies once a row scatter has
  written it). Only `loss_on_memory` and the memory update differ; the
  loss is the same (tests/test_terms_contrastive_backends.py).

Each repeat times `--steps` calls of each arm's compiled train function on
a prefetched dataset, the arms' order alternating between repeats so that
drift of a shared machine hits them alike; the first calls (tracing) are
not timed. It reports, per ratio, the median and min-max over repeats of
the per-repeat ratio of step times.

    PYTHONPATH=. python scripts/crd_step_cost.py --repeats 7

About a minute on 2 shared CPU cores. Measured there (Keras 3.15,
TensorFlow 2.21, tf.function, 7 repeats of 15 steps; the machine busy with
another test run, so the spread is wide), median (min-max) of the
per-repeat ratios, and median ms per step:

    crd / scratch            3.19 (2.36-3.63)    scratch   6.2 ms
    crd / logit_kd           1.35 (1.19-1.65)    logit_kd 14.6 ms
    crd_gathered / scratch  11.84 (9.97-14.38)   crd      19.8 ms
    crd_gathered / logit_kd  5.13 (4.97-6.53)    crd_gathered 73.8 ms
    logit_kd / scratch       2.30 (1.83-2.67)

A second run, after CRD's counts moved to a fixed-size DenseBincount (the
same kernel) and with the machine busier: crd / scratch 4.44 (4.01-9.61),
crd / logit_kd 1.41 (1.37-3.71), crd_gathered / scratch 17.49
(14.90-21.18), crd_gathered / logit_kd 5.31 (4.70-8.18), logit_kd /
scratch 2.94 (2.52-3.99). The ratios to scratch move with the load; a
CRD step is 3.7-3.9x cheaper than before in both runs.

The methods experiment measured CRD's epochs at 11.7x scratch's with the
gathered rows (logit KD's at 1.92x); its epochs carry more per-step cost
outside the step than this loop, so its ratios run lower than these.
"""

import argparse
import json
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import tfkd
from benchmarks import arms as arms_lib
from benchmarks import models
from tfkd.terms import contrastive

NUM_DATA, NUM_NEGATIVES, FEAT_DIM, BATCH = 4_000, 4_096, 128, 64


class GatheredRowsCRD(contrastive.CRD):
    """CRD's step as it was before the whole-bank scores (commit 0238322)."""

    def loss_on_memory(self, teacher_embeddings, student_embeddings, rows):
        student_rows = ops.take(self.student_memory, rows, axis=0)
        teacher_rows = ops.take(self.teacher_memory, rows, axis=0)
        return contrastive.contrastive_loss(
            teacher_embeddings, student_rows, self.contrast_temperature
        ) + contrastive.contrastive_loss(
            student_embeddings, teacher_rows, self.contrast_temperature
        )

    def _update_memory(self, memory, indices, embeddings):
        embeddings = ops.stop_gradient(embeddings)
        old = ops.take(memory, indices, axis=0)
        new = ops.normalize(
            self.momentum * old + (1.0 - self.momentum) * embeddings, axis=-1
        )
        finite = ops.all(ops.isfinite(new), axis=-1, keepdims=True)
        new = ops.where(finite, new, old)
        memory.value.scatter_update(tf.IndexedSlices(new, indices))


def _crd(term_class, teacher, student):
    embedding_t = [l.name for l in teacher.layers if isinstance(l, keras.layers.Dense)][-2]
    embedding_s = [l.name for l in student.layers if isinstance(l, keras.layers.Dense)][-2]
    return term_class(embedding_t, embedding_s, num_data=NUM_DATA, feat_dim=FEAT_DIM,
                      num_negatives=NUM_NEGATIVES, weight=0.8, seed=0)


def build_arms(seed=0):
    """`{arm: (model, dataset)}`, every student from the same weights."""
    keras.utils.set_random_seed(seed)
    teacher = models.teacher_cnn((28, 28, 1), 10, width=16, dense_units=512)
    student = models.student_cnn((28, 28, 1), 10, width=8)

    def copy():
        clone = keras.models.clone_model(student)
        clone.set_weights(student.get_weights())
        return clone

    rng = np.random.default_rng(seed)
    x = rng.random((NUM_DATA, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=NUM_DATA)
    y_few = np.where(np.arange(NUM_DATA) % 10 == 0, y, -1)  # 10 % labelled

    def batches(targets):
        return (tf.data.Dataset.from_tensor_slices((x, targets)).shuffle(NUM_DATA, seed=seed)
                .batch(BATCH, drop_remainder=True).cache().repeat().prefetch(2))

    scratch = keras.Sequential([arms_lib.small_shift(), copy()])
    scratch.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    arms = {"scratch": (scratch, batches(y))}
    indexed = batches({"labels": y_few, "index": np.arange(NUM_DATA)})
    for name, term_class in (("logit_kd", None), ("crd", contrastive.CRD),
                             ("crd_gathered", GatheredRowsCRD)):
        arm_student = copy()
        extra = [] if term_class is None else [_crd(term_class, teacher, arm_student)]
        distiller = tfkd.Distiller(teacher=teacher, student=arm_student, temperature=2.0,
                                   alpha=0.0, extra_losses=extra)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
        arms[name] = (distiller, indexed if extra else batches(y_few))
    return arms


def time_steps(model, iterator, steps):
    """Seconds per step of Keras's compiled train function."""
    model.make_train_function()
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_function(iterator)
    float(logs["loss"])  # waits for the last step
    return (time.perf_counter() - start) / steps


def run(repeats=7, steps=15, arm_names=None):
    """Times the arms; returns a dict of per-repeat times and ratios."""
    arms = build_arms()
    names = list(arm_names or arms)
    iterators = {name: iter(arms[name][1]) for name in names}
    for name in names:  # trace, untimed
        time_steps(arms[name][0], iterators[name], 2)
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            times[name].append(time_steps(arms[name][0], iterators[name], steps))
    ratios = {}
    for numerator in ("crd", "crd_gathered", "logit_kd"):
        for denominator in ("scratch", "logit_kd"):
            if numerator == denominator or not {numerator, denominator} <= set(names):
                continue
            per_repeat = [a / b for a, b in zip(times[numerator], times[denominator])]
            ratios[f"{numerator}/{denominator}"] = {
                "median": statistics.median(per_repeat), "min": min(per_repeat),
                "max": max(per_repeat)}
    return {
        "repeats": repeats, "steps_per_repeat": steps, "batch_size": BATCH,
        "num_data": NUM_DATA, "num_negatives": NUM_NEGATIVES, "feat_dim": FEAT_DIM,
        "keras": keras.__version__, "tensorflow": tf.__version__,
        "median_ms_per_step": {n: 1e3 * statistics.median(t) for n, t in times.items()},
        "ratios": ratios,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--arms", default=None,
                        help="comma-separated subset of scratch,logit_kd,crd,crd_gathered")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args.repeats, args.steps, args.arms and args.arms.split(","))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as file:
            file.write(text + "\n")
    for name, ratio in result["ratios"].items():
        print(f"{name}: median {ratio['median']:.2f} (min {ratio['min']:.2f}, "
              f"max {ratio['max']:.2f})", file=sys.stderr)


if __name__ == "__main__":
    main()
