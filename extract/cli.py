"""`extract-features DIR`: parse arguments, call extract_features, report in plain words."""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
import warnings

from ..features import StoreBusyError, StoreError
from ..features.schema import COMPRESSIONS, STORAGE_DTYPES
from .backbone import PRECISIONS, WeightsError
from .images import FolderError
from .runner import Interrupted, Summary, extract_features


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extract-features",
        description="Run a frozen ImageNet VGG16 once over DIR (one sub-folder per class) and "
        "store the 4096-d fc2 row of every image in a chunked HDF5 file. Re-running resumes "
        "an interrupted run and adds new images; nothing stored is recomputed.",
    )
    parser.add_argument("directory", metavar="DIR", help="folder with one sub-folder per class")
    parser.add_argument("-o", "--output", default="features.h5",
                        help="store file (default: %(default)s)")
    parser.add_argument(
        "--weights", default="imagenet",
        help="'imagenet' (Keras downloads and caches them), 'none' (seeded random init, for "
        "smoke tests) or PATH to a Keras VGG16 weights file (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for --weights none (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per model call and per GPU; all visible GPUs are used "
                        "(limit them with CUDA_VISIBLE_DEVICES) (default: %(default)s)")
    parser.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                        help="storage type of the rows; float16 halves the file "
                        "(default: %(default)s)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="backbone arithmetic: mixed_float16 is several times faster on "
                        "NVIDIA GPUs; rows differ slightly and are never mixed with float32 ones "
                        "(default: %(default)s)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="none",
                        help="HDF5 compression of the rows (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: one per CPU core, at most 16)")
    parser.add_argument("--flush-every", type=int, default=256, metavar="N",
                        help="commit rows to disk every N images; a kill loses at most N "
                        "(default: %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # Pillow warns about odd-but-readable files; they are decoded, and bad ones are reported.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    try:
        summary = extract_features(
            args.directory, args.output, weights=args.weights, seed=args.seed,
            batch_size=args.batch_size, dtype=args.dtype, precision=args.precision,
            compression=args.compression,
            workers=args.workers, flush_rows=args.flush_every, progress=not args.quiet,
            command=shlex.join(["extract-features", *argv]),
        )
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return 130
    except (FolderError, StoreError, WeightsError, StoreBusyError, ValueError) as error:
        print(f"extract-features: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"extract-features: {_os_error_sentence(error, args.output)}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


def _os_error_sentence(error: OSError, output: str) -> str:
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or "No space left" in str(error):
        return (f"Ran out of disk space while writing '{output}' ({error.strerror}); free some "
                "space and run the same command again: everything committed so far is kept.")
    return (f"{error.strerror or error} ({error.filename or output}); fix that and run the same "
            "command again: everything committed so far is kept.")


def format_summary(summary: Summary) -> str:
    """The closing report: what is stored, what was skipped, how fast."""
    classes = ", ".join(f"{name} {count}" for name, count in summary.class_counts.items())
    size_mb = summary.size_bytes / 1e6
    if summary.up_to_date:
        head = f"'{summary.output}' is up to date: {summary.rows} images ({classes})"
    else:
        head = (f"stored {summary.rows} images in '{summary.output}' ({size_mb:.1f} MB), "
                f"{summary.added} new this run; classes: {classes}")
    lines = [head]
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)} unreadable files "
                     f"({summary.skipped_now} this run), recorded in the store under skipped/:")
        lines += [f"  {path}: {reason}" for path, reason in summary.skipped[:20]]
        if len(summary.skipped) > 20:
            lines.append(f"  ... and {len(summary.skipped) - 20} more (features-info lists them)")
    if summary.ignored:
        lines.append(f"ignored {len(summary.ignored)} entries (see the warnings above)")
    if summary.dropped:
        lines.append(f"dropped {summary.dropped} stored rows of files no longer in the folder")
    if not summary.up_to_date:
        lines.append(f"elapsed {summary.elapsed_s:.1f} s, {summary.images_per_s:.1f} images/s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
