"""The decode -> embed -> commit loop, and the same read -> decode -> embed path for predict.

Files are read, hashed and decoded on a thread pool a bounded number of images ahead
(`headstart.extract.decode`), embedded a batch at a time, and committed to part files by
a `PartWriter`, so memory stays flat however many images there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.extract.decode import Decoded, batched, decode_stream, stack_pixels
from headstart.features.journal import Entry, PartWriter
from headstart.words import shown


@dataclass
class Embedded:
    """Rows for the files that could be read; the rest with reasons."""

    paths: list[str]
    rows: np.ndarray  # float32, shape (len(paths), feature_dim)
    skipped: list[tuple[str, str]]  # (path, reason)


def embedded_batches(items: Iterable[tuple[str, str | Path]], backbone, *, batch_size: int,
                     workers: int | None = None) -> Iterator[tuple[list[Decoded], np.ndarray]]:
    """(decoded group, float32 rows of its readable images) for (key, path) items, in order.

    Each group holds `batch_size` readable images (the last may hold fewer); unreadable
    files ride along in the group where they occurred, with rows only for readable ones.
    """
    stream = decode_stream(items, size=backbone.identity.input_size, workers=workers,
                           lookahead=2 * batch_size, resize=getattr(backbone, "resize", None))
    for group in batched(stream, batch_size):
        if any(d.pixels is not None for d in group):
            yield group, backbone.embed(stack_pixels(group))
        else:
            yield group, np.zeros((0, 0), np.float32)


def embed_files(files: Sequence[str | Path], backbone, *, batch_size: int = 32,
                workers: int | None = None,
                advance: Callable[[int], None] = lambda n: None) -> Embedded:
    """float32 rows (n_readable, dim) of image files; unreadable ones are listed, not fatal.

    advance(n): called with the number of files done after each batch (a progress bar).
    """
    paths, rows, skipped = [], [], []
    for group, block in embedded_batches(((str(f), f) for f in files), backbone,
                                         batch_size=batch_size, workers=workers):
        advance(len(group))
        skipped += [(d.key, d.reason) for d in group if d.pixels is None]
        readable = [d.key for d in group if d.pixels is not None]
        if readable:
            rows.append(block)
            paths += readable
    dim = rows[0].shape[1] if rows else 0
    return Embedded(paths, np.concatenate(rows) if rows else np.zeros((0, dim), np.float32),
                    skipped)


@dataclass
class LoopResult:
    added: int  # rows committed
    skipped: int  # unreadable files recorded
    hashes: dict[str, str]  # path -> sha256 of every file read
    stopped: bool  # Ctrl-C: everything computed is committed, the rest remains
    elapsed_s: float = 0.0


def extract_into(writer: PartWriter, root: Path, todo: Sequence[Entry], backbone, *,
                 batch_size: int, workers: int | None = None,
                 advance: Callable[[int], None] = lambda n: None,
                 log: Callable[[str], None] = lambda line: None,
                 stop_requested: Callable[[], bool] = lambda: False) -> LoopResult:
    """Embed every file of `todo` (paths relative to `root`) and commit rows and skips.

    advance(n): called with the number of files done after each batch (a progress bar).
    stop_requested(): checked after each batch; when true, commit and stop early.
    """
    entries = {entry.path: entry for entry in todo}
    result = LoopResult(0, 0, {}, False)
    items = ((entry.path, root / entry.path) for entry in todo)
    for group, rows in embedded_batches(items, backbone, batch_size=batch_size,
                                        workers=workers):
        readable = []
        for decoded in group:
            entry = entries[decoded.key]._replace(sha256=decoded.sha256)
            if decoded.size >= 0:
                entry = entry._replace(size=decoded.size, mtime_ns=decoded.mtime_ns)
            result.hashes[decoded.key] = decoded.sha256
            if decoded.pixels is None:
                writer.add_skipped(entry, decoded.reason or "unreadable")
                result.skipped += 1
                log(f"skipped {shown(root / decoded.key)}: {shown(decoded.reason)}")
            else:
                readable.append(entry)
        if readable:
            writer.add_rows(rows, readable)
            result.added += len(readable)
        advance(len(group))
        if stop_requested():
            result.stopped = True
            break
    writer.commit()
    return result
