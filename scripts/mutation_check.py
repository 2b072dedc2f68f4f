"""Checks that the test suite catches deliberately broken copies of tfkd.

Each mutation is one exact edit of one source file, standing for a
promise the README or a docstring makes (the T² factor of the soft loss,
a mid-epoch backup that restores, augmentation shared by teacher and
student, a student checkpoint written by worker 0 only, ...). For each,
the script copies the repository (tracked and untracked files, not the
ignored ones) to a temporary directory, applies the edit there, runs the
tests that name the promise against that copy, and reports which of them
failed. The checkout itself is never modified.

    python scripts/mutation_check.py                 # the four core breaks
    python scripts/mutation_check.py --all           # and the others
    python scripts/mutation_check.py cache-misaligned

A mutation is caught when every test listed as expected to catch it
fails. The four core breaks take about 4 minutes on 2 CPU cores (the
killed-and-resumed and two-worker runs are subprocesses); `--all` about 6.
Exit status: 0 when every mutation run was caught, 1 otherwise.
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One deliberate break: replace `old` (exactly once) by `new` in `path`.

    `tests` are the pytest arguments that run the tests naming the promise;
    `expected` the test ids (substrings) that must fail.
    """

    description: str
    path: str
    old: str
    new: str
    tests: tuple
    expected: tuple
    core: bool = True


