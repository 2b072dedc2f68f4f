"""One worker of a tiny multi-worker distillation (or the single-worker run).

Run by tests/test_multi_worker.py:

    TF_CONFIG='{"cluster": {"worker": [...]}, "task": {...}}' \\
        python tests/multi_worker_job.py --out W.npz --cache DIR \\
            [--reference online|cached] [--checkpoint-dir DIR]

With `TF_CONFIG` set it trains under
`tf.distribute.MultiWorkerMirroredStrategy` (CPU, collective ops over gRPC
on 127.0.0.1); without it, with the default strategy in one process. Either
way the global batch is 32 examples and the run is 2 epochs of 8 steps on
256 Fashion-MNIST images, with the same seed, so the students must agree.
It distils twice: online (the teacher runs every step) and from a
`tfkd.TeacherCache` (built beforehand by `build_cache`; no teacher in the
Distiller). With `--reference MODE` the process then runs that one again
alone, under the default strategy, for comparison (the test gives each
worker one, so they run side by side). With `--checkpoint-dir` every
worker gives its online run a `tfkd.callbacks.StudentCheckpoint` writing to
`<DIR>/worker<index>/student.keras`, its own path, so the test can see
which workers wrote (only worker 0 should).

Each worker reads the same dataset of global batches; with the DATA
auto-shard policy (the cache's stream sets it itself) `tf.distribute`
splits every global batch into one slice of 16 per worker, so a step of
two workers sees exactly the batch the single-worker step sees.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TFKD_ROOT lets a test point the workers at another checkout.
sys.path.insert(
    0,
    os.environ.get("TFKD_ROOT")
    or os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd  # noqa: E402
import tfkd.callbacks  # noqa: E402
from tfkd import data  # noqa: E402
from tfkd.cache import TeacherCache  # noqa: E402

EXAMPLES = 256
GLOBAL_BATCH = 32
EPOCHS = 2


def load_examples():
    (x, y), _ = data.load_fashion_mnist_arrays(download=False)
    x = (x[:EXAMPLES].reshape(EXAMPLES, -1) / 255.0).astype("float32")
    return x, y[:EXAMPLES].astype("int32")


def make_model(name, hidden):
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10),
        ],
        name=name,
    )


def sharded_by_data(dataset):
    """Every global batch is split across workers, not whole files."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def distil(strategy, cache_path=None, callbacks=()):
    """One seeded distillation under `strategy`; returns weights and losses.

    Args:
        strategy: The `tf.distribute.Strategy` to train under.
        cache_path: A `tfkd.TeacherCache` directory to train from (the
            Distiller then has no teacher), or None to run the teacher.
        callbacks: Keras callbacks of the fit.
    """
    keras.utils.set_random_seed(0)
    with strategy.scope():
        teacher = make_model("teacher", 32)
        student = make_model("student", 16)
        if cache_path:
            distiller = tfkd.Distiller(student=student)
        else:
            distiller = tfkd.Distiller(teacher=teacher, student=student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    if cache_path:
        # The cache's stream is sharded by DATA already.
        cache = TeacherCache.open(cache_path)
        dataset = cache.dataset(batch_size=GLOBAL_BATCH, shuffle=False)
    else:
        x, y = load_examples()
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        dataset = sharded_by_data(dataset.batch(GLOBAL_BATCH))
    history = distiller.fit(
        dataset, epochs=EPOCHS, verbose=0, callbacks=list(callbacks)
    )
    return student.get_weights(), np.asarray(history.history["loss"])


def build_cache(path):
    """Builds the teacher cache the `--cache` runs read (seeded teacher)."""
    keras.utils.set_random_seed(0)
    teacher = make_model("teacher", 32)
    x, y = load_examples()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    return TeacherCache.build(teacher, dataset, path, verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--cache", required=True, help="a TeacherCache built by build_cache"
    )
    parser.add_argument(
        "--reference",
        choices=("online", "cached"),
        default=None,
        help="Then also run this distillation in this process alone.",
    )
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="Give the online run a StudentCheckpoint under this directory.",
    )
    args = parser.parse_args(argv)

    tf.config.experimental.enable_op_determinism()
    if os.environ.get("TF_CONFIG"):
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    results = {"replicas": strategy.num_replicas_in_sync}
    online_callbacks = []
    if args.checkpoint_dir:
        task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
        path = os.path.join(
            args.checkpoint_dir, f"worker{task.get('index', 0)}", "student.keras"
        )
        online_callbacks.append(tfkd.callbacks.StudentCheckpoint(path))
    runs = [
        ("online", strategy, None, online_callbacks),
        ("cached", strategy, args.cache, ()),
    ]
    if args.reference:
        # Outside any strategy scope: the default, single-process strategy.
        cache_path = args.cache if args.reference == "cached" else None
        default = tf.distribute.get_strategy()
        runs.append((f"{args.reference}_single", default, cache_path, ()))
    for name, run_strategy, cache_path, callbacks in runs:
        weights, losses = distil(run_strategy, cache_path, callbacks)
        results[f"{name}_loss"] = losses
        for index, weight in enumerate(weights):
            results[f"{name}_weight_{index}"] = weight
    np.savez(args.out, **results)


if __name__ == "__main__":
    main()
