"""Measures what a teacher cache costs: bytes, build speed, memory; projects ImageNet.

The numbers of the teacher-cache guide's "What a cache costs"
(docs/guides/teacher-cache.md; issue #17, item 5). Run:

    PYTHONPATH=. python scripts/cache_scale.py --out benchmarks/results/cache_scale/results.json

About 4 minutes on 2 shared CPU cores; `--preset smoke` runs in seconds.
What it measures, on this machine:

1. Bytes per example on disk (`du`-style: every file, metadata included)
   of a 10,000-example Fashion-MNIST cache: dense float16 logits and
   top-k, with and without inputs.
2. Build throughput (examples/s, median of `--repeats` builds) of one
   worker with the stated teacher (`benchmarks.models.teacher_cnn`, width
   16, random weights: throughput does not depend on training), with and
   without inputs; and per worker when 1 or 2 processes build the shards
   of one cache at the same time (each in its own subprocess).
3. Resident memory of a subprocess that builds, and of one that trains a
   small student for an epoch (from `dataset()` and from `attach()`): its
   RSS before the work (TensorFlow imported, teacher built, data loaded),
   the peak RSS during the work (VmRSS sampled every 10 ms) and
   `ru_maxrss` (the process's lifetime peak, which TensorFlow's start-up
   can dominate).
4. At ImageNet size (224x224x3 inputs, 1,000 classes, synthetic data,
   a near-free teacher: global pooling + one Dense layer) the bytes per
   example and the throughput of the cache machinery itself (encode, hash,
   write), from which the cost of a 1.28 M x 1,000 cache per worker count
   is projected (not measured: the teacher's own inference time, which
   dominates for a real ImageNet teacher, must be added).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

PRESETS = {
    "full": {"examples": 10_000, "repeats": 3, "imagenet_examples": 256},
    "smoke": {"examples": 600, "repeats": 1, "imagenet_examples": 16},
}
BATCH = 250
TEACHER_WIDTH = 16
TOP_K_FMNIST = 3
TOP_K_IMAGENET = 10
IMAGENET_EXAMPLES = 1_281_167
IMAGENET_CLASSES = 1000


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: F401
    import tensorflow as tf

    return tf


def fashion_mnist_pipeline(examples, batch=BATCH):
    """The first `examples` Fashion-MNIST training images, in [0, 1]."""
    tf = _tf()
    from tfkd import data

    (x, y), _ = data.load_fashion_mnist_arrays(download=False)
    images, labels = data.preprocess(x[:examples, ..., None], y[:examples])
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def fashion_mnist_teacher():
    import keras

    from benchmarks import models

    keras.utils.set_random_seed(0)
    return models.teacher_cnn((28, 28, 1), 10, width=TEACHER_WIDTH)


def directory_bytes(path):
    """Bytes of every file under `path` (metadata included)."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def timed_build(teacher, dataset, path, **kwargs):
    """(seconds, bytes on disk) of one build."""
    from tfkd.cache import TeacherCache

    started = time.perf_counter()
    TeacherCache.build(teacher, dataset, path, verbose=0, overwrite=True, **kwargs)
    return time.perf_counter() - started, directory_bytes(path)


def measure_sizes_and_speed(examples, repeats, workdir):
    """Items 1 and 2 (one worker): bytes/example and examples/s."""
    teacher = fashion_mnist_teacher()
    dataset = fashion_mnist_pipeline(examples)
    timed_build(teacher, dataset.take(2), os.path.join(workdir, "warm"))
    configs = {
        "dense_with_inputs": {},
        "top_k_with_inputs": {"top_k": TOP_K_FMNIST},
        "dense_logits_only": {"store_inputs": False},
        "top_k_logits_only": {"store_inputs": False, "top_k": TOP_K_FMNIST},
    }
    results = {}
    for name, kwargs in configs.items():
        seconds = []
        for _ in range(repeats):
            took, size = timed_build(
                teacher, dataset, os.path.join(workdir, name), **kwargs
            )
            seconds.append(took)
        results[name] = {
            "options": kwargs,
            "bytes_on_disk": size,
            "bytes_per_example": size / examples,
            "build_seconds": seconds,
            "examples_per_second_median": examples / statistics.median(seconds),
        }
    return results


