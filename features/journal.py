"""Grow a store safely: committed part files while extracting, one finishing step at the end.

A running extraction never modifies `features.h5`. Rows are buffered and committed
every few hundred images as `features.h5.parts/part-NNNNNN.h5`, each written under a
temporary name and renamed into place. A kill at any moment therefore loses at most
the uncommitted buffer, which the next run recomputes. When every image is done,
`headstart.features.stitch.consolidate` turns the old store and the parts into the new
`features.h5` (again via rename) and only then deletes the parts; it is idempotent, so
a kill between the rename and the deletion is harmless.

Each part file is itself a valid store (the same layout), so the records of a store,
its parts, or the shards of a sharded run are all read the same way: `read_records`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

import numpy as np

from headstart.bulk import paused_gc
from headstart.errors import StoreError
from headstart.features import schema
from headstart.features.reader import Index, open_h5, part_files, parts_dir, read_index
from headstart.features.store_file import write_store

PART_PATTERN = re.compile(r"part-(\d+)\.h5$")


class Entry(NamedTuple):
    """One image file as an extraction found it: what the store records besides its row."""

    path: str  # relative to the image folder, '/'-separated
    sha256: str  # hex; "" when the file could not be read at all
    label: str | None = None  # class name; None in unlabelled stores
    split: str = ""  # split given by the folder layout, or ""
    size: int = -1  # bytes when read
    mtime_ns: int = -1  # modification time when read


class Record(NamedTuple):
    """Where the latest result for one image path lives (a tuple: a store holds millions)."""

    source: int  # index into the list of store files
    row: int | None  # row in that file's `features`, or None for a skipped file
    sha256: str
    reason: str | None = None
    label: str | None = None
    split: str = ""
    size: int = -1
    mtime_ns: int = -1

    def entry(self, path: str) -> Entry:
        return Entry(path, self.sha256, self.label, self.split, self.size, self.mtime_ns)


def store_files(store: str | Path) -> list[Path]:
    """The finished store (if any) followed by its committed parts, oldest first."""
    store = Path(store)
    return ([store] if store.exists() else []) + part_files(store)


def recorded_precision(store: str | Path, *, writing_after: bool = True
                       ) -> tuple[str, Path] | None:
    """(precision, file) the rows of `store` were computed in, from its first file (the
    store, else its first committed part); None for a store with neither.

    Every file of a store has the same identity (read_records refuses others), so the
    first is the store's record. Raises StoreError or StoreBusyError as open_h5 does
    (writing_after: the caller was about to write; the message says nothing was changed).
    """
    files = store_files(store)
    if not files:
        return None
    with open_h5(files[0], writing_after=writing_after) as handle:
        precision = handle.attrs.get("precision", schema.IDENTITY_DEFAULTS["precision"])
    return (precision.decode() if isinstance(precision, bytes) else str(precision)), files[0]


class Records(dict):
    """Latest record per path (dict: path -> Record), and the files they were read from,
    each with its (inode, size, mtime_ns) when read: a file rewritten since under the same
    name (a store after consolidate, a part number used again) does not match."""

    def __init__(self, files: Sequence[Path] = ()):
        super().__init__()
        self.files = [(Path(f), _stamp(f)) for f in files]


def _stamp(file: Path) -> tuple[int, int, int]:
    try:
        info = os.stat(file)
    except OSError:
        return (-1, -1, -1)
    return info.st_ino, info.st_size, info.st_mtime_ns


@paused_gc
def read_records(files: Sequence[Path], identity: schema.Identity | None = None,
                 label_source: str | None = None, *, writing_after: bool = False,
                 known: Records | None = None) -> Records:
    """Latest record per path across `files` (later files win).

    known: records already read from the first files of `files` (the same paths, in the
    same order, unchanged since: same inode, size and modification time): only the
    files after them are read, so a run reads its store's index once for planning and
    finishing. Any other `known` is ignored and everything is read.
    Raises StoreError for files made with another identity or label source, and
    StoreBusyError for a file another program holds open (writing_after: the caller was
    about to write, so the message says nothing was changed).
    """
    files = list(files)
    records = Records(files)
    first = 0
    if known is not None and known.files == records.files[:len(known.files)]:
        records.update(known)
        first = len(known.files)
    for source, file in enumerate(files[first:], start=first):
        with open_h5(file, writing_after=writing_after) as handle:
            index = read_index(handle)
        if identity is not None and index.identity != identity:
            raise StoreError(_mismatch_message(file, index.identity, identity, index.attrs))
        if label_source is not None and (schema.label_source_kind(index.label_source)
                                         != schema.label_source_kind(label_source)):
            raise StoreError(
                f"'{file}' takes its labels from {index.label_source}, but this run takes them "
                f"from {label_source}; to add to it, run with "
                f"{schema.label_source_option(index.label_source)}, as it was made, or write "
                "to another -o file."
            )
        records.update(index_records(index, source))
    return records


@paused_gc
def index_records(index: Index, source: int) -> dict[str, Record]:
    """The record of every row and skipped file of one file's index (see read_index)."""
    n = len(index.paths)
    splits = index.splits or repeat("", n)
    sizes = index.sizes.tolist() if index.sizes is not None else repeat(-1, n)
    mtimes = index.mtimes.tolist() if index.mtimes is not None else repeat(-1, n)
    # One C-level pass (map over columns), not a Python loop: a store holds millions.
    records = dict(zip(index.paths, map(Record._make, zip(
        repeat(source, n), range(n), index.hashes, repeat(None, n), index.label_names(),
        splits, sizes, mtimes, strict=True)), strict=True))
    for skipped in index.skipped:
        records[skipped.path] = Record(source, None, skipped.sha256, skipped.reason,
                                       size=skipped.size, mtime_ns=skipped.mtime_ns)
    return records


