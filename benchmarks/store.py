"""Partial results on disk, so a run that dies part-way can resume.

Each finished unit of work (the teacher, one seed of one student arm, the
AutoKeras search) is written as its own JSON file the moment it finishes,
atomically (temporary file, then `os.replace`), and models beside it. A
rerun of the same command loads what is there and does only the rest;
`--fresh` starts over.
"""

import json
import pathlib
import shutil

from tfkd.utils import files


class ResultStore:
    """Finished pieces of one benchmark run, under `directory`.

    Args:
        directory: The run's output directory.
        fresh: Delete earlier partial results first. Defaults to `False`.
    """

    def __init__(self, directory, fresh=False):
        self.directory = pathlib.Path(directory)
        self.partial = self.directory / "partial"
        self.models = self.directory / "models"
        if fresh:
            shutil.rmtree(self.partial, ignore_errors=True)
            shutil.rmtree(self.models, ignore_errors=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.models.mkdir(parents=True, exist_ok=True)

    def _path(self, key):
        return self.partial / f"{key}.json"

    def load(self, key):
        """The record saved under `key`, or `None` (also for a bad file)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with open(path) as handle:
                return json.load(handle)
        except (OSError, json.JSONDecodeError):
            return None  # a torn or foreign file: redo that piece

    def save(self, key, record):
        """Writes `record` under `key` atomically."""
        files.write_json_atomically(self._path(key), record, indent=1)

    def model_path(self, arm_id):
        """Where the `.keras` file of `arm_id` lives."""
        return self.models / f"{arm_id}.keras"
