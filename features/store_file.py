"""Write one complete store file atomically: a temporary name, fsync, then rename.

Every file headstart writes (each part of a running extraction, and the consolidated
store) goes through `atomic_store`, so a reader or a crash never meets a half-written
file: either the old file, or the new one, never a truncated mix (h5py does not promise
that `flush()` survives a killed writer; rename does).

Small files (parts) are built in memory and written with plain file I/O: when the disk
fills during an HDF5 write, h5py fails while closing and can crash the process later,
whereas a plain write fails with a clean OSError. Large files (the merged store) are
written by HDF5 directly, after checking that the disk has room for them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import resource
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from headstart import faults
from headstart.errors import StoreError
from headstart.features import schema


@contextlib.contextmanager
def atomic_store(path: str | Path, *, in_memory: bool = False,
                 expected_bytes: int = 0) -> Iterator[h5py.File]:
    """Yield an h5py.File that becomes `path` only when the block finishes without error.

    in_memory: build the file in RAM, then write it out with plain I/O (for small files).
    expected_bytes: refuse up front, with ENOSPC, when the disk has less room than this.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if in_memory:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w") as handle:
                yield handle
            with open(tmp, "wb") as raw:
                raw.write(buffer.getbuffer())
                raw.flush()
                os.fsync(raw.fileno())
        else:
            ensure_free_space(path.parent, expected_bytes, path)
            try:
                with h5py.File(tmp, "w") as handle:
                    yield handle
            except RuntimeError as error:  # h5py reports failed writes at close this way
                code = errno.ENOSPC if "errno = 28" in str(error) else errno.EIO
                raise OSError(code, f"writing {path} failed: {error}") from None
            with open(tmp, "rb+") as raw:
                os.fsync(raw.fileno())
        faults.point("store:written")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def ensure_free_space(directory: Path, needed: int, path: Path) -> None:
    """Raise before writing `needed` bytes (plus 5%) where the disk or `ulimit -f` has no room."""
    if not needed:
        return
    needed = int(needed * 1.05) + (1 << 20)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device: writing '{path}' needs about "
                      f"{needed / 1e6:.0f} MB, {free / 1e6:.0f} MB free", str(path))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < needed:
        raise OSError(errno.EFBIG, f"File too large: writing '{path}' needs about "
                      f"{needed / 1e6:.0f} MB, the file-size limit (ulimit -f) is "
                      f"{limit / 1e6:.0f} MB", str(path))


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable across power loss, not only across process death."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def label_indices(labels: Sequence[str | None], classes: Sequence[str]) -> np.ndarray:
    """int32 index of each class name in `classes`; None (no label) becomes -1."""
    index = {name: i for i, name in enumerate(classes)}
    return np.fromiter((schema.UNLABELLED if name is None else index[name] for name in labels),
                       dtype=np.int32, count=len(labels))


def folder_labels(paths: Sequence[str]) -> list[str]:
    """The class of each path in a class-per-folder layout: its first folder."""
    return [p.split("/", 1)[0] for p in paths]


def create_layout(
    handle: h5py.File,
    *,
    n_rows: int,
    dim: int,
    identity: schema.Identity,
    compression: str = "none",
) -> h5py.Dataset:
    """Create the chunked, resizable `features` dataset and write the identity attributes."""
    if compression not in schema.COMPRESSIONS:
        raise ValueError(f"compression must be one of {schema.COMPRESSIONS}, got {compression!r}")
    rows = schema.chunk_rows(dim, identity.dtype)
    features = handle.create_dataset(
        schema.FEATURES,
        shape=(n_rows, dim),
        maxshape=(None, dim),
        dtype=identity.dtype,
        chunks=(rows, dim),
        compression=None if compression == "none" else compression,
    )
    handle.attrs.update(identity.as_attrs())
    handle.attrs["compression"] = compression
    return features


