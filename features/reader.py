"""Read a feature store: lazy features, small index arrays in memory, clear errors.

    with open_store("features.h5") as store:
        X = store.load_features()          # float32, shape (n_images, dim)
        y = store.labels                   # int32, shape (n_images,)
        store.classes                      # ['Cat', 'Dog']

A store is one self-contained file, or a top file whose `features` is a virtual dataset
over shard files in `features.h5.shards/`. HDF5 reads a missing shard silently as the
fill value, so every open checks that each shard file exists and is readable, and the
fill value is NaN, so no code path can train on rows that are not there.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from headstart.bulk import paused_gc
from headstart.errors import StoreBusyError, StoreError, StoreGrowing
from headstart.features import schema
from headstart.features.busy import (
    is_lock_conflict,
    is_lock_unsupported,
    lock_holders,
    locked_message,
)
from headstart.features.contents import check_contents, check_hashes, check_shard_rows
from headstart.features.lock import lock_path


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
    labels: np.ndarray  # int32 (n,), -1 in unlabelled stores
    classes: list[str]
    skipped: list[schema.Skipped]
    identity: schema.Identity
    attrs: dict
    splits: list[str] | None = None  # given split of each row, when the layout gave one
    sizes: np.ndarray | None = None  # int64 (n,) bytes, when recorded
    mtimes: np.ndarray | None = None  # int64 (n,) ns, when recorded

    @property
    def label_source(self) -> str:
        return str(self.attrs.get(schema.LABEL_SOURCE, schema.DEFAULT_LABEL_SOURCE))

    @property
    def labelled(self) -> bool:
        return self.label_source != "none"

    def label_names(self) -> list[str | None]:
        """Each row's class name (None in unlabelled stores)."""
        return [self.classes[i] if i >= 0 else None for i in self.labels.tolist()]


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [str(s) for s in dataset.asstr()[...]] if len(dataset) else []


def _hashes(handle: h5py.File, column: str) -> list[str]:
    """A hash column as hex strings, read once and checked (headstart.features.contents)."""
    raw = handle[column][...]
    check_hashes(raw, Path(handle.filename), column)
    return [h.decode("ascii") for h in raw]


