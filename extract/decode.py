"""Read, hash and decode image files on a thread pool, in order, with bounded look-ahead.

Pillow releases the GIL while decoding and resizing, so threads overlap decoding with
the model (which also runs outside the GIL). At most `lookahead` decoded images exist
at any time, so memory does not grow with the number of images.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.extract.formats import HEIF_MISSING, heif_unavailable
from headstart.extract.images import UnreadableImageError, decode_pixels, read_file


@dataclass
class Decoded:
    """One input file: pixels ((size, size, 3): uint8, or float32 from a preset's converter
    resize) or the reason it was unreadable."""

    key: str
    sha256: str
    pixels: np.ndarray | None = None
    reason: str | None = None
    size: int = -1  # bytes, when the file could be read
    mtime_ns: int = -1


def default_workers() -> int:
    """One decoding thread per CPU this process may use (not the whole machine), at most 16.

    On a shared Slurm node `os.cpu_count()` is every core of the machine; the affinity mask
    is what the job was given (--cpus-per-task).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(16, usable))


def decode_one(key: str, path: str | Path, size: int = 224,
               resize: Callable[[np.ndarray], np.ndarray] | None = None) -> Decoded:
    """Never raises for a bad file: the failure becomes `reason` (resize: see decode_pixels)."""
    if heif_unavailable(str(path)):
        return Decoded(key, _sha_or_empty(path), reason=HEIF_MISSING)
    try:
        file = read_file(path)
    except UnreadableImageError as error:
        return Decoded(key, "", reason=str(error))
    try:
        return Decoded(key, file.sha256, decode_pixels(file.data, size, resize), None, file.size,
                       file.mtime_ns)
    except UnreadableImageError as error:
        return Decoded(key, file.sha256, None, str(error), file.size, file.mtime_ns)


def _sha_or_empty(path: str | Path) -> str:
    try:
        return read_file(path).sha256
    except UnreadableImageError:
        return ""


def decode_stream(
    items: Iterable[tuple[str, str | Path]], *, size: int = 224, workers: int | None = None,
    lookahead: int = 64, resize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[Decoded]:
    """Decoded files for (key, path) items, yielded in input order (resize: see
    `headstart.extract.images.decode_pixels`)."""
    pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="decode")
    pending: deque = deque()
    try:
        for key, path in items:
            pending.append(pool.submit(decode_one, key, path, size, resize))
            if len(pending) >= lookahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def batched(stream: Iterable[Decoded], batch_size: int) -> Iterator[list[Decoded]]:
    """Group decoded files so that each group holds `batch_size` readable images.

    Unreadable files ride along in the group where they occurred, so callers see
    every file once and in order.
    """
    group: list[Decoded] = []
    readable = 0
    for item in stream:
        group.append(item)
        readable += item.pixels is not None
        if readable == batch_size:
            yield group
            group, readable = [], 0
    if group:
        yield group


def stack_pixels(group: list[Decoded]) -> np.ndarray:
    """Batch (n_readable, size, size, 3) of a group's readable images (dtype as decoded)."""
    return np.stack([item.pixels for item in group if item.pixels is not None])


def hash_files(items: Iterable[tuple[str, str | Path]],
               workers: int | None = None) -> dict[str, str]:
    """key -> sha256 of each file's bytes ("" where the file cannot be read)."""
    def one(item):
        key, path = item
        try:
            return key, read_file(path).sha256
        except UnreadableImageError:
            return key, ""

    with ThreadPoolExecutor(workers or default_workers()) as pool:
        return dict(pool.map(one, items))
