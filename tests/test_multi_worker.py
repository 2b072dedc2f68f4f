"""Two worker processes under MultiWorkerMirroredStrategy equal one process.

The test starts two workers on 127.0.0.1 (free ports, `TF_CONFIG`), each
running tests/multi_worker_job.py: a tiny distillation, online and from a
`tfkd.TeacherCache`, under `tf.distribute.MultiWorkerMirroredStrategy`
with collective ops over gRPC on the loopback interface. Each worker then
runs one of the two distillations alone under the default strategy. The
students must agree with the single-process ones to 1e-6 (the summation
order of the gradient all-reduce differs, so not bit for bit; observed
differences are about 3e-8) and be identical on both workers. Each
worker's online run also carries a `tfkd.callbacks.StudentCheckpoint`
with its own path: only worker 0 may write.

The global batch is 32; with the DATA auto-shard policy each worker gets a
16-example slice of every global batch. That the results agree also
checks the Distiller's division of the loss by `num_replicas_in_sync`: a
missing or doubled division would change the step size by 2x.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfkd.callbacks import checkpointing
from worker_cluster import free_ports, wait_for_all

JOB = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "multi_worker_job.py"
)
WORKERS = 2
TOLERANCE = 1e-6
# Three TensorFlow start-ups and six tiny fits on a shared 2-core machine.
RUN_TIMEOUT = 420

pytestmark = pytest.mark.timeout(RUN_TIMEOUT + 60)


def start_workers(tmp_path, cache_path, checkpoint_dir):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(WORKERS)]}
    processes = []
    for index in range(WORKERS):
        task = {"type": "worker", "index": index}
        config = {"cluster": cluster, "task": task}
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(config),
            TF_CPP_MIN_LOG_LEVEL="2",
            # gRPC must not send loopback traffic to an HTTP proxy.
            no_proxy="127.0.0.1,localhost",
            NO_PROXY="127.0.0.1,localhost",
        )
        out = str(tmp_path / f"w{index}.npz")
        command = [sys.executable, JOB, "--out", out, "--cache", cache_path]
        # Each worker then runs one single-process reference.
        command += ["--reference", ("online", "cached")[index]]
        command += ["--checkpoint-dir", checkpoint_dir]
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("multi_worker")


@pytest.fixture(scope="module")
def results(run_dir):
    tmp_path = run_dir
    # Built here, once; both workers open the same directory, as workers
    # on several machines open a shared or copied one.
    spec = importlib.util.spec_from_file_location("multi_worker_job", JOB)
    multi_worker_job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(multi_worker_job)
    cache_path = str(tmp_path / "cache")
    multi_worker_job.build_cache(cache_path)
    wait_for_all(
        start_workers(tmp_path, cache_path, str(tmp_path / "checkpoints")),
        RUN_TIMEOUT,
    )
    return [np.load(tmp_path / f"w{index}.npz") for index in range(WORKERS)]


def weights(result, name):
    prefix = f"{name}_weight_"
    count = len([key for key in result.files if key.startswith(prefix)])
    assert count == 4  # two Dense layers: kernel and bias each
    return [result[f"{name}_weight_{index}"] for index in range(count)]


def test_every_worker_trains_two_replicas(results):
    assert [int(result["replicas"]) for result in results] == [WORKERS] * 2


@pytest.mark.parametrize("mode, worker", [("online", 0), ("cached", 1)])
def test_two_workers_match_one_process(results, mode, worker):
    result = results[worker]  # the worker that ran this reference
    for multi, single in zip(
        weights(result, mode), weights(result, f"{mode}_single")
    ):
        np.testing.assert_allclose(multi, single, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(
        result[f"{mode}_loss"],
        result[f"{mode}_single_loss"],
        rtol=0,
        atol=TOLERANCE,
    )


@pytest.mark.parametrize("mode", ["online", "cached"])
def test_workers_hold_the_same_student(results, mode):
    worker0, worker1 = results
    for a, b in zip(weights(worker0, mode), weights(worker1, mode)):
        np.testing.assert_array_equal(a, b)


def test_training_moved_the_student(results):
    # Guards against a vacuous pass: both runs must have learned.
    losses = results[0]["online_single_loss"]
    assert losses[-1] < losses[0]


def test_only_worker_0_writes_the_student_checkpoint(results, run_dir):
    # Each worker had its own candidate path: worker 1's stays unwritten.
    checkpoints = run_dir / "checkpoints"
    assert sorted(os.listdir(checkpoints / "worker0")) == [
        "student.keras",
        "student.keras.sha256.json",
    ]
    assert not (checkpoints / "worker1").exists()
    student = checkpointing.load_model_verified(
        str(checkpoints / "worker0" / "student.keras")
    )
    for saved, trained in zip(student.get_weights(), weights(results[0], "online")):
        np.testing.assert_array_equal(saved, trained)
