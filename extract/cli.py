"""`extract-features DIR`: parse arguments, run the extraction, report in plain words.

Exit status as in every headstart command (headstart.errors): 0 done, 2 bad input,
3 the store is busy, 4 disk full or I/O error, 130 interrupted (all resumable).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from headstart.cli import run_command
from headstart.errors import UsageError
from headstart.extract.backbones import DEFAULT_BACKBONE, format_table
from headstart.extract.images import MAX_FILE_BYTES
from headstart.extract.job import OPTIONS, Summary
from headstart.extract.labels import LabelSpec
from headstart.extract.precision import AUTO, CHOICES
from headstart.extract.runner import extract_features
from headstart.extract.sharding import parse_shard, slurm_shard
from headstart.features import schema
from headstart.options import argument_type
from headstart.words import count, not_images

ENGINES = ("local", "ray")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extract-features",
        description="Run a frozen ImageNet backbone (VGG16 fc2 by default) once over the images "
        "in DIR and store one feature row per image in a chunked HDF5 file. Re-running resumes "
        "an interrupted run and adds new images; nothing stored is recomputed.",
    )
    parser.add_argument("directory", metavar="DIR", nargs="?",
                        help="image folder: one sub-folder per class, or train/val/test folders "
                             "of class folders, or any layout with --labels, "
                             "--labels-from-name or --unlabelled")
    parser.add_argument("-o", "--output", default="features.h5",
                        help="store file (default: %(default)s)")
    model = parser.add_argument_group("backbone")
    model.add_argument("--backbone", default=DEFAULT_BACKBONE, metavar="NAME",
                       help="a keras.applications model, or a KerasHub preset: dinov2_base, "
                            "hf://..., kaggle://... or a preset folder, ./FOLDER (default: "
                            "%(default)s; --list-backbones shows all)")
    model.add_argument("--layer", metavar="LAYER",
                       help="store this layer's output instead of the backbone's default "
                            "(fc2 for VGG, else the pooled last stage); 4-d outputs are "
                            "average-pooled; KerasHub DINOv2 presets: cls_token")
    model.add_argument("--list-backbones", action="store_true",
                       help="print the backbones with input and feature sizes, and exit")
    model.add_argument(
        "--weights", default="imagenet",
        help="'imagenet' (Keras downloads and caches them), 'none' (seeded random init, for "
        "smoke tests) or PATH to a Keras weights file for the backbone; a KerasHub preset "
        "brings its own and takes no --weights (default: %(default)s)")
    model.add_argument("--seed", type=argument_type(OPTIONS["seed"]), default=0,
                       help="seed for --weights none (default: %(default)s)")
    labels = parser.add_argument_group("labels (default: the folders)")
    labels.add_argument("--labels", metavar="CSV",
                        help="a CSV of file and label (header detected; Kaggle's id,label works)")
    labels.add_argument("--file-column", metavar="NAME", help="the CSV's file column")
    labels.add_argument("--label-column", metavar="NAME", help="the CSV's label column")
    labels.add_argument("--labels-from-name", metavar="REGEX",
                        help=r"the class is the first group of REGEX on the file name, e.g. "
                             r"'^(cat|dog)\.' for Kaggle's cat.0.jpg")
    labels.add_argument("--unlabelled", action="store_true",
                        help="store rows without labels (to predict later with --features)")
    scale = parser.add_argument_group("many processes")
    scale.add_argument("--shard", metavar="I/N",
                       help="run shard I of N (from 0), or 'slurm' for this Slurm array task; "
                            "then `merge-features` stitches the shards")
    scale.add_argument("--engine", choices=ENGINES, default="local",
                       help="'ray': run the shards on a Ray cluster (pip install "
                            "\"headstart[ray]\") (default: %(default)s)")
    scale.add_argument("--ray-address", metavar="ADDR",
                       help="Ray cluster to join, e.g. 'auto' (default: start a local one)")
    scale.add_argument("--shards", type=argument_type(OPTIONS["batch_size"]), metavar="N",
                       help="shards for --engine ray (default: 4 per worker)")
    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", type=argument_type(OPTIONS["batch_size"]), default=32,
                     help="images per model call and per GPU, always this many (a short last "
                          "batch is padded), so rows do not depend on batching; all visible "
                          "GPUs are used (limit them with CUDA_VISIBLE_DEVICES) "
                          "(default: %(default)s)")
    run.add_argument("--dtype", choices=schema.STORAGE_DTYPES, default="float32",
                     help="storage type of the rows; float16 halves the file "
                          "(default: %(default)s)")
    run.add_argument("--precision", choices=CHOICES, default=AUTO,
                     help="backbone arithmetic. auto: mixed_float16 on NVIDIA GPUs of compute "
                          "capability 7.0+, mixed_bfloat16 on CPUs with AMX-BF16 or "
                          "AVX512-BF16, else float32; decided by a store's first run and "
                          "recorded, later runs follow it. Rows of another precision differ "
                          "slightly and are never mixed into a store (default: %(default)s)")
    run.add_argument("--compression", choices=schema.COMPRESSIONS, default="none",
                     help="HDF5 compression of the rows (default: %(default)s)")
    run.add_argument("--workers", type=argument_type(OPTIONS["workers"]), default=None,
                     help="decoding threads (default: one per CPU this process may use, "
                          "at most 16)")
    run.add_argument("--flush-every", type=argument_type(OPTIONS["flush_rows"]), default=256,
                     metavar="N", help="commit rows to disk every N images; a kill loses at "
                                       "most N (default: %(default)s)")
    run.add_argument("--max-file-size", type=argument_type(OPTIONS["max_file_mb"]),
                     default=MAX_FILE_BYTES >> 20, metavar="MB", dest="max_file_mb",
                     help="image files larger than this are skipped with a reason; each "
                          "decoding thread holds one file in memory (default: %(default)s)")
    run.add_argument("--verify", action="store_true",
                     help="re-hash every file instead of trusting unchanged size and "
                          "modification time")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _options(args: argparse.Namespace, argv: list[str]) -> dict:
    labels = LabelSpec(csv=args.labels, file_column=args.file_column,
                       label_column=args.label_column, regex=args.labels_from_name,
                       unlabelled=args.unlabelled)
    return dict(backbone=args.backbone, layer=args.layer, weights=args.weights, seed=args.seed,
                batch_size=args.batch_size, dtype=args.dtype, precision=args.precision,
                compression=args.compression, workers=args.workers, flush_rows=args.flush_every,
                labels=labels, verify=args.verify, progress=not args.quiet,
                max_file_mb=args.max_file_mb,
                command=shlex.join(["extract-features", *argv]))


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    if args.list_backbones:
        print(format_table())
        return 0
    if args.directory is None:
        raise UsageError("Give the image folder: extract-features DIR [-o features.h5].")
    options = _options(args, argv)
    if args.engine == "ray":
        if args.shard:
            raise UsageError("--engine ray runs every shard itself; leave out --shard.")
        from headstart.extract.ray_engine import extract_with_ray

        summary = extract_with_ray(args.directory, args.output, address=args.ray_address,
                                   shards=args.shards, **options)
    else:
        shard = _shard(args)
        summary = extract_features(args.directory, args.output, shard=shard, **options)
    print(format_summary(summary))
    return 0


def _shard(args: argparse.Namespace) -> tuple[int, int] | None:
    if not args.shard:
        return None
    parsed = parse_shard(args.shard)
    if parsed != "slurm":
        return parsed
    from headstart.features.shards import current_plan

    plan = current_plan(args.output)
    return slurm_shard(os.environ, plan.count if plan else None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command(build_parser(), lambda args: _main(args, argv), argv)


def _left_out(summary: Summary) -> str | None:
    return not_images(dict(summary.left_out.most_common()))


def format_summary(summary: Summary) -> str:
    """The closing report: what is stored, what was skipped or left out, how fast."""
    classes = ", ".join(f"{name} {count}" for name, count in summary.class_counts.items())
    classes = classes or "unlabelled"
    size_mb = summary.size_bytes / 1e6
    what = f"shard {summary.shard} of '{summary.output}'" if summary.shard else \
        f"'{summary.output}'"
    if summary.up_to_date:
        head = f"{what} is up to date: {summary.rows} images ({classes})"
    else:
        head = (f"stored {summary.rows} images in {what} ({size_mb:.1f} MB"
                + (f" in {summary.shards} shard files" if summary.shards else "")
                + f"), {summary.added} new this run; classes: {classes}")
    lines = [head]
    if summary.label_source == "none":
        lines.append("no labels: an unlabelled store (predict --features scores it)")
    elif summary.label_source != "folders":
        lines.append(f"labels from {summary.label_source}")
    if summary.skipped:
        lines.append(f"skipped {count(len(summary.skipped), 'unreadable file')} "
                     f"({summary.skipped_now} this run), recorded in the store under skipped/:")
        lines += [f"  {path}: {reason}" for path, reason in summary.skipped[:20]]
        if len(summary.skipped) > 20:
            lines.append(f"  ... and {len(summary.skipped) - 20} more (features-info lists them)")
    if left_out := _left_out(summary):
        lines.append(left_out)
    if summary.ignored:
        lines.append(f"ignored {count(len(summary.ignored), 'entry', 'entries')} "
                     "(see the warnings above)")
    if summary.notices:
        lines.append(f"{count(len(summary.notices), 'warning')} about the layout or labels "
                     "(see above)")
    if summary.dropped:
        lines.append(f"dropped {count(summary.dropped, 'stored row')} of files no longer in "
                     "the folder")
    if not summary.up_to_date:
        lines.append(f"elapsed {summary.elapsed_s:.1f} s, {summary.images_per_s:.1f} images/s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
