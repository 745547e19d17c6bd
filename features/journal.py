"""Grow a store safely: committed part files while extracting, one consolidation at the end.

A running extraction never modifies `features.h5`. Rows are buffered and committed
every few hundred images as `features.h5.parts/part-NNNNNN.h5`, each written under a
temporary name and renamed into place. A kill at any moment therefore loses at most
the uncommitted buffer, which the next run recomputes. When every image is done,
`consolidate` merges the old store and the parts into a new `features.h5` (again via
rename), sorted by path, so an interrupted-and-resumed run ends bit-identical to an
uninterrupted one, and only then deletes the parts. Consolidating is idempotent: if
it is interrupted after the rename, the next run merges the same rows again and
de-duplicates them by path.

Each part file is itself a valid store, so shards written by separate processes can
later be stitched the same way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import schema
from .reader import StoreError, open_h5, part_files, parts_dir, read_index
from .store_file import atomic_store, create_layout, write_index, write_store

PART_PATTERN = re.compile(r"part-(\d+)\.h5$")


@dataclass(frozen=True)
class Record:
    """Where the latest result for one image path lives."""

    source: int  # index into the list of store files
    row: int | None  # row in that file's `features`, or None for a skipped file
    sha256: str
    reason: str | None = None


def store_files(store: str | Path) -> list[Path]:
    """The consolidated store (if any) followed by its committed parts, oldest first."""
    store = Path(store)
    return ([store] if store.exists() else []) + part_files(store)


def read_records(files: Sequence[Path],
                 identity: schema.Identity | None = None) -> dict[str, Record]:
    """Latest record per path across `files` (later files win), refusing other identities."""
    records: dict[str, Record] = {}
    for source, file in enumerate(files):
        with open_h5(file) as handle:
            index = read_index(handle)
        if identity is not None and index.identity != identity:
            raise StoreError(_mismatch_message(file, index.identity, identity))
        for row, (path, sha) in enumerate(zip(index.paths, index.hashes, strict=True)):
            records[path] = Record(source, row, sha)
        for path, reason, sha in index.skipped:
            records[path] = Record(source, None, sha, reason)
    return records


def _mismatch_message(file: Path, found: schema.Identity, wanted: schema.Identity) -> str:
    return (
        f"'{file}' holds features made differently ({'; '.join(found.differences(wanted))}); "
        "write to another -o file or delete it to start over."
    )


def remove_stale_temporaries(store: str | Path) -> None:
    """Delete temporary files that a killed writer left behind (call while holding the lock)."""
    store = Path(store)
    candidates = list(store.parent.glob(f".{store.name}.tmp-*"))
    if parts_dir(store).is_dir():
        candidates += list(parts_dir(store).glob(".part-*.tmp-*"))
    for path in candidates:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class PartWriter:
    """Buffer extracted rows and commit them as part files of `flush_rows` images."""

    def __init__(self, store: str | Path, *, identity: schema.Identity, classes: Sequence[str],
                 attrs: dict, flush_rows: int = 256):
        self.store = Path(store)
        self.identity, self.classes, self.attrs = identity, list(classes), attrs
        self.flush_rows = flush_rows
        self.committed_rows = 0
        existing = [int(m.group(1)) for p in part_files(store)
                    if (m := PART_PATTERN.search(p.name))]
        self._next_part = max(existing, default=-1) + 1
        self._rows: list[np.ndarray] = []
        self._paths: list[str] = []
        self._hashes: list[str] = []
        self._skipped: list[tuple[str, str, str]] = []

    @property
    def pending(self) -> int:
        return len(self._paths) + len(self._skipped)

    def add_rows(self, rows: np.ndarray, paths: Sequence[str], hashes: Sequence[str]) -> None:
        """rows: float, shape (len(paths), dim). Commits when the buffer is full."""
        self._rows.append(np.asarray(rows))
        self._paths += paths
        self._hashes += hashes
        if len(self._paths) >= self.flush_rows:
            self.commit()

    def add_skipped(self, path: str, reason: str, sha256: str) -> None:
        self._skipped.append((path, reason, sha256))

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
            features=rows, paths=self._paths, hashes=self._hashes, classes=self.classes,
            identity=self.identity, skipped=self._skipped, attrs=self.attrs, in_memory=True,
        )
        self._next_part += 1
        self.committed_rows += len(self._paths)
        self._rows, self._paths, self._hashes, self._skipped = [], [], [], []


@dataclass(frozen=True)
class Consolidated:
    rows: int
    skipped: int
    dropped: int  # records of files no longer in the folder (changed files are replaced)


def consolidate(
    store: str | Path,
    *,
    identity: schema.Identity,
    classes: Sequence[str],
    present: dict[str, str] | None,
    attrs: dict,
    compression: str = "none",
    block_rows: int = 1024,
) -> Consolidated:
    """Merge `store` and its parts into a new `store`, keeping records whose hash is in `present`.

    present: path -> sha256 of every image now in the folder, or None to keep everything.
    Rows come out sorted by path. Memory: one block of `block_rows` rows.
    """
    store = Path(store)
    files = store_files(store)
    records = read_records(files, identity)
    kept = {p: r for p, r in records.items() if present is None or present.get(p) == r.sha256}
    stored = sorted(p for p, r in kept.items() if r.row is not None)
    skipped = sorted((p, r.reason, r.sha256) for p, r in kept.items() if r.row is None)
    handles = [open_h5(f) for f in files]
    try:
        sources = [h[schema.FEATURES] for h in handles]
        dims = {s.shape[1] for s in sources if s.shape[0]}
        if len(dims) > 1:
            raise StoreError(f"'{store}' and its parts disagree on the feature size: "
                             f"{sorted(dims)}.")
        dim = dims.pop() if dims else (sources[0].shape[1] if sources else 1)
        itemsize = np.dtype(identity.dtype).itemsize
        with atomic_store(store, expected_bytes=len(stored) * dim * itemsize) as out:
            target = create_layout(out, n_rows=len(stored), dim=dim, identity=identity,
                                   compression=compression)
            for start in range(0, len(stored), block_rows):
                block = [kept[p] for p in stored[start:start + block_rows]]
                target[start:start + len(block)] = _gather(sources, block, dim, identity.dtype)
            write_index(out, paths=stored, hashes=[kept[p].sha256 for p in stored],
                        classes=classes, skipped=skipped)
            out.attrs.update(attrs)
    finally:
        for handle in handles:
            handle.close()
    for part in part_files(store):
        part.unlink()
    with contextlib.suppress(OSError):
        parts_dir(store).rmdir()
    return Consolidated(len(stored), len(skipped), len(records) - len(kept))


def _gather(sources: list, block: list[Record], dim: int, dtype: str) -> np.ndarray:
    """Rows for `block` in order, reading each source in contiguous runs."""
    out = np.empty((len(block), dim), dtype=dtype)
    by_source: dict[int, list[tuple[int, int]]] = {}
    for position, record in enumerate(block):
        by_source.setdefault(record.source, []).append((position, record.row))
    for source, pairs in by_source.items():
        positions, rows = (np.array(col) for col in zip(*pairs, strict=True))
        out[positions] = read_rows(sources[source], rows)
    return out


def read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """dataset[rows] for any order of distinct rows, as few contiguous reads as possible."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    runs = np.split(ordered, np.flatnonzero(np.diff(ordered) != 1) + 1)
    data = np.concatenate([dataset[run[0]:run[-1] + 1] for run in runs])
    result = np.empty_like(data)
    result[order] = data
    return result
