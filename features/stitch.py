"""Finish a store: one self-contained file, or a small top file over shard files.

Two layouts, both read the same way (`open_store`):

* **one file**: every row copied into `features.h5`, sorted by path. A first extraction
  always ends this way, and so does an append while the store stays at most
  `SINGLE_FILE_LIMIT` (64 MiB of rows: about 4,000 VGG16 fc2 rows in float32), so a
  student's store is one file to e-mail to a grader.
* **shards**: `features.h5` holds the index (paths, labels, hashes...) and an HDF5 virtual
  dataset whose rows live in files under `features.h5.shards/`, referenced by paths
  relative to the store's folder (the folder can be moved). Rows are in the order the
  shards were added, each shard sorted by path. An append to a larger store writes only
  its new rows as a new shard plus a new top file, so its cost is proportional to the new
  rows; sharded extraction (`--shard I/N`, Ray) ends the same way via `merge-features`.
  The fill value is NaN, and readers check every shard file on open.

`merge-features --copy` turns either into one self-contained file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import h5py
import numpy as np

from headstart.bulk import paused_gc
from headstart.errors import StoreError
from headstart.features import schema
from headstart.features.journal import (
    Entry,
    Record,
    Records,
    index_columns,
    index_records,
    read_records,
    read_rows,
    store_files,
)
from headstart.features.reader import open_h5, part_files, parts_dir, read_index, shard_files
from headstart.features.store_file import atomic_store, create_layout, write_index

SINGLE_FILE_LIMIT = 64 << 20  # bytes of rows up to which an append rewrites one file
SHARD_PATTERN = re.compile(schema.SHARD_NAME + "$")
PLAN_PATTERN = re.compile(r"plan-g(\d{6})\.json$")


def shards_dir(store: str | Path) -> Path:
    """Where a sharded store keeps its shard files (and a sharded run its plan)."""
    store = Path(store)
    return store.with_name(store.name + ".shards")


def shard_path(store: str | Path, generation: int, index: int, count: int) -> Path:
    """The fixed name of shard `index` of `count` in `generation`."""
    return shards_dir(store) / f"g{generation:06d}-s{index:05d}-of-{count:05d}.h5"


def next_generation(store: str | Path) -> int:
    """One more than any generation of shards or plans present (0 for a new store)."""
    found = [-1]
    directory = shards_dir(store)
    if directory.is_dir():
        for path in directory.iterdir():
            match = SHARD_PATTERN.search(path.name) or PLAN_PATTERN.search(path.name)
            if match:
                found.append(int(match.group(1)))
    if Path(store).exists():
        with open_h5(store) as handle:
            for file in shard_files(handle[schema.FEATURES], Path(store)):
                if match := SHARD_PATTERN.search(file.name):
                    found.append(int(match.group(1)))
            merged = handle.attrs.get(schema.MERGED_GENERATION)  # its shards may be gone
            if merged is not None:
                found.append(int(merged))
    return max(found) + 1


@dataclass(frozen=True)
class Finished:
    rows: int
    skipped: int
    dropped: int  # records of files no longer in the folder (changed files are replaced)
    shards: int  # 0 for a one-file store


@paused_gc
def consolidate(
    store: str | Path,
    *,
    identity: schema.Identity,
    classes: Sequence[str],
    present: dict[str, str] | None,
    attrs: dict,
    compression: str = "none",
    given_splits: bool = False,
    refresh: dict[str, Entry] | None = None,
    single_file_limit: int = SINGLE_FILE_LIMIT,
    block_rows: int = 1024,
    known: Records | None = None,
) -> Finished:
    """Turn `store` and its committed parts into the new `store`, then delete the parts.

    present: path -> sha256 of every image now in the folder; records of other paths or
        other contents are dropped. None keeps everything.
    refresh: newer label, split and stat of kept rows whose content is unchanged.
    The result is one file sorted by path (a new store, or one that stays within
    `single_file_limit` bytes of rows), else the old shards plus one new shard of the new
    rows. Memory: one block of `block_rows` rows. Idempotent.
    known: records the caller has read from the store (see read_records): not read again.
    """
    store = Path(store)
    files = store_files(store)
    records = read_records(files, identity, known=known)
    before = referenced_shards(store)
    kept = {p: r for p, r in records.items() if present is None or present.get(p) == r.sha256}
    dropped = len(records) - len(kept)
    refresh = refresh or {}
    for path, entry in refresh.items():
        if path in kept:
            kept[path] = refreshed(kept[path], entry)
    n_rows = sum(1 for r in kept.values() if r.row is not None)
    skipped = sorted(_skipped(p, r) for p, r in kept.items() if r.row is None)
    row_bytes = _row_bytes(files, identity)
    virtual = store.exists() and _is_virtual(store)
    if not virtual and (not store.exists() or n_rows * row_bytes <= single_file_limit):
        stored = sorted(p for p, r in kept.items() if r.row is not None)
        write_rows_file(store, files, [(p, kept[p]) for p in stored], identity=identity,
                        classes=classes, skipped=skipped, attrs=attrs, compression=compression,
                        given_splits=given_splits, block_rows=block_rows)
        shards, written = 0, set()
    else:
        new = sorted(((p, r) for p, r in kept.items() if r.source != 0 and r.row is not None),
                     key=itemgetter(0))
        base = None if virtual else as_shard(store, next_generation(store))
        new_shard = shard_path(store, next_generation(store), 0, 1)
        if new:
            shards_dir(store).mkdir(exist_ok=True)
            write_rows_file(new_shard, files, new, identity=identity, classes=classes,
                            attrs={**attrs, "complete": True}, compression=compression,
                            given_splits=given_splits, block_rows=block_rows)
        shards = stitch(store, new_shards=[new_shard] if new else [],  # kept: refreshed
                        identity=identity, classes=classes, skipped=skipped, attrs=attrs,
                        given_splits=given_splits, base_shard=base, old_records=kept)
        written = {new_shard} | ({base} if base else set())
    for part in part_files(store):
        part.unlink()
    with contextlib.suppress(OSError):
        parts_dir(store).rmdir()
    remove_unreferenced_shards(store, before | written)
    return Finished(n_rows, len(skipped), dropped, shards)


def refreshed(record: Record, entry: Entry) -> Record:
    """`record` with the label, split and stat of `entry` (same content, newer metadata)."""
    return record._replace(label=entry.label, split=entry.split, size=entry.size,
                           mtime_ns=entry.mtime_ns)


def _skipped(path: str, record: Record) -> schema.Skipped:
    return schema.Skipped(path, record.reason or "", record.sha256, record.size, record.mtime_ns)


def _row_bytes(files: Sequence[Path], identity: schema.Identity) -> int:
    dims = set()
    for file in files:
        with open_h5(file) as handle:
            features = handle[schema.FEATURES]
            if features.shape[0]:
                dims.add(features.shape[1])
    if len(dims) > 1:
        raise StoreError(f"'{files[0]}' and its parts disagree on the feature size: "
                         f"{sorted(dims)}.")
    return (dims.pop() if dims else 1) * np.dtype(identity.dtype).itemsize


def _is_virtual(store: Path) -> bool:
    with open_h5(store) as handle:
        return handle[schema.FEATURES].is_virtual


def write_rows_file(target: Path, files: Sequence[Path], rows: Sequence[tuple[str, Record]], *,
                    identity: schema.Identity, classes: Sequence[str],
                    skipped: Sequence[schema.Skipped] = (), attrs: dict,
                    compression: str = "none", given_splits: bool = False,
                    block_rows: int = 1024) -> None:
    """Copy `rows` ((path, record) in target order, records index into `files`) into one file."""
    handles = [open_h5(f) for f in files]
    try:
        sources = [h[schema.FEATURES] for h in handles]
        dims = {s.shape[1] for s in sources if s.shape[0]}
        dim = dims.pop() if dims else (sources[0].shape[1] if sources else 1)
        itemsize = np.dtype(identity.dtype).itemsize
        with atomic_store(target, expected_bytes=len(rows) * dim * itemsize) as out:
            dataset = create_layout(out, n_rows=len(rows), dim=dim, identity=identity,
                                    compression=compression)
            for start in range(0, len(rows), block_rows):
                block = [record for _, record in rows[start:start + block_rows]]
                dataset[start:start + len(block)] = _gather(sources, block, dim, identity.dtype)
            write_index(out, classes=classes, skipped=skipped,
                        **index_columns([r.entry(p) for p, r in rows], given_splits=given_splits))
            out.attrs.update(attrs)
    finally:
        for handle in handles:
            handle.close()


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


# ---- the virtual (sharded) layout -----------------------------------------------------

@dataclass
class RowSources:
    """Where each row of a store lives: files[file_ids[i]] row src_rows[i]."""

    files: list[Path]  # absolute
    file_ids: np.ndarray  # int32 (n,)
    src_rows: np.ndarray  # int64 (n,)


def row_sources(store: Path) -> RowSources:
    """The shard file and row of every row of `store` (a one-file store is its own source)."""
    with open_h5(store) as handle:
        dataset = handle[schema.FEATURES]
        n = dataset.shape[0]
        if not dataset.is_virtual:
            return RowSources([store.resolve()], np.zeros(n, np.int32), np.arange(n))
        files: dict[str, int] = {}
        file_ids = np.full(n, -1, np.int32)
        src_rows = np.full(n, -1, np.int64)
        for mapping in dataset.virtual_sources():
            (t0, _), (t1, _) = mapping.vspace.get_select_bounds()
            (s0, _), (s1, _) = mapping.src_space.get_select_bounds()
            name = str((store.parent / mapping.file_name).resolve())
            file_ids[t0:t1 + 1] = files.setdefault(name, len(files))
            src_rows[t0:t1 + 1] = np.arange(s0, s1 + 1)
    if (file_ids < 0).any():
        raise StoreError(f"'{store}': {int((file_ids < 0).sum())} rows map to no shard file; "
                         "the store is damaged, run `merge-features --copy` on a backup.")
    return RowSources([Path(f) for f in files], file_ids, src_rows)


def as_shard(store: Path, generation: int) -> Path:
    """Give a one-file store's rows a shard name (a hard link: no copy where possible).

    The store itself is untouched until a new top file replaces it.
    """
    target = shard_path(store, generation, 0, 1)
    shards_dir(store).mkdir(exist_ok=True)
    if not target.exists():
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            os.link(store, tmp)
        except OSError:  # no hard links here (another file system, some network mounts)
            shutil.copyfile(store, tmp)
        os.replace(tmp, target)
    return target


def stitch(store: Path, *, keep_old: Callable[[str, int], bool] | None = None,
           new_shards: Sequence[Path],
           identity: schema.Identity, classes: Sequence[str],
           skipped: Sequence[schema.Skipped], attrs: dict, given_splits: bool = False,
           refresh: dict[str, Entry] | None = None, base_shard: Path | None = None,
           old_records: dict[str, Record] | None = None) -> int:
    """Write `store` as a virtual dataset: its old rows that `keep_old(path, row)` (without
    it, every row that has a record in `old_records`), then the rows of each file in
    `new_shards` in order. Copies no row. A path is stored once: an old row whose path a
    new shard holds is left out (the new row replaces it).
    Returns the shard count.

    refresh: newer label, split and stat for kept old rows (by path).
    base_shard: for a one-file store, the shard name its rows already have (see as_shard).
    old_records: the store's records already read (those with source 0 are its rows);
        without them its index is read here.
    Raises StoreError when a new shard was made by another pipeline, or new shards hold
    one path twice.
    """
    store = Path(store)
    segments: list[tuple[RowSources, np.ndarray]] = []
    entries: list[Entry] = []
    new_indexes = []
    for shard in new_shards:
        with open_h5(shard) as handle:
            new_indexes.append(read_index(handle))
    newer = {p for index in new_indexes for p in index.paths}  # their rows replace old ones
    if sum(len(index.paths) for index in new_indexes) != len(newer):
        raise StoreError(f"The shard files {', '.join(f.name for f in new_shards)} of "
                         f"'{store}' hold some image twice; run their extraction again.")
    if store.exists():
        with open_h5(store) as handle:
            virtual = handle[schema.FEATURES].is_virtual
            if old_records is None:
                old_records = index_records(read_index(handle), 0)
        sources = row_sources(store)
        if not virtual:  # the one file becomes the first shard
            sources.files = [base_shard or as_shard(store, next_generation(store))]
        old = [(r.row, p) for p, r in old_records.items() if r.source == 0
               and r.row is not None and p not in newer
               and (keep_old is None or keep_old(p, r.row))]
        rows = np.fromiter((row for row, _ in old), dtype=np.int64, count=len(old))
        if (np.diff(rows) < 0).any():  # records usually come in row order already
            order = np.argsort(rows, kind="stable")
            old, rows = [old[i] for i in order], rows[order]
        refresh = refresh or {}
        segments.append((sources, rows))
        for _, path in old:
            record = old_records[path]
            if path in refresh:
                record = refreshed(record, refresh[path])
            entries.append(record.entry(path))
    for shard, index in zip(new_shards, new_indexes, strict=True):
        records = read_records([shard], identity)
        paths = index.paths
        sources = RowSources([shard.resolve()], np.zeros(len(paths), np.int32),
                             np.arange(len(paths)))
        segments.append((sources, np.arange(len(paths))))
        entries += [records[p].entry(p) for p in paths]
    write_virtual(store, segments, entries, identity=identity, classes=classes,
                  skipped=skipped, attrs=attrs, given_splits=given_splits)
    with open_h5(store) as handle:
        return len(shard_files(handle[schema.FEATURES], store))


def write_virtual(store: Path, segments: Sequence[tuple[RowSources, np.ndarray]],
                  entries: Sequence[Entry], *, identity: schema.Identity,
                  classes: Sequence[str], skipped: Sequence[schema.Skipped], attrs: dict,
                  given_splits: bool = False) -> None:
    """The top file: an index of `entries` and a virtual `features` mapping, in order, the
    rows `selected` of each segment's sources. Contiguous rows become one mapping."""
    shapes: dict[Path, tuple[int, int]] = {}
    runs: list[tuple[Path, int, int]] = []  # (file, first source row, row count)
    for sources, selected in segments:
        files = sources.file_ids[selected]
        rows = sources.src_rows[selected]
        breaks = np.flatnonzero((np.diff(files) != 0) | (np.diff(rows) != 1)) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            if stop > start:
                runs.append((sources.files[files[start]], int(rows[start]), int(stop - start)))
    compression = "none"
    for file, _, _ in runs:
        if file not in shapes:
            with open_h5(file) as handle:
                shapes[file] = handle[schema.FEATURES].shape
                compression = str(handle.attrs.get("compression", compression))
    n = sum(count for _, _, count in runs)
    if n != len(entries):
        raise AssertionError(f"{n} mapped rows for {len(entries)} index entries")
    dim = next(iter(shapes.values()))[1] if shapes else 1
    layout = h5py.VirtualLayout(shape=(n, dim), dtype=identity.dtype, maxshape=(n, dim))
    position = 0
    for file, first, count in runs:
        relative = os.path.relpath(file, store.parent.resolve())
        source = h5py.VirtualSource(relative, schema.FEATURES, shape=shapes[file],
                                    dtype=identity.dtype)
        layout[position:position + count] = source[first:first + count]
        position += count
    with atomic_store(store, expected_bytes=1 << 16) as out:
        out.create_virtual_dataset(schema.FEATURES, layout, fillvalue=np.nan)
        out.attrs.update(identity.as_attrs())
        out.attrs["compression"] = compression  # of the shards: the top file holds no rows
        write_index(out, classes=classes, skipped=skipped,
                    **index_columns(entries, given_splits=given_splits))
        out.attrs.update(attrs)


