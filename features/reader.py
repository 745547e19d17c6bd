"""Read a feature store: lazy features, small index arrays in memory, clear errors.

    with open_store("features.h5") as store:
        X = store.load_features()          # float32, shape (n_images, 4096)
        y = store.labels                   # int32, shape (n_images,)
        store.classes                      # ['Cat', 'Dog']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import schema


class StoreError(ValueError):
    """A store file that is missing, unfinished, foreign or damaged; the message says what to do."""


def parts_dir(store: str | Path) -> Path:
    """Where a running or interrupted extraction keeps its committed part files."""
    store = Path(store)
    return store.with_name(store.name + ".parts")


def part_files(store: str | Path) -> list[Path]:
    """Committed part files of `store`, in commit order (temporary files are ignored)."""
    directory = parts_dir(store)
    return sorted(directory.glob("part-*.h5")) if directory.is_dir() else []


@dataclass(frozen=True)
class Index:
    """Everything in a store file except the feature rows."""

    paths: list[str]
    hashes: list[str]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str, str]]  # (path, reason, sha256)
    identity: schema.Identity
    attrs: dict


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [str(s) for s in dataset.asstr()[...]] if len(dataset) else []


def _hashes(dataset: h5py.Dataset) -> list[str]:
    return [h.decode("ascii") for h in dataset[...]] if len(dataset) else []


def open_h5(path: str | Path) -> h5py.File:
    """Open any file for reading, turning h5py's low-level errors into one clear sentence."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"No feature store at '{path}': "
                         f"run `extract-features DIR -o {path}` first.")
    if path.is_dir():
        raise StoreError(f"'{path}' is a directory, not a feature store file.")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise StoreError(
            f"'{path}' is not a readable HDF5 file (truncated or another format: {error}); "
            "re-create it with extract-features."
        ) from None


def read_index(handle: h5py.File) -> Index:
    """Validate a store file's layout and read its index (not its rows)."""
    name = handle.filename
    required = (schema.FEATURES, schema.LABELS, schema.PATHS, schema.HASHES, schema.CLASSES,
                schema.SKIPPED_PATHS, schema.SKIPPED_REASONS, schema.SKIPPED_HASHES)
    missing = [key for key in required if key not in handle]
    if missing:
        raise StoreError(
            f"'{name}' is not a headstart feature store (no {', '.join(missing)}); "
            "create one with extract-features."
        )
    try:
        identity = schema.Identity.from_attrs(handle.attrs)
    except (ValueError, TypeError) as error:
        raise StoreError(f"'{name}' has no usable provenance ({error}); re-create it.") from None
    features = handle[schema.FEATURES]
    n_rows = features.shape[0] if features.ndim else -1
    if features.ndim != 2 or features.dtype.kind != "f":
        raise StoreError(
            f"'{name}': 'features' must be a 2-d float array, found shape {features.shape} "
            f"of {features.dtype}; re-create the store."
        )
    columns = {key: handle[key] for key in (schema.LABELS, schema.PATHS, schema.HASHES)}
    for key, column in columns.items():
        if column.shape != (n_rows,):
            raise StoreError(
                f"'{name}': '{key}' has shape {column.shape} but 'features' has {n_rows} rows; "
                "the store is damaged, re-create it."
            )
    if columns[schema.LABELS].dtype.kind not in "iu":
        raise StoreError(f"'{name}': 'labels' must be integers, "
                         f"found {columns[schema.LABELS].dtype}.")
    classes = _strings(handle[schema.CLASSES])
    labels = columns[schema.LABELS][...].astype(np.int32)
    if n_rows and (labels.min() < 0 or labels.max() >= len(classes)):
        raise StoreError(
            f"'{name}': labels run from {labels.min()} to {labels.max()} "
            f"but there are {len(classes)} classes; the store is damaged, re-create it."
        )
    try:
        skipped = list(zip(_strings(handle[schema.SKIPPED_PATHS]),
                           _strings(handle[schema.SKIPPED_REASONS]),
                           _hashes(handle[schema.SKIPPED_HASHES]), strict=True))
        paths, hashes = _strings(columns[schema.PATHS]), _hashes(columns[schema.HASHES])
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError) as error:
        raise StoreError(
            f"'{name}': paths or hashes are unreadable ({error}); re-create it."
        ) from None
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
    return Index(paths, hashes, labels, classes, skipped, identity, attrs)


class FeatureStore:
    """A consolidated store opened for reading; features stay on disk until asked for."""

    def __init__(self, path: str | Path, *, require_complete: bool = True):
        self.path = Path(path)
        pending = part_files(self.path)
        if not self.path.exists() and pending:
            raise StoreError(_unfinished_message(self.path, pending))
        self._handle = open_h5(self.path)
        try:
            self.index = read_index(self._handle)
            self.complete = bool(self.index.attrs.get("complete", False)) and not pending
            if require_complete and not self.complete:
                raise StoreError(_unfinished_message(self.path, pending, self.index.attrs))
        except BaseException:
            self._handle.close()
            raise

    # The index, as plain attributes for callers.
    @property
    def features(self) -> h5py.Dataset:
        """The lazy on-disk array, shape (n_rows, dim); slice it or use load_features()."""
        return self._handle[schema.FEATURES]

    labels = property(lambda self: self.index.labels)
    paths = property(lambda self: self.index.paths)
    hashes = property(lambda self: self.index.hashes)
    classes = property(lambda self: self.index.classes)
    identity = property(lambda self: self.index.identity)
    attrs = property(lambda self: self.index.attrs)
    skipped = property(lambda self: [(p, reason) for p, reason, _ in self.index.skipped])
    n_rows = property(lambda self: len(self.index.paths))
    dim = property(lambda self: self.features.shape[1])

    def load_features(self, dtype: str | np.dtype = np.float32) -> np.ndarray:
        """All rows in memory, shape (n_rows, dim), cast to `dtype`."""
        rows = self.features[...]
        return rows.astype(dtype, copy=False)

    def iter_chunks(self, rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (row slice, float32 block) in stored order, `rows` at a time (default: a chunk)."""
        step = rows or self.features.chunks[0]
        for start in range(0, self.n_rows, step):
            block = slice(start, min(start + step, self.n_rows))
            yield block, self.features[block].astype(np.float32, copy=False)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist(), strict=True))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_store(path: str | Path, *, require_complete: bool = True) -> FeatureStore:
    """Open a store for reading; an unfinished store raises StoreError saying how to finish it."""
    return FeatureStore(path, require_complete=require_complete)


def _unfinished_message(path: Path, pending: list[Path], attrs: dict | None = None) -> str:
    rows = 0
    for part in pending:
        try:
            with h5py.File(part, "r") as handle:
                rows += handle[schema.FEATURES].shape[0]
        except (OSError, KeyError):
            continue
    attrs = attrs or (_first_attrs(pending[0]) if pending else {})
    command = attrs.get("command") or f"extract-features DIR -o {path}"
    return (
        f"'{path}' is unfinished: its extraction stopped with {rows} new images in "
        f"'{parts_dir(path)}'; run `{command}` again to finish it."
    )


def _first_attrs(part: Path) -> dict:
    try:
        with h5py.File(part, "r") as handle:
            return dict(handle.attrs)
    except OSError:
        return {}
