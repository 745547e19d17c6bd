"""The extraction run: plan what is missing, decode -> embed -> commit, then consolidate.

`extract_features` is what the CLI calls; `embed_files` is the same read -> decode ->
embed loop without a store, used by `predict` so new images are treated exactly like
the training images.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..features import (
    PartWriter,
    StoreError,
    consolidate,
    exclusive_lock,
    part_files,
    read_records,
    store_files,
)
from ..features.journal import remove_stale_temporaries
from ..features.schema import STORAGE_DTYPES
from .backbone import INPUT_SIZE, Backbone, WeightsSpec, pipeline_identity
from .decode import batched, decode_stream, hash_files, stack_pixels
from .images import ImageFolder, is_image_name, scan_folder


class Interrupted(Exception):
    """Ctrl-C stopped the run after committing everything already computed."""

    def __init__(self, output: Path, stored: int, remaining: int):
        super().__init__(
            f"Interrupted: {stored} images are stored in '{output}' and {remaining} remain; "
            "run the same command again to resume."
        )


@dataclass
class Summary:
    """What an extraction run did, for the final report."""

    output: Path
    rows: int
    added: int
    skipped: list[tuple[str, str]]
    skipped_now: int
    dropped: int
    ignored: list[tuple[str, str]]
    class_counts: dict[str, int]
    elapsed_s: float
    images_per_s: float
    size_bytes: int
    up_to_date: bool = False
    messages: list[str] = field(default_factory=list)


@dataclass
class Embedded:
    """Rows for the files that could be read; the rest with reasons."""

    paths: list[str]
    rows: np.ndarray
    skipped: list[tuple[str, str]]


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, plus images found recursively (sorted) in any directories given."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p.name))
        else:
            found.append(item)
    return found


def embed_files(files: Sequence[str | Path], backbone: Backbone, *, batch_size: int = 32,
                workers: int | None = None) -> Embedded:
    """float32 fc2 rows (n_readable, 4096) of image files; unreadable ones are listed, not fatal."""
    paths, rows, skipped = [], [], []
    stream = decode_stream(((str(f), f) for f in files), size=INPUT_SIZE, workers=workers)
    for group in batched(stream, batch_size):
        skipped += [(d.key, d.reason) for d in group if d.pixels is None]
        readable = [d.key for d in group if d.pixels is not None]
        if readable:
            rows.append(backbone.embed(stack_pixels(group)))
            paths += readable
    dim = rows[0].shape[1] if rows else 4096
    return Embedded(paths, np.concatenate(rows) if rows else np.zeros((0, dim), np.float32),
                    skipped)


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the numbers, recorded with the store."""
    from importlib.metadata import version

    return {f"version_{name}": version(name)
            for name in ("tensorflow", "keras", "numpy", "h5py", "pillow")}


