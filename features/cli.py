"""`features-info STORE` and `merge-features STORE`: inspect a store; stitch a sharded run.

Exit status as in every headstart command (headstart.errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from headstart.cli import run_command
from headstart.errors import StoreError
from headstart.features import schema
from headstart.features.journal import read_records, store_files
from headstart.features.reader import (
    check_shards,
    open_h5,
    open_store,
    part_files,
    read_index,
    writers_of,
)
from headstart.features.shards import current_plan, merge_shards, shard_status
from headstart.words import shown


def describe(path: str | Path, *, list_skipped: bool = False) -> str:
    """A few lines a person reads to decide whether a store is the one they want."""
    path = Path(path)
    pending = part_files(path)
    plan = current_plan(path)
    lines = [f"store: {path}"]
    if path.exists():
        with open_store(path, require_complete=False) as store:
            identity, attrs = store.identity, store.attrs
            chunks = store.features.chunks or f"virtual over {len(store.shards)} shard files"
            lines += [
                f"rows: {store.n_rows} x {store.dim} {identity.dtype} "
                f"(chunks {chunks}, compression {attrs.get('compression', 'none')})",
                _kind(store),
                f"skipped: {len(store.skipped)}",
                "layout: " + ("one self-contained file" if not store.shards else
                              f"spans {len(store.shards) + 1} files: this top file and "
                              f"{len(store.shards)} shard files in "
                              + _folders(store.shards, path)),
            ]
            skipped = store.skipped
            size = path.stat().st_size + sum(f.stat().st_size for f in store.shards)
    else:
        records = read_records(pending)
        identity, attrs = _part_identity(pending[0]) if pending else (None, {})
        if identity is None and plan is not None:
            from headstart.features.schema import Identity

            identity, attrs = Identity.from_attrs(plan.identity), plan.attrs
        skipped = [(p, r.reason) for p, r in records.items() if r.row is None]
        if plan is not None:
            done = sum(s.rows for s in shard_status(path, plan))
            lines.append(f"rows: none merged yet; {done} in finished shards")
        else:
            lines.append(f"rows: none finished yet; {len(records) - len(skipped)} in parts")
        if identity is None:
            raise StoreError(f"No feature store at '{path}': "
                             f"run `extract-features DIR -o {path}` first.")
        size = sum(f.stat().st_size for f in store_files(path))
    lines += [
        f"backbone: {identity.model} {identity.layer}"
        + (" (average-pooled)" if identity.pooling == "avg" else "")
        + f", input {identity.input_size}x{identity.input_size}",
        f"weights: {identity.weights}"
        + (f" ({attrs['weights_path']})" if attrs.get("weights_path") else ""),
        f"precision: {identity.precision} (the backbone's arithmetic; rows stored as "
        f"{identity.dtype})",
        f"preprocessing: {identity.preprocessing}",
        f"resize: {identity.resize}",
        f"made by: headstart {attrs.get('tool_version', '?')}, "
        f"tensorflow {attrs.get('version_tensorflow', '?')}",
        f"source: {attrs.get('source_dir', '?')}",
    ]
    writers = writers_of(path) if pending else []
    if pending and writers:
        state = ("yes, as it was before a running extract-features began adding images"
                 if path.exists() and attrs.get("complete") else
                 "no — a running extract-features is writing it")
        lines.append(f"complete: {state} ({', '.join(writers)}; {len(pending)} part files "
                     "so far); wait for it to finish")
    elif pending:
        lines.append(f"complete: no — its extraction was interrupted with {len(pending)} part "
                     f"files pending; run `{attrs.get('command') or 'extract-features'}` again "
                     "to finish")
    elif plan is not None:
        done = sum(s.state == "done" for s in shard_status(path, plan))
        lines.append(f"complete: no — sharded run under way: {done} of {plan.count} shards done "
                     f"({len(plan.todo):,} images); then run `merge-features {path}`")
    else:
        lines.append(f"complete: {'yes' if attrs.get('complete') else 'no'}")
    lines.append(f"size on disk: {size / 1e6:.1f} MB")
    if list_skipped:
        lines += [f"  skipped {shown(p)}: {shown(reason)}" for p, reason in skipped]
    return "\n".join(lines)


def _folders(shards: list[Path], store: Path) -> str:
    """Where the shard files are, as the store names them: 'features.h5.shards/'."""
    names = sorted({os.path.relpath(f.parent, store.parent) for f in shards})
    return ", ".join(f"'{name}/'" for name in names)


def _kind(store) -> str:
    if not store.labelled:
        return "labels: none (an unlabelled store: predict --features scores it)"
    counts = ", ".join(f"{shown(name)} {n}" for name, n in store.class_counts().items())
    line = f"classes: {len(store.classes)} ({counts}); labels from {store.label_source}"
    if store.given_splits is not None:
        given = Counter(store.given_splits)
        line += "; splits given by folders: " + ", ".join(
            f"{name} {given[name]}" for name in ("train", "validation", "test") if given[name])
    return line


def _part_identity(part: Path):
    with open_h5(part) as handle:
        index = read_index(handle)
    return index.identity, index.attrs


def info_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="features-info",
                                     description="Summarise a headstart feature store.")
    parser.add_argument("store", nargs="?", default="features.h5",
                        help="store file (default: %(default)s)")
    parser.add_argument("--skipped", action="store_true",
                        help="list every skipped file with its reason")
    return parser


def main(argv: list[str] | None = None) -> int:
    def run(args):
        print(describe(args.store, list_skipped=args.skipped))

    return run_command(info_parser(), run, argv)


def merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="merge-features",
        description="Stitch the finished shards of a sharded extraction (--shard I/N, Slurm, "
                    "Ray) into STORE: a virtual dataset over the shard files (no row copied), "
                    "or with --copy one self-contained file.")
    parser.add_argument("store", nargs="?", default="features.h5",
                        help="the -o of the shard workers (default: %(default)s)")
    parser.add_argument("--copy", action="store_true",
                        help="write one self-contained file sorted by path (to send or archive)")
    return parser


def merge_main(argv: list[str] | None = None) -> int:
    def run(args):
        path = Path(args.store)
        if current_plan(path) is None and args.copy and path.exists():
            result = copy_store(path)
        else:
            result = merge_shards(path, copy=args.copy)
        layout = ("one self-contained file" if result["copied"] else
                  f"a virtual dataset over {result['shards']} shard files")
        print(f"merged: '{path}' holds {result['rows']:,} rows as {layout}")

    return run_command(merge_parser(), run, argv)


def copy_store(path: Path) -> dict:
    """Rewrite a sharded store as one self-contained file sorted by path (no plan needed)."""
    from headstart.features.lock import exclusive_lock
    from headstart.features.stitch import remove_unreferenced_shards, write_rows_file

    with exclusive_lock(path):
        with open_h5(path) as handle:  # not open_store: it refuses a path stored twice
            index = read_index(handle)
            before = {f.resolve() for f in check_shards(handle[schema.FEATURES], path)}
        identity, classes, attrs = index.identity, index.classes, dict(index.attrs)
        given, skipped = index.splits is not None, index.skipped
        records = read_records([path], identity)  # one record per path: the last row
        rows = [(p, r) for p, r in sorted(records.items()) if r.row is not None]
        write_rows_file(path, [path], rows, identity=identity, classes=classes, skipped=skipped,
                        attrs=attrs, given_splits=given,
                        compression=attrs.get("compression", "none")
                        if attrs.get("compression") in ("none", "gzip", "lzf") else "none")
        remove_unreferenced_shards(path, before)
    return {"rows": len(rows), "shards": 0, "copied": True}


if __name__ == "__main__":
    sys.exit(main())
