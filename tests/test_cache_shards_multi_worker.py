"""Two processes on 127.0.0.1 build a sharded cache and train on it.

Real subprocesses (tests/shard_worker_job.py), real
`MultiWorkerMirroredStrategy` over gRPC on the loopback interface, no
mocking. Each worker builds its own shard (`shard_index="auto"` from
`TF_CONFIG`); the two shards must be disjoint and equal, array for array,
to a one-process build of the same cache, and their rows interleaved by
batch must equal an unsharded build. Each worker then trains from
`TeacherCache.open(path, shard="auto")` and must have memory-mapped only
its own shard, by tfkd's own record (`opened_shards`) and by the kernel's
(/proc/self/maps).
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfkd.cache import TeacherCache
from worker_cluster import free_ports, wait_for_all

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shard_worker_job.py")
WORKERS = 2
RUN_TIMEOUT = 420

pytestmark = pytest.mark.timeout(RUN_TIMEOUT + 120)


def _load_job():
    spec = importlib.util.spec_from_file_location("shard_worker_job", JOB)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(WORKERS)]}
    processes = []
    for index in range(WORKERS):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
            TF_CPP_MIN_LOG_LEVEL="2",
            no_proxy="127.0.0.1,localhost",
            NO_PROXY="127.0.0.1,localhost",
        )
        command = [
            sys.executable, JOB, "--cache", str(root / "cache"),
            "--out", str(root / f"w{index}.json"),
        ]
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
        )
    wait_for_all(processes, RUN_TIMEOUT)
    results = [
        json.loads((root / f"w{index}.json").read_text()) for index in range(WORKERS)
    ]
    return root, results


def test_each_worker_built_its_own_shard(run):
    root, results = run
    assert [r["worker"] for r in results] == [[0, 2], [1, 2]]
    assert [r["built"] for r in results] == [[0], [1]]
    assert sorted(os.listdir(root / "cache")) == [
        ".tfkd-owner.json",  # tfkd's marker: it made this root
        "metadata.json", "shard-00000-of-00002", "shard-00001-of-00002",
    ]


def test_two_process_shards_equal_a_one_process_build(run, tmp_path):
    root, _ = run
    job = _load_job()
    one = TeacherCache.build(
        job.seeded_teacher(), job.pipeline(), str(tmp_path / "one"),
        num_shards=2, verbose=0,
    )
    plain = TeacherCache.build(
        job.seeded_teacher(), job.pipeline(), str(tmp_path / "plain"), verbose=0
    )
    two = TeacherCache.open(str(root / "cache"))
    assert two.num_examples == one.num_examples == job.EXAMPLES
    halves = []
    for index in range(2):
        mine = TeacherCache.open(str(root / "cache"), shard=(index, 2)).read()
        reference = TeacherCache.open(str(tmp_path / "one"), shard=(index, 2)).read()
        for a, b in zip(mine, reference):
            np.testing.assert_array_equal(a, b)
        halves.append(mine)
    # Disjoint, and together the unsharded cache: batch b is in shard b % 2.
    x, y, logits = plain.read()
    batches = [slice(s, s + job.BUILD_BATCH) for s in range(0, job.EXAMPLES, job.BUILD_BATCH)]
    for number, rows in enumerate(batches):
        shard, local = number % 2, number // 2
        local_rows = slice(local * job.BUILD_BATCH, (local + 1) * job.BUILD_BATCH)
        for part, whole in zip(halves[shard], (x, y, logits)):
            np.testing.assert_array_equal(part[local_rows], whole[rows])


def test_each_worker_read_only_its_own_shard(run):
    _, results = run
    for index, result in enumerate(results):
        own = f"shard-{index:05d}-of-00002"
        assert result["opened_shards"] == [own]
        assert result["mapped"], "the worker mapped no cache file"
        assert all(path.startswith(own + os.sep) for path in result["mapped"]), result["mapped"]


def test_the_workers_trained_one_student_together(run):
    _, results = run
    assert [r["replicas"] for r in results] == [WORKERS] * 2
    for a, b in zip(results[0]["weights"], results[1]["weights"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.isfinite(r["loss"]).all() for r in results)