def referenced_shards(store: Path) -> set[Path]:
    """The shard files (resolved) whose rows `store` reads now; empty for a one-file store."""
    store = Path(store)
    if not store.exists():
        return set()
    with open_h5(store) as handle:
        return {f.resolve() for f in shard_files(handle[schema.FEATURES], store)}


def remove_unreferenced_shards(store: Path, candidates: set[Path]) -> list[Path]:
    """Delete the shard files among `candidates` that `store` no longer reads.

    candidates: shard files this store read before the run or that the run wrote for it;
    nothing else is ever deleted, so a renamed or copied store that reads other shard
    files of the same folder keeps them. Files of an unmerged plan's generation, and
    names that are not headstart's shard names, are kept.
    """
    store = Path(store)
    referenced = referenced_shards(store)
    active: dict[Path, set[str]] = {}  # folder -> generations of its unmerged plans
    removed = []
    for path in sorted(candidates):
        path = path.resolve() if path.exists() else path
        match = SHARD_PATTERN.fullmatch(path.name)
        if (not match or path in referenced or not path.parent.name.endswith(".shards")
                or not path.is_file()):
            continue
        if path.parent not in active:
            active[path.parent] = {m.group(1) for p in path.parent.iterdir()
                                   if (m := PLAN_PATTERN.fullmatch(p.name))}
        if match.group(1) in active[path.parent]:
            continue
        path.unlink()
        removed.append(path)
    for folder in {p.parent for p in removed}:
        with contextlib.suppress(OSError):
            folder.rmdir()
    return removed
