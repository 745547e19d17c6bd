"""`features-info FILE`: what a store holds, how it was made, and whether it is finished."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .journal import read_records, store_files
from .reader import StoreError, open_store, part_files


def describe(path: str | Path, *, list_skipped: bool = False) -> str:
    """A few lines a person reads to decide whether a store is the one they want."""
    path = Path(path)
    pending = part_files(path)
    lines = [f"store: {path}"]
    if path.exists():
        with open_store(path, require_complete=False) as store:
            counts = ", ".join(f"{name} {n}" for name, n in store.class_counts().items())
            identity, attrs = store.identity, store.attrs
            lines += [
                f"rows: {store.n_rows} x {store.dim} {identity.dtype} "
                f"(chunks {store.features.chunks}, compression {attrs.get('compression', 'none')})",
                f"classes: {len(store.classes)} ({counts})",
                f"skipped: {len(store.skipped)}",
            ]
            skipped = store.skipped
    else:
        records = read_records(pending)
        identity, attrs = _part_identity(pending[0]) if pending else (None, {})
        skipped = [(p, r.reason) for p, r in records.items() if r.row is None]
        lines.append(f"rows: none consolidated yet; {len(records) - len(skipped)} in parts")
        if identity is None:
            raise StoreError(f"No feature store at '{path}': "
                             f"run `extract-features DIR -o {path}` first.")
    lines += [
        f"model: {identity.model} {identity.layer}, "
        f"input {identity.input_size}x{identity.input_size}",
        f"weights: {identity.weights}"
        + (f" ({attrs['weights_path']})" if attrs.get("weights_path") else ""),
        f"preprocessing: {identity.preprocessing}",
        f"resize: {identity.resize}",
        f"made by: headstart {attrs.get('tool_version', '?')}, "
        f"tensorflow {attrs.get('version_tensorflow', '?')}",
        f"source: {attrs.get('source_dir', '?')}",
    ]
    size = sum(f.stat().st_size for f in store_files(path))
    if pending:
        lines.append(f"complete: no — {len(pending)} part files pending; "
                     f"run `{attrs.get('command') or 'extract-features'}` again to finish")
    else:
        lines.append(f"complete: {'yes' if attrs.get('complete') else 'no'}")
    lines.append(f"size on disk: {size / 1e6:.1f} MB")
    if list_skipped:
        lines += [f"  skipped {p}: {reason}" for p, reason in skipped]
    return "\n".join(lines)


def _part_identity(part: Path):
    from .reader import open_h5, read_index

    with open_h5(part) as handle:
        index = read_index(handle)
    return index.identity, index.attrs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="features-info",
                                     description="Summarise a headstart feature store.")
    parser.add_argument("store", nargs="?", default="features.h5",
                        help="store file (default: %(default)s)")
    parser.add_argument("--skipped", action="store_true",
                        help="list every skipped file with its reason")
    args = parser.parse_args(argv)
    try:
        print(describe(args.store, list_skipped=args.skipped))
    except StoreError as error:
        print(f"features-info: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