def _mismatch_message(file: Path, found: schema.Identity, wanted: schema.Identity,
                      attrs: dict | None = None) -> str:
    """The store's settings against this run's, and the options that continue the store."""
    differs = [key for key in schema.IDENTITY_KEYS if getattr(found, key) != getattr(wanted, key)]
    pairs = "; ".join(f"{key}: the store's {getattr(found, key)!r}, this run's "
                      f"{getattr(wanted, key)!r}" for key in differs)
    options = [option for key in differs if (option := _option_for(key, found, attrs or {}))]
    if options:
        advice = f"to add to it, run with {' '.join(dict.fromkeys(options))}"
        if differs == ["precision"]:
            advice += (" (or leave out --precision: its default, auto, follows the store's "
                       f"{found.precision})")
    else:
        advice = "to add to it, run with the settings it was made with (features-info lists them)"
    return (f"'{file}' holds features made differently ({pairs}); {advice}, or write to "
            "another -o file.")


def _option_for(key: str, found: schema.Identity, attrs: dict) -> str | None:
    """The extract-features option that reproduces the store's `key`, where there is one."""
    if key == "weights":
        if found.weights.startswith("none (seed "):
            return f"--weights none --seed {found.weights[len('none (seed '):-1]}"
        if found.weights == "imagenet":
            return "--weights imagenet"
        path = attrs.get("weights_path") or ""
        return (f"--weights {path}" if path else
                f"--weights <the weights file with {found.weights}>")
    if key in ("model", "input_size", "preprocessing", "resize"):
        return f"--backbone {found.model}"
    if key in ("layer", "pooling"):
        return f"--layer {found.layer}"
    if key in ("dtype", "precision"):
        return f"--{key} {getattr(found, key)}"
    return None


def remove_stale_temporaries(store: str | Path) -> None:
    """Delete temporary files that a killed writer left behind (call while holding the lock)."""
    store = Path(store)
    candidates = list(store.parent.glob(f".{store.name}.tmp-*"))
    if parts_dir(store).is_dir():
        candidates += list(parts_dir(store).glob(".part-*.tmp-*"))
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def index_columns(entries: Sequence[Entry], *, given_splits: bool) -> dict:
    """The write_index keyword arguments for rows described by `entries`, in order."""
    columns = {
        "paths": [e.path for e in entries], "hashes": [e.sha256 for e in entries],
        "labels": [e.label for e in entries], "sizes": [e.size for e in entries],
        "mtimes": [e.mtime_ns for e in entries],
    }
    if given_splits:
        columns["splits"] = [e.split for e in entries]
    return columns


class PartWriter:
    """Buffer extracted rows and commit them as part files of `flush_rows` images.

    classes: the class names that labels index into; given_splits: write each row's
    given split (pre-split layouts).
    """

    def __init__(self, store: str | Path, *, identity: schema.Identity, classes: Sequence[str],
                 attrs: dict, flush_rows: int = 256, given_splits: bool = False):
        self.store = Path(store)
        self.identity, self.classes, self.attrs = identity, list(classes), attrs
        self.flush_rows = flush_rows
        self.given_splits = given_splits
        self.committed_rows = 0
        existing = [int(m.group(1)) for p in part_files(store)
                    if (m := PART_PATTERN.search(p.name))]
        self._next_part = max(existing, default=-1) + 1
        self._rows: list[np.ndarray] = []
        self._entries: list[Entry] = []
        self._skipped: list[schema.Skipped] = []

    @property
    def pending(self) -> int:
        return len(self._entries) + len(self._skipped)

    def add_rows(self, rows: np.ndarray, entries: Sequence[Entry]) -> None:
        """rows: float, shape (len(entries), dim). Commits when the buffer is full."""
        self._rows.append(np.asarray(rows))
        self._entries += entries
        if len(self._entries) >= self.flush_rows:
            self.commit()

    def add_skipped(self, entry: Entry, reason: str) -> None:
        self._skipped.append(schema.Skipped(entry.path, reason, entry.sha256, entry.size,
                                            entry.mtime_ns))

    def commit(self) -> None:
        """Write the buffer as the next part file; the buffer is kept if writing fails."""
        if not self.pending:
            return
        directory = parts_dir(self.store)
        directory.mkdir(exist_ok=True)
        dim = self._rows[0].shape[1] if self._rows else 0
        rows = np.concatenate(self._rows) if self._rows else np.zeros((0, max(dim, 1)), np.float32)
        write_store(
            directory / f"part-{self._next_part:06d}.h5",
            features=rows, classes=self.classes, identity=self.identity, skipped=self._skipped,
            attrs=self.attrs, in_memory=True,
            **index_columns(self._entries, given_splits=self.given_splits),
        )
        self._next_part += 1
        self.committed_rows += len(self._entries)
        self._rows, self._entries, self._skipped = [], [], []


def read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for any order of distinct rows, as few contiguous reads as possible."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    runs = np.split(ordered, np.flatnonzero(np.diff(ordered) != 1) + 1)
    data = np.concatenate([dataset[run[0]:run[-1] + 1] for run in runs])
    result = np.empty_like(data)
    result[order] = data
    return result
