"""`MidEpochBackupAndRestore`: resume an interrupted epoch where it stopped.

`keras.callbacks.BackupAndRestore(save_freq=N)` (Keras 3.12) backs up
every N batches but restores only the epoch number: after a crash it
re-runs the interrupted epoch from its first batch, on weights that have
already seen part of it, so the result differs from an uninterrupted run.
With `save_freq="epoch"` the result is exact but a crash loses up to a
whole epoch. This callback backs up every N batches *and* resumes at the
batch it reached, and commits each backup atomically.
"""

import os

import keras

from tfkd import _keras_compat
from tfkd.callbacks import backup_files
from tfkd.utils import files


def seed_states(model):
    """The model's random-seed state variables (Keras `SeedGenerator`s).

    `model.save_weights` (Keras 3.12) stores weights and optimizer state
    but not these, so a resumed `Dropout` would draw other masks.
    """
    weights = {id(weight) for weight in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class MidEpochBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up training every N batches and resumes at the same batch.

    A drop-in replacement for `keras.callbacks.BackupAndRestore` for long
    epochs (ImageNet-sized distillation, preemptible machines). Each backup
    is the model's weights and optimizer state (for a Distiller: student
    and optimizer; the frozen teacher is stored too) in a new
    `state-<step>.weights.h5`, followed by one atomic rewrite of
    `training_state.json` naming it with the epoch and the number of
    batches done and the random-seed states (which `save_weights` leaves
    out, so `keras.callbacks.BackupAndRestore` resumes `Dropout` with other
    masks): a process killed at any moment resumes from one consistent
    backup.

    On restart, `fit` resumes at the saved epoch and fast-forwards the
    input pipeline past the batches already trained on (it reads them
    without training), so the weights end as in an uninterrupted run when
    the batches come in the same order after the restart: a dataset that
    is not reshuffled, or reshuffled with a seed that depends on the epoch
    only. Random layers must draw from Keras seed generators (the default;
    their states are saved in the backup). The logged metrics of the
    resumed epoch cover only the batches run after the restart.

    Under `MultiWorkerMirroredStrategy`, give each worker its own
    `backup_dir` (every worker saves and restores its own copy).

    A backup is read back as untrusted input (`backup_files`): a state
    that cannot belong to this run (an epoch beyond `epochs`, more batches
    done than an epoch has, a weights file outside the directory, a link,
    a digest that does not match, malformed seed states) is refused with
    a `ValueError` before any weight changes. Only tfkd's own files in
    `backup_dir` are ever deleted, and a `backup_dir` holding anything
    else is refused before training starts.

    Args:
        backup_dir: Directory of the backups, used by nothing else: absent,
            empty, or holding a backup of this callback.
        save_freq: `"epoch"`, or an int N: back up every N batches.
            Defaults to `"epoch"`.
        delete_checkpoint: Whether to delete the backups when `fit` ends
            normally. Defaults to `True`.

    Raises:
        ValueError: for an empty `backup_dir` or a bad `save_freq`; from
            `fit`, for a backup that cannot belong to the run.
        tfkd.utils.ownership.ForeignPathError: from `fit`, for a
            `backup_dir` holding entries tfkd did not write.

    Example:

    >>> import numpy as np, keras, tfkd, tempfile
    >>> x, y = np.random.rand(64, 8).astype("float32"), np.arange(64) % 3
    >>> def dense(): return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = tfkd.Distiller(teacher=dense(), student=dense())
    >>> distiller.compile(optimizer="adam")
    >>> backup = tfkd.callbacks.MidEpochBackupAndRestore(
    ...     tempfile.mkdtemp(), save_freq=2)
    >>> _ = distiller.fit(x, y, batch_size=8, epochs=2, verbose=0,
    ...                   callbacks=[backup])
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(
            backup_dir, save_freq=save_freq, delete_checkpoint=delete_checkpoint
        )
        self._state_path = os.path.join(backup_dir, backup_files.STATE_FILE)
        self._batches_to_skip = 0
        self._resume_epoch = None
        self._steps_done = 0
        self._skipped_this_step = False
        self._marked = False

    # -- restore -------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._batches_to_skip = 0
        self._resume_epoch = None
        self._steps_done = 0
        self._skipped_this_step = False
        self._marked = False
        # Before anything is read or written: a `backup_dir` pointed at a
        # user's folder loses nothing, and holds no link to read through.
        backup_files.check_backup_dir(self.backup_dir)
        if not os.path.exists(self._state_path):
            return
        if not self.model.built:
            raise ValueError(
                "To resume with MidEpochBackupAndRestore the model must be "
                "built before fit(). Received: an unbuilt model "
                f"{self.model.name!r}; call it on a batch first."
            )
        variables = seed_states(self.model)
        # Every check passes before any weight or seed changes.
        params = self.params or {}
        state = backup_files.read_state(
            self.backup_dir,
            epochs=params.get("epochs"),
            steps=params.get("steps"),
            seed_variables=variables,
        )
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        # `load_weights` takes a path, not the descriptor `read_state`
        # hashed: a file swapped in between needs write access to the
        # backup directory during `fit`, which could rewrite the state as
        # well, so it is outside what the checks guard against (backups
        # from elsewhere, links, truncation, corruption).
        self.model.load_weights(state.weights)
        # Matched by order: layer names get numbered differently when a
        # model is rebuilt in the same process.
        for variable, value in zip(variables, state.seed_states):
            variable.assign(value)
        _keras_compat.set_initial_epoch(self.model, state.epoch)
        self._resume_epoch = state.epoch
        self._batches_to_skip = state.batches_done
        self._steps_done = state.steps_done
        self._current_epoch = state.epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._resume_epoch or self._batches_to_skip <= 0:
            return
        model = self.model
        train_function = model.train_function
        batches_per_call = model.steps_per_execution or 1
        batches_done = self._batches_to_skip

        def skip(iterator):
            # Reads the batches the interrupted run already trained on, so
            # the next real step sees the batch it would have seen.
            for _ in range(min(batches_per_call, self._batches_to_skip)):
                try:
                    next(iterator)
                except StopIteration:
                    # Keras would end the epoch quietly, having trained
                    # nothing: the backup is not of this data.
                    raise self._ran_out(epoch, batches_done) from None
                self._batches_to_skip -= 1
            self._skipped_this_step = True
            if self._batches_to_skip <= 0:
                model.train_function = train_function
            return model.get_metrics_result()

        model.train_function = skip

    def _ran_out(self, epoch, batches_done):
        seen = batches_done - self._batches_to_skip
        return ValueError(
            f"Invalid backup in {self.backup_dir!r}: field 'batches_done' "
            f"of {backup_files.STATE_FILE}. Expected at most the {seen} "
            f"batches epoch {epoch} has. Received: {batches_done}. The "
            "backup cannot belong to this run; move the directory away to "
            "start afresh."
        )

    # -- save ----------------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        if self._skipped_this_step:
            # Fast-forwarding: the weights already include this batch.
            self._skipped_this_step = False
            self._last_batch_seen = batch
            return
        self._steps_done += 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._resume_epoch = None
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not self._marked:
            # Says tfkd made the directory; written once per `fit`.
            backup_files.mark_backup_dir(self.backup_dir)
            self._marked = True
        epoch_done = self._last_batch_seen == 0 and self.save_freq == "epoch"
        name = backup_files.weights_name(self._steps_done)
        path = backup_files.check_weights_target(self.backup_dir, name)
        self.model.save_weights(path, overwrite=True)
        files.fsync_file(path)
        files.write_json_atomically(
            self._state_path,
            {
                "epoch": self._current_epoch,
                "batches_done": 0 if epoch_done else self._last_batch_seen + 1,
                "steps_done": self._steps_done,
                "weights": name,
                "weights_sha256": backup_files.sha256_of_weights(
                    self.backup_dir, name
                ),
                "seed_states": [
                    (v.path, keras.ops.convert_to_numpy(v).tolist())
                    for v in seed_states(self.model)
                ],
            },
        )
        # The new state's rename must be on disk before the weights the
        # old state names go: a power cut in between must not leave a
        # state naming a deleted file.
        files.fsync_directory(self.backup_dir)
        backup_files.remove_old_weights(self.backup_dir, keep=name)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            backup_files.remove_backup(self.backup_dir)
