"""Per-epoch checkpoints that a kill at any moment leaves usable: fine-tune resumes from them.

A checkpoint folder holds

    state.json          settings, completed epochs, history, best epoch, and the names of
                        the array files below; written last, so it is the commit point
    <name>-<epoch>.npz  arrays of one epoch: the trainable weights ("last" also holds the
                        optimizer's variables; "best" is the epoch with the lowest
                        validation loss, restored at the end)

Every file is written under a temporary name, fsynced and renamed into place; array files
carry their epoch in the name and are deleted only after a newer state.json names
others. A kill before the rename of state.json leaves the previous epoch's state and
its files intact; temporary files of a killed run are ignored and removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from headstart.errors import ClassifyError
from headstart.outputs import FolderKind

STATE = "state.json"
TMP = ".tmp-"
# Only such a folder is written into or removed: its files are deleted as epochs pass.
CHECKPOINT_FOLDER = FolderKind("fine-tuning checkpoint", STATE, names=r"state\.json|"
                               r"[a-z]+-\d{4,}\.npz|\.tmp-\d+-.+",
                               legacy_keys=("epoch", "files"))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path), fsync the file, rename it to `path`, fsync the folder."""
    tmp = path.with_name(f"{TMP}{os.getpid()}-{path.name}")
    write(tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoint:
    """The checkpoint folder of one fine-tuning run."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def load(self) -> dict | None:
        """The committed state, or None when no epoch was completed.

        Raises ClassifyError when the folder holds a damaged state (it names the folder).
        """
        path = self.directory / STATE
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            for name in state["files"].values():
                if not (self.directory / name).is_file():
                    raise FileNotFoundError(name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ClassifyError(
                f"The checkpoint in '{self.directory}' is damaged ({error}); delete that folder "
                "to start the fine-tuning again."
            ) from None
        return state

    def arrays(self, state: dict, name: str) -> list[np.ndarray]:
        """The arrays saved as `name` ("last" or "best") in the committed state, in order."""
        with np.load(self.directory / state["files"][name], allow_pickle=False) as stored:
            return [stored[f"a{i}"] for i in range(len(stored.files))]

    def save(self, state: dict, arrays: dict[str, list[np.ndarray]]) -> dict:
        """Commit `state` with new array files {name: arrays}; returns the committed state.

        Array files of earlier epochs that the new state no longer names are deleted.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(TMP + "*"):
            leftover.unlink(missing_ok=True)
        files = dict(state.get("files", {}))
        written: dict[int, str] = {}  # the same list under two names is written once
        for name, values in arrays.items():
            if id(values) not in written:
                filename = f"{name}-{state['epoch']:04d}.npz"
                atomic_write(self.directory / filename, lambda tmp, values=values: _save_npz(
                    tmp, values))
                written[id(values)] = filename
            files[name] = written[id(values)]
        state = {**state, "files": files}
        atomic_write(self.directory / STATE, lambda tmp: tmp.write_text(
            json.dumps(state, indent=2) + "\n", encoding="utf-8"))
        keep = set(files.values()) | {STATE}
        for path in self.directory.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)
        return state

    def remove(self) -> None:
        """Delete the folder, if it is still a checkpoint folder and nothing else."""
        if CHECKPOINT_FOLDER.owns(self.directory):
            shutil.rmtree(self.directory, ignore_errors=True)


def _save_npz(path: Path, values: list[np.ndarray]) -> None:
    with open(path, "wb") as handle:  # a file object: np.savez would append .npz to a name
        np.savez(handle, **{f"a{i}": np.asarray(v) for i, v in enumerate(values)})