MUTATIONS = {
    "no-t-squared": Mutation(
        "soft loss without the T² factor (Hinton et al., 2015)",
        "tfkd/losses.py",
        "    return (temperature**2) * kl\n",
        "    return kl\n",
        ("tests/test_losses.py",),
        ("test_losses.py::test_total_loss_matches_numpy",),
    ),
    "backup-never-restores": Mutation(
        "MidEpochBackupAndRestore saves but never restores",
        "tfkd/callbacks/backup_and_restore.py",
        "        if not os.path.exists(self._state_path):\n            return\n",
        "        return\n",
        (
            "tests/test_callbacks.py",
            "-k",
            "mid_epoch_backup_resumes",
            "tests/test_fault_tolerance.py",
        ),
        (
            "test_callbacks.py::test_mid_epoch_backup_resumes_at_the_batch",
            "test_fault_tolerance.py::test_mid_epoch_backup_resumes_at_the_batch",
        ),
    ),
    "augmentation-student-only": Mutation(
        "augmentation applied to the student's batch only",
        "tfkd/distiller.py",
        "            x, labels = self._random_view(x, labels, cached_logits)\n"
        "            inputs = {None: x, **self._views_of(inputs[None])}\n"
        "        teacher = self._teacher_outputs(inputs, cached_logits, training)\n",
        "            unviewed = x\n"
        "            x, labels = self._random_view(x, labels, cached_logits)\n"
        "            inputs = {None: x, **self._views_of(inputs[None])}\n"
        "        teacher = self._teacher_outputs(\n"
        "            {**inputs, None: unviewed}\n"
        "            if training and self.augmentation is not None else inputs,\n"
        "            cached_logits, training,\n"
        "        )\n",
        ("tests/test_distiller.py", "-k", "augmentation"),
        ("test_distiller.py::test_augmentation_is_shared",),
    ),
    "every-worker-writes": Mutation(
        "StudentCheckpoint written by every worker",
        "tfkd/callbacks/student_checkpoint.py",
        "        if not is_chief():\n            return\n",
        "",
        ("tests/test_multi_worker.py",),
        ("test_multi_worker.py::test_only_worker_0_writes_the_student_checkpoint",),
    ),
    "cache-misaligned": Mutation(
        "cached logits shifted by one row against their inputs",
        "tfkd/cache/stream.py",
        "            logits = tf.cast(gathered[2], tf.float32)  # (batch, classes)\n",
        "            logits = tf.roll(tf.cast(gathered[2], tf.float32), 1, axis=0)\n",
        ("tests/test_cache_teacher_cache.py", "-k", "cached_student"),
        ("test_cache_teacher_cache.py::test_cached_student_matches_online",),
        core=False,
    ),
    "no-loss-scaling": Mutation(
        "mixed_float16 gradients without `optimizer.scale_loss`",
        "tfkd/distiller.py",
        "            scaled = self.optimizer.scale_loss(\n"
        "                loss_values.total / _num_replicas_in_sync()\n"
        "            )\n",
        "            scaled = loss_values.total / _num_replicas_in_sync()\n",
        ("tests/test_distiller.py", "-k", "mixed_precision_trains_like_float32"),
        ("test_mixed_precision_trains_like_float32[mixed_float16]",),
        core=False,
    ),
    "losses-in-16-bits": Mutation(
        "losses computed in the compute dtype instead of float32",
        "tfkd/losses.py",
        '    return ops.cast(x, "float32") if x.dtype != "float32" else x\n',
        "    return x\n",
        ("tests/test_distiller.py", "-k", "mixed_precision_trains_like_float32"),
        ("test_mixed_precision_trains_like_float32[mixed_bfloat16]",),
        core=False,
    ),
    "guard-never-refuses": Mutation(
        "the step guard lets every batch update the weights",
        "tfkd/step_guard.py",
        "        proceed = tf.equal(code, 0)\n",
        "        proceed = tf.equal(code, code)\n",
        ("tests/test_step_guard.py", "-k", "later_batch or skip_counts"),
        (
            "test_nan_input_in_a_later_batch_raises_and_updates_nothing[eager]",
            "test_nan_input_in_a_later_batch_raises_and_updates_nothing[jit]",
            "test_nan_input_in_a_later_batch_raises_and_updates_nothing[steps_per_execution]",
            "test_skip_counts_the_batch_and_trains_on",
            "test_a_bad_label_in_a_later_batch_raises_naming_the_batch[fractional]",
        ),
        core=False,
    ),
    "guard-ignores-gradients": Mutation(
        "the step guard checks the loss but not the gradients",
        "tfkd/step_guard.py",
        "        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):\n",
        "        if False:\n",
        ("tests/test_step_guard.py", "-k", "nan_gradient"),
        ("test_a_finite_loss_with_a_nan_gradient_raises",),
        core=False,
    ),
    "guard-checks-scaled-gradients": Mutation(
        "the step guard refuses a LossScaleOptimizer's routine overflow",
        "tfkd/step_guard.py",
        "        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):\n",
        "        if True:\n",
        ("tests/test_step_guard.py", "-k", "mixed_precision"),
        ("test_mixed_precision_leaves_gradient_overflow_to_the_loss_scale",),
        core=False,
    ),
    "guard-keeps-batchnorm-update": Mutation(
        "a refused batch keeps its BatchNorm statistics",
        "tfkd/step_guard.py",
        "            for variable, value in zip(state[0], saved):\n"
        "                variable.assign(value)\n",
        "",
        ("tests/test_step_guard.py", "-k", "later_batch"),
        ("test_nan_input_in_a_later_batch_raises_and_updates_nothing[tf.function]",),
        core=False,
    ),
    "replicas-disagree": Mutation(
        "replicas decide to skip each on its own shard",
        "tfkd/step_guard.py",
        "    if context is None or context.num_replicas_in_sync == 1:\n",
        "    if True:\n",
        ("tests/test_step_guard.py", "-k", "mirrored"),
        ("test_mirrored_replicas_agree_to_skip[raise]",),
        core=False,
    ),
    "labels-not-sanitized": Mutation(
        "bad labels reach the sparse cross-entropy",
        "tfkd/step_guard.py",
        "        return tf.reshape(safe, tf.shape(labels)), (count, first)\n",
        "        return labels, (count, first)\n",
        ("tests/test_step_guard.py", "-k", "out_of_range"),
        ("test_out_of_range_integer_labels_raise_before_tensorflow_does[graph]",),
        core=False,
    ),
    "refused-batch-in-metrics": Mutation(
        "a skipped batch's NaN loss averages into the epoch's",
        "tfkd/distiller.py",
        "        if kept is not None:\n            labels, student_logits",
        "        if False:\n            labels, student_logits",
        ("tests/test_step_guard.py", "-k", "skip_counts"),
        ("test_skip_counts_the_batch_and_trains_on",),
        core=False,
    ),
    "memory-limit-from-the-file": Mutation(
        "a config's max_memory_mb raises the process-wide memory cap",
        "tfkd/memory_limit.py",
        "    return min(cap, object_limit_mb)\n",
        "    return object_limit_mb\n",
        ("tests/test_memory_limit.py",),
        (
            "test_a_hostile_keras_file_cannot_allocate_past_the_process_cap",
            "test_max_memory_mb_can_only_lower_the_cap",
        ),
        core=False,
    ),
    "term-errors-as-type-errors": Mutation(
        "Keras turns a term's ValueError into a TypeError on load",
        "tfkd/terms/base.py",
        "    @classmethod\n    def from_config(cls, config):\n",
        "    @classmethod\n    def _unused_from_config(cls, config):\n",
        ("tests/test_memory_limit.py", "-k", "hostile"),
        ("test_a_hostile_keras_file_cannot_allocate_past_the_process_cap",),
        core=False,
    ),
    "temperature-unbounded": Mutation(
        "temperatures accepted down to any float > 0",
        "tfkd/hyperparameters.py",
        "MIN_TEMPERATURE = 0.01\n",
        "MIN_TEMPERATURE = 1e-320\n",
        ("tests/test_hyperparameters.py", "-k", "refuses_temperatures"),
        ("test_distiller_refuses_temperatures_outside_the_range[1e-300-1e-300]",),
        core=False,
    ),
}