def extract_features(
    directory: str | Path,
    output: str | Path = "features.h5",
    *,
    weights: str = "imagenet",
    seed: int = 0,
    batch_size: int = 32,
    dtype: str = "float32",
    precision: str = "float32",
    compression: str = "none",
    workers: int | None = None,
    flush_rows: int = 256,
    progress: bool = True,
    command: str | None = None,
    backbone: Backbone | None = None,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Extract fc2 rows for every image under `directory` not yet in `output`.

    Resumable: rows are committed every `flush_rows` images, and a second run only
    computes what is missing, changed or new. Refuses a store made with other
    weights, model, layer, preprocessing, dtype or precision. `backbone`: an already
    loaded model to reuse across calls (it must match `weights`, `seed`, `dtype` and
    `precision`). With several GPUs, `batch_size` is per GPU.
    """
    log = log or _log_above_progress_bar
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    folder = scan_folder(directory)
    output = Path(output)
    _check_output(output)
    spec = WeightsSpec.parse(weights, seed)
    identity = pipeline_identity(spec.identity_string(), dtype, precision)
    if backbone is not None and backbone.identity != identity:
        raise ValueError("the backbone given makes other rows: "
                         f"{backbone.identity.differences(identity)}")
    for path, why in folder.ignored:
        log(f"ignored {path}: {why}")
    with exclusive_lock(output):
        remove_stale_temporaries(output)
        records = read_records(store_files(output), identity)
        stored_paths = [p for p in folder.files if p in records]
        present = hash_files(((p, folder.root / p) for p in stored_paths), workers)
        todo = [p for p in folder.files if p not in present or present[p] != records[p].sha256]
        stale = [p for p in records if p not in present]  # files gone from the folder
        attrs = _provenance(folder, spec, command)
        if not todo and not stale and not part_files(output) and output.exists():
            return _summary(output, folder, added=0, skipped_now=0, dropped=0,
                            elapsed=time.perf_counter() - started, up_to_date=True)
        added, skipped_now = 0, 0
        if todo:
            log(f"extracting {len(todo)} of {len(folder.files)} images in '{folder.root}' "
                f"with VGG16 {identity.layer}, weights {identity.weights}")
            backbone = backbone or Backbone(spec, dtype=dtype, precision=precision)
            batch_size *= getattr(backbone, "replicas", 1)  # --batch-size is per device
            writer = PartWriter(output, identity=identity, classes=folder.classes, attrs=attrs,
                                flush_rows=flush_rows)
            loop_start = time.perf_counter()
            with _stop_on_sigint() as stop_requested:
                for group in _progress(_embed_groups(folder, todo, backbone, batch_size, workers),
                                       len(todo), progress):
                    rows, paths, hashes = group
                    for path, sha, reason in hashes:
                        present[path] = sha
                        if reason is not None:
                            writer.add_skipped(path, reason, sha)
                            skipped_now += 1
                            log(f"skipped {folder.root / path}: {reason}")
                    if len(rows):
                        writer.add_rows(rows, paths, [present[p] for p in paths])
                        added += len(paths)
                    if stop_requested():
                        writer.commit()
                        stored = sum(1 for r in records.values() if r.row is not None) + added
                        raise Interrupted(output, stored, len(todo) - added - skipped_now)
                writer.commit()
            loop_elapsed = time.perf_counter() - loop_start
        result = consolidate(output, identity=identity, classes=folder.classes, present=present,
                             attrs={**attrs, "complete": True}, compression=compression)
        summary = _summary(output, folder, added=added, skipped_now=skipped_now,
                           dropped=result.dropped, elapsed=time.perf_counter() - started)
        if todo:
            summary.images_per_s = (added + skipped_now) / max(loop_elapsed, 1e-9)
        return summary


def _embed_groups(folder: ImageFolder, todo: list[str], backbone: Backbone, batch_size: int,
                  workers: int | None) -> Iterator[tuple[np.ndarray, list[str], list]]:
    """(rows, readable paths, [(path, sha256, reason or None)] for every file) per batch."""
    stream = decode_stream(((p, folder.root / p) for p in todo), size=INPUT_SIZE, workers=workers,
                           lookahead=2 * batch_size)
    for group in batched(stream, batch_size):
        readable = [d.key for d in group if d.pixels is not None]
        rows = backbone.embed(stack_pixels(group)) if readable else np.zeros((0, 0), np.float32)
        yield rows, readable, [(d.key, d.sha256, d.reason) for d in group]


def _log_above_progress_bar(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def _progress(groups, total: int, enabled: bool):
    """Advance a progress bar (images/s, ETA) by each group's file count."""
    with tqdm(total=total, unit="img", desc="extracting", disable=not enabled, file=sys.stderr,
              smoothing=0.1) as bar:
        for group in groups:
            yield group
            bar.update(len(group[2]))


@contextlib.contextmanager
def _stop_on_sigint():
    """First Ctrl-C asks the loop to stop after the current batch; a second one aborts."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        tqdm.write("stopping after the current batch (Ctrl-C again to abort at once)",
                   file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise StoreError(f"Output '{output}' is a directory; "
                         f"pass a file name such as {output}/features.h5.")
    if not output.parent.exists():
        raise StoreError(f"Output folder '{output.parent}' does not exist; create it first.")
    probe = output.parent / f".{output.name}.writable-{id(output)}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise StoreError(
            f"Cannot write to '{output.parent}' ({error.strerror}); choose another -o location."
        ) from None


def _provenance(folder: ImageFolder, spec: WeightsSpec, command: str | None) -> dict:
    attrs = {
        "source_dir": str(folder.root.resolve()),
        "seed": spec.seed,
        "weights_path": spec.path or "",
        "tool": "headstart",
        "tool_version": __version__,
        "command": command or "",
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **library_versions(),
    }
    return attrs


def _summary(output: Path, folder: ImageFolder, *, added: int, skipped_now: int, dropped: int,
             elapsed: float, up_to_date: bool = False) -> Summary:
    from ..features import open_store

    with open_store(output) as store:
        counts, rows, skipped = store.class_counts(), store.n_rows, store.skipped
    return Summary(output, rows, added, skipped, skipped_now, dropped, folder.ignored, counts,
                   elapsed, 0.0, output.stat().st_size, up_to_date)
