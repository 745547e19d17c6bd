"""Read, hash and decode image files on a thread pool, in order, with bounded look-ahead.

Pillow releases the GIL while decoding and resizing, so threads overlap decoding with
the model (which also runs outside the GIL). At most `lookahead` decoded images exist
at any time, so memory does not grow with the number of images.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import UnreadableImageError, decode_pixels, read_file


@dataclass
class Decoded:
    """One input file: pixels (uint8, (size, size, 3)) or the reason it was unreadable."""

    key: str
    sha256: str
    pixels: np.ndarray | None = None
    reason: str | None = None


def default_workers() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def decode_one(key: str, path: str | Path, size: int = 224) -> Decoded:
    """Never raises for a bad file: the failure becomes `reason`."""
    try:
        data, sha = read_file(path)
    except UnreadableImageError as error:
        return Decoded(key, "", reason=str(error))
    try:
        return Decoded(key, sha, pixels=decode_pixels(data, size))
    except UnreadableImageError as error:
        return Decoded(key, sha, reason=str(error))


def decode_stream(
    items: Iterable[tuple[str, str | Path]], *, size: int = 224, workers: int | None = None,
    lookahead: int = 64,
) -> Iterator[Decoded]:
    """Decoded files for (key, path) items, yielded in input order."""
    pool = ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="decode")
    pending: deque = deque()
    try:
        for key, path in items:
            pending.append(pool.submit(decode_one, key, path, size))
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
    """uint8 batch (n_readable, size, size, 3) of a group's readable images."""
    return np.stack([item.pixels for item in group if item.pixels is not None])


def hash_files(items: Iterable[tuple[str, str | Path]],
               workers: int | None = None) -> dict[str, str]:
    """key -> sha256 of each file's bytes ("" where the file cannot be read)."""
    def one(item):
        key, path = item
        try:
            return key, read_file(path)[1]
        except UnreadableImageError:
            return key, ""

    with ThreadPoolExecutor(workers or default_workers()) as pool:
        return dict(pool.map(one, items))