def _optional_ints(handle: h5py.File, name: str, values: Sequence[int] | None) -> None:
    if values is not None:
        handle.create_dataset(name, data=np.asarray(list(values), dtype=np.int64), maxshape=(None,))


def write_index(
    handle: h5py.File,
    *,
    paths: Sequence[str],
    hashes: Sequence[str],
    classes: Sequence[str],
    labels: Sequence[str | None] | None = None,
    splits: Sequence[str] | None = None,
    sizes: Sequence[int] | None = None,
    mtimes: Sequence[int] | None = None,
    skipped: Sequence[tuple] = (),
) -> None:
    """Write labels, paths, hashes, classes, optional columns and skipped records.

    labels: class name of each row (None: unlabelled); default: the first folder of the path.
    splits: the split each row's folder gave ("train", "validation", "test"), or None.
    sizes, mtimes: each file's size (bytes) and modification time (ns) when it was read.
    skipped: (path, reason, sha256[, size, mtime_ns]) of each unreadable file.
    """
    if twice := schema.repeated_paths(paths):  # a store holds each path once (stitch)
        raise StoreError(f"'{handle.filename}' would hold '{twice[0]}' twice; nothing was "
                         "written (please report this).")
    labels = folder_labels(paths) if labels is None else labels
    handle.create_dataset(schema.LABELS, data=label_indices(labels, classes), maxshape=(None,))
    handle.create_dataset(schema.PATHS, data=list(paths), dtype=schema.STRING, maxshape=(None,))
    handle.create_dataset(
        schema.HASHES, data=np.array(list(hashes), dtype=schema.HASH_DTYPE), maxshape=(None,)
    )
    handle.create_dataset(schema.CLASSES, data=list(classes), dtype=schema.STRING)
    if splits is not None:
        handle.create_dataset(schema.GIVEN_SPLIT, data=list(splits), dtype=schema.STRING)
    _optional_ints(handle, schema.SIZES, sizes)
    _optional_ints(handle, schema.MTIMES, mtimes)
    records = [schema.Skipped(*record) for record in skipped]
    handle.create_dataset(schema.SKIPPED_PATHS, data=[r.path for r in records], dtype=schema.STRING)
    handle.create_dataset(schema.SKIPPED_REASONS, data=[r.reason for r in records],
                          dtype=schema.STRING)
    handle.create_dataset(
        schema.SKIPPED_HASHES, data=np.array([r.sha256 for r in records], dtype=schema.HASH_DTYPE)
    )
    _optional_ints(handle, schema.SKIPPED_SIZES, [r.size for r in records])
    _optional_ints(handle, schema.SKIPPED_MTIMES, [r.mtime_ns for r in records])


def write_store(
    path: str | Path,
    *,
    features: np.ndarray,
    paths: Sequence[str],
    hashes: Sequence[str],
    classes: Sequence[str],
    identity: schema.Identity,
    skipped: Sequence[tuple] = (),
    attrs: dict | None = None,
    compression: str = "none",
    in_memory: bool = False,
    **columns,
) -> Path:
    """Write a whole store in one atomic step (parts of a run, synthetic stores in tests).

    features: shape (n_rows, dim); cast to ``identity.dtype``.
    columns: labels, splits, sizes, mtimes as in `write_index`.
    """
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != len(paths) or len(paths) != len(hashes):
        raise ValueError(
            f"features {features.shape}, {len(paths)} paths and {len(hashes)} hashes do not line up"
        )
    with atomic_store(path, in_memory=in_memory, expected_bytes=features.nbytes) as handle:
        dataset = create_layout(
            handle, n_rows=len(features), dim=features.shape[1], identity=identity,
            compression=compression,
        )
        if len(features):
            dataset[...] = features.astype(identity.dtype, copy=False)
        write_index(handle, paths=paths, hashes=hashes, classes=classes, skipped=skipped,
                    **columns)
        handle.attrs.update(attrs or {})
    return Path(path)