def copy_repository(destination):
    """Copies the files git knows of or would add (not ignored ones)."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, names):
        source = os.path.join(ROOT, name)
        if not os.path.isfile(source):
            continue  # deleted in the working tree
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


def apply(mutation, root):
    path = os.path.join(root, mutation.path)
    with open(path) as file:
        text = file.read()
    count = text.count(mutation.old)
    if count != 1:
        raise RuntimeError(
            f"{mutation.path}: expected the text to replace exactly once, "
            f"found it {count} times; update scripts/mutation_check.py."
        )
    with open(path, "w") as file:
        file.write(text.replace(mutation.old, mutation.new))


def run(name, mutation, python):
    """Runs the mutation's tests on a broken copy; returns (caught, failed)."""
    with tempfile.TemporaryDirectory(prefix=f"tfkd-{name}-") as root:
        copy_repository(root)
        apply(mutation, root)
        env = dict(os.environ, PYTHONPATH=root)
        where = subprocess.run(
            [python, "-c", "import tfkd; print(tfkd.__file__)"],
            cwd=root, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        if not where.startswith(root):
            raise RuntimeError(f"tfkd imported from {where}, not the copy")
        result = subprocess.run(
            [python, "-m", "pytest", "-q", "-rfE", *mutation.tests],
            cwd=root, env=env, capture_output=True, text=True,
        )
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", result.stdout, re.M)
    caught = all(
        any(expected in test for test in failed) for expected in mutation.expected
    )
    return caught, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"mutations to run, of {', '.join(MUTATIONS)}"
    )
    parser.add_argument("--all", action="store_true", help="every mutation")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(MUTATIONS))
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {list(MUTATIONS)}")
    names = args.names or [
        name for name, m in MUTATIONS.items() if args.all or m.core
    ]
    missed = []
    for name in names:
        mutation = MUTATIONS[name]
        caught, failed = run(name, mutation, args.python)
        print(f"{'caught' if caught else 'MISSED'}  {name}: {mutation.description}")
        for test in failed:
            print(f"    failed: {test}")
        if not caught:
            missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