class RssSampler:
    """Samples this process's resident memory (VmRSS) in a thread."""

    def __init__(self, interval=0.01):
        import threading

        self.interval = interval
        self.peak_kb = self.read_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read_kb():
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, self.read_kb())

    def __enter__(self):
        self.before_kb = self.read_kb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.read_kb())


def child(argv):
    """One measured subprocess; prints a JSON line with its numbers."""
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=("baseline", "build", "train_dataset", "train_attach"))
    parser.add_argument("--path", required=True)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--num-shards", type=int, default=None)
    parser.add_argument("--shard-index", type=int, default=None)
    parser.add_argument("--store-inputs", type=int, default=1)
    args = parser.parse_args(argv)
    import keras

    from tfkd.cache import TeacherCache
    import tfkd

    teacher = fashion_mnist_teacher()
    dataset = fashion_mnist_pipeline(args.examples)
    out = {"task": args.task}
    sampler = RssSampler().__enter__()
    if args.task == "build":
        started = time.perf_counter()
        TeacherCache.build(
            teacher, dataset, args.path, verbose=0, overwrite=True,
            store_inputs=bool(args.store_inputs), num_shards=args.num_shards,
            shard_index=args.shard_index,
        )
        out["seconds"] = time.perf_counter() - started
        shards = args.num_shards or 1
        out["examples"] = args.examples // shards if args.shard_index is not None else args.examples
    elif args.task.startswith("train"):
        cache = TeacherCache.open(args.path, checksums=False)
        if args.task == "train_attach":
            train = cache.attach(dataset, shuffle_buffer=2048, seed=0)
        else:
            train = cache.dataset(batch_size=BATCH, seed=0)
        keras.utils.set_random_seed(1)
        from benchmarks import models

        student = models.student_cnn((28, 28, 1), 10)
        distiller = tfkd.Distiller(student=student)
        distiller.compile(optimizer="adam")
        started = time.perf_counter()
        distiller.fit(train, epochs=1, verbose=0)
        out["seconds"] = time.perf_counter() - started
    sampler.__exit__()
    out["rss_before_mb"] = sampler.before_kb / 1024
    out["peak_rss_during_mb"] = sampler.peak_kb / 1024
    # Linux reports ru_maxrss in KiB.
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _run_children(commands):
    """Starts the commands together; returns their JSON lines."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    processes = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", *command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for command in commands
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(stderr[-3000:])
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def measure_workers_and_memory(examples, repeats, workdir):
    """Items 2 (per worker) and 3 (peak memory), in subprocesses."""
    workers = {}
    for count in (1, 2):
        per_worker, walls = [], []
        for repeat in range(repeats):
            path = os.path.join(workdir, f"workers{count}-{repeat}")
            commands = [
                ["build", "--path", path, "--examples", str(examples),
                 "--store-inputs", "0", "--num-shards", str(count),
                 "--shard-index", str(index)]
                for index in range(count)
            ]
            results = _run_children(commands)
            per_worker += [r["examples"] / r["seconds"] for r in results]
            walls.append(max(r["seconds"] for r in results))
        workers[str(count)] = {
            "examples_per_second_per_worker_median": statistics.median(per_worker),
            "examples_per_second_total_median": examples / statistics.median(walls),
            "build_seconds": walls,
        }
    memory = {}
    full = os.path.join(workdir, "memory-full")
    lean = os.path.join(workdir, "memory-lean")
    for name, command in (
        ("baseline_import_and_teacher", ["baseline", "--path", full]),
        ("build_with_inputs", ["build", "--path", full]),
        ("build_logits_only", ["build", "--path", lean, "--store-inputs", "0"]),
        ("train_from_dataset", ["train_dataset", "--path", full]),
        ("train_from_attach", ["train_attach", "--path", lean]),
    ):
        (result,) = _run_children([command + ["--examples", str(examples)]])
        memory[name] = result
    return workers, memory


def measure_imagenet_size(examples, repeats, workdir):
    """Item 4: bytes and cache-machinery speed at 224x224x3 x 1,000."""
    tf = _tf()
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (examples, 224, 224, 3)) / 255.0).astype("float32")
    labels = rng.integers(0, IMAGENET_CLASSES, examples).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([
        keras.Input((224, 224, 3)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(IMAGENET_CLASSES),
    ])
    timed_build(teacher, dataset.take(1), os.path.join(workdir, "in-warm"))
    results = {}
    for name, kwargs in (
        ("dense_with_inputs", {}),
        ("dense_logits_only", {"store_inputs": False}),
        ("top_k_logits_only", {"store_inputs": False, "top_k": TOP_K_IMAGENET}),
    ):
        seconds = []
        for _ in range(repeats):
            took, size = timed_build(teacher, dataset, os.path.join(workdir, "in-" + name), **kwargs)
            seconds.append(took)
        results[name] = {
            "options": kwargs,
            "bytes_per_example": size / examples,
            "examples_per_second_median": examples / statistics.median(seconds),
        }
    return results


def project_imagenet(measured):
    """Disk and cache-machinery time of a 1.28 M x 1,000 cache, per workers."""
    per_example = {
        # inputs uint8 224*224*3 + int32 label + float16 logits.
        "dense_with_inputs": 224 * 224 * 3 + 4 + 2 * IMAGENET_CLASSES,
        "dense_logits_only": 2 * IMAGENET_CLASSES,
        # values float16 + indices int16 + one float16 fill.
        "top_k_logits_only": 4 * TOP_K_IMAGENET + 2,
    }
    projection = {}
    for name, nbytes in per_example.items():
        rate = measured[name]["examples_per_second_median"]
        projection[name] = {
            "bytes_per_example_formula": nbytes,
            "disk_gb": IMAGENET_EXAMPLES * nbytes / 1e9,
            "cache_machinery_hours_by_workers": {
                str(workers): IMAGENET_EXAMPLES / (rate * workers) / 3600
                for workers in (1, 2, 4, 8)
            },
        }
    return projection


def run(preset="full", workdir=None):
    """Runs every measurement; returns the results dict."""
    settings = PRESETS[preset]
    from benchmarks import results as results_lib

    git = results_lib.git_provenance(ROOT)
    workdir = workdir or tempfile.mkdtemp(prefix="cache-scale-")
    started = time.time()
    tf = _tf()
    import keras

    sizes = measure_sizes_and_speed(settings["examples"], settings["repeats"], workdir)
    workers, memory = measure_workers_and_memory(
        settings["examples"], settings["repeats"], workdir
    )
    imagenet = measure_imagenet_size(
        settings["imagenet_examples"], settings["repeats"], workdir
    )
    return {
        "experiment": "cache_scale",
        "preset": preset,
        "git": git,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "teacher": f"benchmarks.models.teacher_cnn((28, 28, 1), 10, width={TEACHER_WIDTH}), random weights",
        "fashion_mnist_examples": settings["examples"],
        "repeats": settings["repeats"],
        "fashion_mnist": sizes,
        "workers": workers,
        "memory": memory,
        "imagenet_size_measured": imagenet,
        "imagenet_projection": project_imagenet(imagenet),
        "seconds": time.time() - started,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--out", default=None, help="JSON file to write.")
    args = parser.parse_args(argv)
    results = run(args.preset)
    text = json.dumps(results, indent=1)
    if args.out:
        from tfkd.utils import files

        files.write_text_atomically(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
