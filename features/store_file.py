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

from . import schema


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


def labels_from_paths(paths: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """int32 label of each path: the index of its first folder in `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    return np.fromiter((index[p.split("/", 1)[0]] for p in paths), dtype=np.int32, count=len(paths))


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


def write_index(
    handle: h5py.File,
    *,
    paths: Sequence[str],
    hashes: Sequence[str],
    classes: Sequence[str],
    skipped: Sequence[tuple[str, str, str]] = (),
) -> None:
    """Write labels, paths, hashes, classes and skipped records (path, reason, sha256)."""
    handle.create_dataset(schema.LABELS, data=labels_from_paths(paths, classes), maxshape=(None,))
    handle.create_dataset(schema.PATHS, data=list(paths), dtype=schema.STRING, maxshape=(None,))
    handle.create_dataset(
        schema.HASHES, data=np.array(list(hashes), dtype=schema.HASH_DTYPE), maxshape=(None,)
    )
    handle.create_dataset(schema.CLASSES, data=list(classes), dtype=schema.STRING)
    skipped_paths, reasons, skipped_hashes = (
        (list(col) for col in zip(*skipped, strict=True)) if skipped else ([], [], [])
    )
    handle.create_dataset(schema.SKIPPED_PATHS, data=skipped_paths, dtype=schema.STRING)
    handle.create_dataset(schema.SKIPPED_REASONS, data=reasons, dtype=schema.STRING)
    handle.create_dataset(
        schema.SKIPPED_HASHES, data=np.array(skipped_hashes, dtype=schema.HASH_DTYPE)
    )


def write_store(
    path: str | Path,
    *,
    features: np.ndarray,
    paths: Sequence[str],
    hashes: Sequence[str],
    classes: Sequence[str],
    identity: schema.Identity,
    skipped: Sequence[tuple[str, str, str]] = (),
    attrs: dict | None = None,
    compression: str = "none",
    in_memory: bool = False,
) -> Path:
    """Write a whole store in one atomic step (parts of a run, synthetic stores in tests).

    features: shape (n_rows, dim); cast to ``identity.dtype``.
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
        write_index(handle, paths=paths, hashes=hashes, classes=classes, skipped=skipped)
        handle.attrs.update(attrs or {})
    return Path(path)
