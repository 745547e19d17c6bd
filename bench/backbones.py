"""Benchmark every backbone of the table on this machine: speed, feature size, store size.

    python bench/backbones.py                        # every backbone (about an hour on 2 cores)
    python bench/backbones.py --only VGG16,ResNet50  # some
    python bench/backbones.py --quick                # fewer images per backbone
    python bench/backbones.py --hub                  # the KerasHub families instead

For each backbone: the bare feature model's images/s on pre-decoded batches (compiled,
as extract-features calls it), extract-features end to end on the same photos (JPEG
decode and resize at the backbone's input size included), the feature size, and the
size of 1,000 rows in a float32 store (float16 halves it). Weights are `none` (seeded):
speed and sizes do not depend on them, accuracy does, so there is no accuracy column
here (see README).
Also checks each model's feature size and input size against the table.
Writes bench/results/backbones.json and backbones.md.

--hub measures the KerasHub families on presets of the real architectures (the configs of
dinov2_small, dinov2_base, dinov3_vit_small_lvd1689m, siglip_base_patch16_224,
clip_vit_base_patch32, vit_base_patch16_224_imagenet) saved with seeded random weights by
KerasHub's save_to_preset and loaded by from_preset, in float32 and at the auto precision;
"one batched call" is the feature model called on the whole batch at once, against
headstart's one call per image inside the graph (which keeps rows independent of
batching). Writes bench/results/backbones_hub.json and .md.
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


def bench_one(name: str, folder: Path, work: Path, batch_size: int, batches: int,
              precision: str = "float32") -> dict:
    from headstart.extract import Backbone, WeightsSpec, backbone_info, extract_features
    from headstart.extract.images import decode_pixels

    info = backbone_info(name)
    start = time.perf_counter()
    # A KerasHub preset's weights are the ones saved with it (seeded random, see --hub).
    spec = WeightsSpec("imagenet" if info.preset else "none", 0)
    backbone = Backbone(spec, backbone=name, precision=precision, batch_size=batch_size)
    build_s = time.perf_counter() - start
    assert backbone.feature_dim == info.feature_dim, (name, backbone.feature_dim)
    assert tuple(backbone.model.input.shape[1:3]) == (info.input_size, info.input_size)
    photos = sorted(folder.rglob("*.jpg"))[:batch_size]
    pixels = np.stack([decode_pixels(p.read_bytes(), info.input_size, info.resize)
                       for p in photos])
    backbone.embed(pixels)  # compile
    best = float("inf")
    for _ in range(batches):
        began = time.perf_counter()
        backbone.embed(pixels)
        best = min(best, time.perf_counter() - began)
    bare = len(pixels) / best
    extra = {}
    if info.preset:  # headstart's per-image calls against one batched call of the model
        import tensorflow as tf

        batched = tf.function(lambda x: backbone.model(x, training=False))
        inputs = backbone.preprocess(pixels)
        batched(inputs)
        fastest = float("inf")
        for _ in range(batches):
            began = time.perf_counter()
            np.asarray(batched(inputs))
            fastest = min(fastest, time.perf_counter() - began)
        extra["batched call images/s"] = len(pixels) / fastest
    out = work / f"{Path(name).name}.h5"
    summary = extract_features(folder, out, weights=spec.source, backbone=name, model=backbone,
                               batch_size=batch_size, precision=backbone.identity.precision,
                               progress=False, log=lambda line: None)
    out.unlink()
    mb_per_1000 = info.feature_dim * 4 * 1000 / 1e6  # float32 rows; the index adds ~0.1 MB
    return {"input": info.input_size, "feature_dim": info.feature_dim, "build_s": build_s,
            "precision": backbone.identity.precision, "layer": info.layer,
            "bare images/s": bare, "end to end images/s": summary.images_per_s,
            "end to end / bare": summary.images_per_s / bare,
            "store MB per 1,000 images": mb_per_1000, **extra}


def main() -> None:
    from headstart.extract.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BACKBONES), help="comma-separated names")
    parser.add_argument("--quick", action="store_true", help="32 images per backbone")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default=None,
                        help="default: bench/results/backbones.json (--hub: backbones_hub.json)")
    parser.add_argument("--hub", action="store_true", help="the KerasHub families instead")
    args = parser.parse_args()
    count = args.images or (32 if args.quick else 96)
    if args.hub:
        return hub_main(args, count, args.only != ",".join(BACKBONES))
    args.output = args.output or str(HERE / "results" / "backbones.json")
    report = {"machine": machine(), "images": count, "backbones": {}}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset(Path(tmp) / "pets", count)
        for name in args.only.split(","):
            import keras

            keras.backend.clear_session()
            record(report, name, bench_one(name, folder, Path(tmp), args.batch_size,
                                           2 if args.quick else 3), output)
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def record(report: dict, key: str, row: dict, output: Path) -> None:
    """Add one result, print it, and rewrite the JSON (results are kept as they come)."""
    report["backbones"][key] = row
    print(key, {k: v if isinstance(v, str) else round(v, 2) for k, v in row.items()},
          flush=True)
    output.write_text(json.dumps(report, indent=2))


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


# ---- KerasHub families ---------------------------------------------------------------------

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CLIP_NORM = {"mean": (0.48145466, 0.4578275, 0.40821073),
             "std": (0.26862954, 0.26130258, 0.27577711)}
BASE = {"num_layers": 12, "num_heads": 12, "hidden_dim": 768}
SMALL = {"num_layers": 12, "num_heads": 6, "hidden_dim": 384}


def architecture_presets(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Presets with the architectures and converters of six KerasHub presets (their configs
    in KerasHub 0.32), seeded random weights, saved by save_to_preset."""
    import warnings

    import keras
    import keras_hub

    m, layers = keras_hub.models, keras_hub.layers

    def converter(cls, norm=None, **kwargs):
        if norm:
            kwargs["scale"] = [1 / (255 * s) for s in norm["std"]]
            kwargs["offset"] = [-a / s for a, s in zip(norm["mean"], norm["std"], strict=True)]
        else:
            kwargs.update(scale=1 / 127.5, offset=-1.0)
        return cls(image_size=(224, 224), **kwargs)

    def dinov2(**size):
        return m.DINOV2Backbone(patch_size=14, intermediate_dim=4 * size["hidden_dim"],
                                image_shape=(224, 224, 3),
                                position_embedding_shape=(518, 518, 3), **size)

    def text(cls, dim, heads, vocabulary):
        return cls(vocabulary_size=vocabulary, embedding_dim=dim, hidden_dim=dim, num_layers=12,
                   num_heads=heads, intermediate_dim=4 * dim)

    builders = {
        "dinov2_small": lambda: (dinov2(**SMALL), converter(
            layers.DINOV2ImageConverter, IMAGENET, interpolation="bicubic", antialias=True)),
        "dinov2_base": lambda: (dinov2(**BASE), converter(
            layers.DINOV2ImageConverter, IMAGENET, interpolation="bicubic", antialias=True)),
        "dinov3_vit_small_lvd1689m": lambda: (m.DINOV3Backbone(
            patch_size=16, intermediate_dim=1536, image_shape=(224, 224, 3),
            num_register_tokens=4, **SMALL), converter(layers.DINOV3ImageConverter, IMAGENET)),
        "siglip_base_patch16_224": lambda: (m.SigLIPBackbone(
            m.SigLIPVisionEncoder(patch_size=16, intermediate_dim=3072,
                                  image_shape=(224, 224, 3), **BASE),
            text(m.SigLIPTextEncoder, 768, 12, 32000)),
            converter(layers.SigLIPImageConverter, interpolation="bicubic",
                      crop_to_aspect_ratio=False)),
        "clip_vit_base_patch32": lambda: (m.CLIPBackbone(
            m.CLIPVisionEncoder(patch_size=32, intermediate_dim=3072,
                                image_shape=(224, 224, 3), **BASE),
            text(m.CLIPTextEncoder, 512, 8, 49408), projection_dim=512),
            converter(layers.CLIPImageConverter, CLIP_NORM, interpolation="bicubic")),
        "vit_base_patch16_224_imagenet": lambda: (m.ViTBackbone(
            image_shape=(224, 224, 3), patch_size=16, mlp_dim=3072, **BASE),
            converter(layers.ViTImageConverter)),
    }
    folders = {}
    for name, build in builders.items():
        if names and name not in names:
            continue
        folders[name] = root / name
        keras.utils.set_random_seed(0)
        backbone, image_converter = build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            backbone.save_to_preset(str(folders[name]))
        image_converter.save_to_preset(str(folders[name]))
        keras.backend.clear_session()
    return folders