def open_h5(path: str | Path, *, writing_after: bool = False) -> h5py.File:
    """Open a store file for reading, turning h5py's low-level errors into one sentence.

    A file another program holds open for writing raises StoreBusyError (exit status 3)
    naming that program, never "damaged". writing_after: the caller would change the
    store next (the message then says nothing was changed). On file systems that cannot
    lock, the file is opened without HDF5's lock, as HDF5 recommends there.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"No feature store at '{path}': "
                         f"run `extract-features DIR -o {path}` first.")
    if path.is_dir():
        raise StoreError(f"'{path}' is a directory, not a feature store file.")
    handle = _open_file(path, writing_after)
    try:
        check_contents(handle, path)  # nothing read from outside the store, at any depth
    except BaseException:
        handle.close()
        raise
    return handle


def _open_file(path: Path, writing_after: bool) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        if is_lock_conflict(error):
            raise StoreBusyError(locked_message(path, changed_nothing=writing_after)) from None
        if is_lock_unsupported(error):
            try:
                return h5py.File(path, "r", locking=False)
            except OSError as retry:
                error = retry
        if not os.access(path, os.R_OK):
            raise StoreError(f"Cannot read '{path}' (permission denied); fix its permissions."
                             ) from None
        raise StoreError(
            f"'{path}' is not a readable HDF5 file (truncated or another format: {error}); "
            "re-create it with extract-features."
        ) from None


def _optional(handle: h5py.File, name: str, n_rows: int, store: str) -> h5py.Dataset | None:
    if name not in handle:
        return None
    column = handle[name]
    if column.shape != (n_rows,):
        raise StoreError(f"'{store}': '{name}' has shape {column.shape} but there are {n_rows} "
                         "records; the store is damaged, re-create it.")
    return column


@paused_gc
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
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in handle.attrs.items()}
    classes = _strings(handle[schema.CLASSES])
    labels = columns[schema.LABELS][...].astype(np.int32)
    unlabelled = attrs.get(schema.LABEL_SOURCE) == "none"
    low = schema.UNLABELLED if unlabelled else 0
    if n_rows and (labels.min() < low or labels.max() >= max(len(classes), low + 1)):
        raise StoreError(
            f"'{name}': labels run from {labels.min()} to {labels.max()} "
            f"but there are {len(classes)} classes; the store is damaged, re-create it."
        )
    try:
        n_skipped = len(handle[schema.SKIPPED_PATHS])
        skipped_cols = [_strings(handle[schema.SKIPPED_PATHS]),
                        _strings(handle[schema.SKIPPED_REASONS]),
                        _hashes(handle, schema.SKIPPED_HASHES)]
        for key in (schema.SKIPPED_SIZES, schema.SKIPPED_MTIMES):
            column = _optional(handle, key, n_skipped, name)
            skipped_cols.append(column[...].tolist() if column is not None else [-1] * n_skipped)
        skipped = [schema.Skipped(*row) for row in zip(*skipped_cols, strict=True)]
        paths, hashes = _strings(columns[schema.PATHS]), _hashes(handle, schema.HASHES)
        splits = _optional(handle, schema.GIVEN_SPLIT, n_rows, name)
        splits = _strings(splits) if splits is not None else None
        sizes, mtimes = (_optional(handle, key, n_rows, name)
                         for key in (schema.SIZES, schema.MTIMES))
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError) as error:
        raise StoreError(
            f"'{name}': paths or hashes are unreadable ({error}); re-create it."
        ) from None
    return Index(paths, hashes, labels, classes, skipped, identity, attrs, splits,
                 sizes[...] if sizes is not None else None,
                 mtimes[...] if mtimes is not None else None)


def features_dataset(handle: h5py.File) -> h5py.Dataset:
    """The `features` dataset for reading; a virtual one over uncompressed shards is
    opened without a chunk cache (its shards inherit that setting).

    Measured (bench/scale.py setup, 250,000 x 4096 float32 rows over 1,000 shard files,
    2-core AMD EPYC, best of 4 full reads in 4,096-row blocks): 2.39 s through h5py's
    default 1 MiB chunk cache, 1.94 s without; one file 1.64 s. Compressed shards keep
    the cache, so that a chunk read in two pieces is decompressed once.
    """
    dataset = handle[schema.FEATURES]
    if not dataset.is_virtual or str(handle.attrs.get("compression", "none")) != "none":
        return dataset
    access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    access.set_chunk_cache(0, 0, 0.75)  # slots, bytes (none), preemption (HDF5's default)
    return h5py.Dataset(h5py.h5d.open(handle.id, schema.FEATURES.encode(), access))


def shard_files(dataset: h5py.Dataset, store: Path) -> list[Path]:
    """The files a virtual `features` dataset reads from (relative to the store's folder)."""
    if not dataset.is_virtual:
        return []
    names = dict.fromkeys(source.file_name for source in dataset.virtual_sources())
    return [store.parent / name for name in names if name != "."]


def check_shards(dataset: h5py.Dataset, store: Path) -> list[Path]:
    """Raise StoreError naming the first shard file that is missing or unreadable."""
    files = shard_files(dataset, store)
    for file in files:
        if file.is_symlink() or file.parent.is_symlink():
            raise StoreError(
                f"'{store}' reads its rows from '{file}', which is a symbolic link (or in a "
                "linked folder); a store reads nothing from outside its own shard files, so it "
                "is refused.")
        if not file.is_file():
            raise StoreError(
                f"'{store}' reads its rows from '{file}', which is missing; restore that file "
                f"or re-run the extraction that wrote it (`merge-features {store}` says which)."
            )
        if not os.access(file, os.R_OK):
            raise StoreError(f"'{store}' reads its rows from '{file}', which cannot be read "
                             "(permission denied); fix its permissions.")
        with _open_file(file, False) as handle:  # the rows it gives follow the rule too
            check_shard_rows(handle, file)
    return files


class FeatureStore:
    """A finished store opened for reading; features stay on disk until asked for."""

    def __init__(self, path: str | Path, *, require_complete: bool = True):
        self.path = Path(path)
        pending = part_files(self.path)
        # A writer alive now (from the kernel's lock table: the lock itself is never
        # taken here, so a writer starting at this instant is not turned away).
        self.writers = writers_of(self.path) if pending or not self.path.exists() else []
        if not self.path.exists() and self.writers:
            raise StoreBusyError(
                f"'{self.path}' is being written by a running extract-features "
                f"({', '.join(self.writers)}); wait for it to finish, then run this again.")
        if not self.path.exists() and pending:
            raise StoreError(_unfinished_message(self.path, pending))
        self._handle = open_h5(self.path)
        try:
            self.index = read_index(self._handle)
            _check_unique(self.index.paths, self.path)
            # Looked up once: h5py opens the dataset anew on every lookup.
            self._features = features_dataset(self._handle)
            self.shards = check_shards(self._features, self.path)
            committed = bool(self.index.attrs.get("complete", False))
            # an append under way: the store as it was before it began is complete
            self.growing = committed and bool(pending) and bool(self.writers)
            self.complete = committed and (not pending or self.growing)
            if require_complete and not self.complete:
                raise StoreError(_unfinished_message(self.path, pending, self.index.attrs))
            if self.growing and require_complete:
                warnings.warn(StoreGrowing(
                    f"'{self.path}': newer images are being added by a running "
                    f"extract-features ({', '.join(self.writers)}); this reads the "
                    f"{len(self.index.paths):,} rows stored before it began."), stacklevel=3)
        except BaseException:
            self._handle.close()
            raise

    # The index, as plain attributes for callers.
    @property
    def features(self) -> h5py.Dataset:
        """The lazy on-disk array, shape (n_rows, dim); slice it or use load_features()."""
        return self._features

    labels = property(lambda self: self.index.labels)
    paths = property(lambda self: self.index.paths)
    hashes = property(lambda self: self.index.hashes)
    classes = property(lambda self: self.index.classes)
    identity = property(lambda self: self.index.identity)
    attrs = property(lambda self: self.index.attrs)
    skipped = property(lambda self: [(s.path, s.reason) for s in self.index.skipped])
    given_splits = property(lambda self: self.index.splits)
    labelled = property(lambda self: self.index.labelled)
    label_source = property(lambda self: self.index.label_source)
    n_rows = property(lambda self: len(self.index.paths))
    dim = property(lambda self: self.features.shape[1])

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of `features` (a virtual dataset has none: its shards' size)."""
        chunks = self.features.chunks
        return chunks[0] if chunks else schema.chunk_rows(self.dim, self.features.dtype)

    def load_features(self, dtype: str | np.dtype = np.float32) -> np.ndarray:
        """All rows in memory, shape (n_rows, dim), cast to `dtype`."""
        rows = self.features[...]
        return rows.astype(dtype, copy=False)

    def iter_chunks(self, rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (row slice, float32 block) in stored order, `rows` at a time (default: a chunk)."""
        step = rows or self.chunk_rows
        for start in range(0, self.n_rows, step):
            block = slice(start, min(start + step, self.n_rows))
            yield block, self.features[block].astype(np.float32, copy=False)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))
        return dict(zip(self.classes, counts.tolist(), strict=True))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def writers_of(store: str | Path) -> list[str]:
    """'pid 123 (extract-features ...)' for each process writing `store` now (its lock's
    holders in the kernel's lock table; empty where the OS cannot tell)."""
    path = lock_path(store)
    return lock_holders(path) if path.exists() else []


def _check_unique(paths: list[str], store: Path) -> None:
    """StoreError when a path is stored twice (a merge interrupted before this check existed
    could leave such a store; every row would count twice)."""
    twice = schema.repeated_paths(paths)
    if not twice:
        return
    raise StoreError(
        f"'{store}' holds {len(twice):,} images more than once (first: '{twice[0]}'); run "
        f"`merge-features --copy {store}` to keep one row of each.")


def open_store(path: str | Path, *, require_complete: bool = True) -> FeatureStore:
    """Open a store for reading.

    Raises StoreError for a missing, unfinished (saying how to finish it), damaged or
    foreign store, or one whose shard files are missing; StoreBusyError when another
    program holds it open for writing.
    """
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
