"""Benchmark every backbone of the table on this machine: speed, feature size, store size.

    python bench/backbones.py                        # every backbone (about an hour on 2 cores)
    python bench/backbones.py --only VGG16,ResNet50  # some
    python bench/backbones.py --quick                # fewer images per backbone

For each backbone: the bare feature model's images/s on pre-decoded batches (compiled,
as extract-features calls it), extract-features end to end on the same photos (JPEG
decode and resize at the backbone's input size included), the feature size, and the
size of 1,000 rows in a float32 store (float16 halves it). Weights are `none` (seeded):
speed and sizes do not depend on them, accuracy does, so there is no accuracy column
here (see README).
Also checks each model's feature size and input size against the table.
Writes bench/results/backbones.json and backbones.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import machine, subset  # noqa: E402 - the shared helpers of bench/run.py


def bench_one(name: str, folder: Path, work: Path, batch_size: int, batches: int) -> dict:
    from headstart.extract import Backbone, WeightsSpec, backbone_info, extract_features
    from headstart.extract.images import decode_pixels

    info = backbone_info(name)
    start = time.perf_counter()
    backbone = Backbone(WeightsSpec("none", 0), backbone=name)
    build_s = time.perf_counter() - start
    assert backbone.feature_dim == info.feature_dim, (name, backbone.feature_dim)
    assert tuple(backbone.model.input.shape[1:3]) == (info.input_size, info.input_size)
    photos = sorted(folder.rglob("*.jpg"))[:batch_size]
    pixels = np.stack([decode_pixels(p.read_bytes(), info.input_size) for p in photos])
    backbone.embed(pixels)  # compile
    best = float("inf")
    for _ in range(batches):
        began = time.perf_counter()
        backbone.embed(pixels)
        best = min(best, time.perf_counter() - began)
    bare = len(pixels) / best
    out = work / f"{name}.h5"
    summary = extract_features(folder, out, weights="none", backbone=name, model=backbone,
                               batch_size=batch_size, progress=False, log=lambda line: None)
    out.unlink()
    mb_per_1000 = info.feature_dim * 4 * 1000 / 1e6  # float32 rows; the index adds ~0.1 MB
    return {"input": info.input_size, "feature_dim": info.feature_dim, "build_s": build_s,
            "bare images/s": bare, "end to end images/s": summary.images_per_s,
            "end to end / bare": summary.images_per_s / bare,
            "store MB per 1,000 images": mb_per_1000}


def main() -> None:
    from headstart.extract.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BACKBONES), help="comma-separated names")
    parser.add_argument("--quick", action="store_true", help="32 images per backbone")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default=str(HERE / "results" / "backbones.json"))
    args = parser.parse_args()
    count = args.images or (32 if args.quick else 96)
    report = {"machine": machine(), "images": count, "backbones": {}}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset(Path(tmp) / "pets", count)
        for name in args.only.split(","):
            import keras

            keras.backend.clear_session()
            report["backbones"][name] = bench_one(name, folder, Path(tmp), args.batch_size,
                                                  2 if args.quick else 3)
            print(name, {k: round(v, 2) for k, v in report["backbones"][name].items()},
                  flush=True)
            output.write_text(json.dumps(report, indent=2))
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores visible; TensorFlow {m['tensorflow']}; "
           f"{report['images']} photos per backbone, weights none.\n",
           "| backbone | input | feature | bare model images/s | end to end images/s | "
           "ratio | store MB / 1,000 images |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["backbones"].items():
        out.append(f"| {name} | {r['input']} | {r['feature_dim']} | {r['bare images/s']:.1f} | "
                   f"{r['end to end images/s']:.1f} | {r['end to end / bare']:.2f} | "
                   f"{r['store MB per 1,000 images']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