def hub_main(args, count: int, chosen: bool) -> None:
    output = Path(args.output or HERE / "results" / "backbones_hub.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "images": count, "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = subset(Path(tmp) / "pets", count)
        presets = architecture_presets(Path(tmp) / "presets",
                                       args.only.split(",") if chosen else None)
        for name, preset in presets.items():
            for precision in ("float32", "auto"):
                import keras

                keras.backend.clear_session()
                row = bench_one(str(preset), folder, Path(tmp), args.batch_size,
                                2 if args.quick else 3, precision)
                record(report, f"{name} {row['precision']}", row, output)
    output.with_suffix(".md").write_text(hub_markdown(report))
    print(hub_markdown(report))


def hub_markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores visible; TensorFlow {m['tensorflow']}; "
           f"{report['images']} photos per preset, seeded random weights.\n",
           "| preset (architecture) | precision | input | feature | dim | bare images/s | "
           "one batched call images/s | end to end images/s | ratio | "
           "store MB / 1,000 images |",
           "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in report["backbones"].items():
        out.append(f"| {name.split()[0]} | {r['precision']} | {r['input']} | {r['layer']} | "
                   f"{r['feature_dim']} | {r['bare images/s']:.2f} | "
                   f"{r['batched call images/s']:.2f} | "
                   f"{r['end to end images/s']:.2f} | {r['end to end / bare']:.2f} | "
                   f"{r['store MB per 1,000 images']:.1f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
