"""One worker of a sharded build, then of training on its own shards.

Run by tests/test_cache_shards_multi_worker.py, two at a time:

    TF_CONFIG='{"cluster": {"worker": [...]}, "task": {...}}' \\
        python tests/shard_worker_job.py --cache DIR --out W.json

Each worker builds its own shard of a 2-shard cache of 256 Fashion-MNIST
images (`shard_index="auto"`, from `TF_CONFIG`), waits for the other's
shard, then trains a tiny student for one epoch under
`tf.distribute.MultiWorkerMirroredStrategy` (collective ops over gRPC on
127.0.0.1) from `cache.dataset()`, the cache opened on its own shard
(`shard="auto"`). It reports what it built, the shard directories the
cache memory-mapped (`opened_shards`), every cache file the process has
mapped according to /proc/self/maps (the kernel's record, not tfkd's),
and the student's weights.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfkd  # noqa: E402
from tfkd.cache import TeacherCache  # noqa: E402
from tfkd.cache import shards  # noqa: E402

# The same 256 images and tiny models as the training job's.
from multi_worker_job import EXAMPLES, load_examples, make_model  # noqa: E402, F401

BUILD_BATCH = 32
GLOBAL_BATCH = 32
NUM_SHARDS = 2


def pipeline():
    x, y = load_examples()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BUILD_BATCH)


def seeded_teacher():
    keras.utils.set_random_seed(0)
    return make_model("teacher", 32)


def mapped_cache_files(root):
    """Files under `root` this process has memory-mapped (/proc/self/maps)."""
    root = os.path.realpath(root)
    mapped = set()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip().startswith(root):
                mapped.add(os.path.relpath(fields[5].strip(), root))
    return sorted(mapped)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    # Collective ops must be configured before any other TensorFlow op.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index, count = shards.worker_from_tf_config()
    cache = TeacherCache.build(
        seeded_teacher(), pipeline(), args.cache, num_shards=NUM_SHARDS,
        shard_index="auto", shard_timeout=300, verbose=0,
    )
    built = cache.shard_indices
    cache = TeacherCache.open(args.cache, shard="auto", verbose=0)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        student = make_model("student", 16)
        distiller = tfkd.Distiller(student=student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(
        cache.dataset(batch_size=GLOBAL_BATCH, shuffle=False), epochs=1, verbose=0
    )
    result = {
        "worker": [index, count],
        "replicas": strategy.num_replicas_in_sync,
        "built": built,
        "opened_shards": [os.path.basename(p) for p in cache.opened_shards],
        "mapped": mapped_cache_files(args.cache),
        "loss": history.history["loss"],
        "weights": [w.tolist() for w in student.get_weights()],
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
