"""What headstart's decoding does to a KerasHub preset's rows, against the preset's own pipeline.

    python bench/hub_resize.py                  # 64 photos, a random DINOv2-S/14 at 224
    python bench/hub_resize.py --preset ./dinov2_small --count 200

headstart decodes each image (EXIF, modes, JPEG DCT scaling) and hands the uint8 pixels at
the image's own aspect ratio to the preset's ImageConverter geometry. The preset authors'
pipeline runs the converter on the fully decoded file. This measures, on the same photos:

  draft      headstart's rows vs the converter on the full decode: the only difference is
             the JPEG DCT scaling, which applies to JPEGs at least twice the input size;
  squash     PIL's bilinear squash to the input size (how keras.applications backbones are
             fed) vs the converter: what feeding a crop preset squashed pixels would change;
  geometry   the converter with the other geometry (squash for a crop preset) vs the
             converter: the error SigLIP users report from a shortest-side crop.

Photos: pets-1k (180x180 JPEGs) cropped to 3:2 and 2:3 non-square JPEGs, and the same
enlarged 4x with PIL's bicubic filter and saved as JPEG (quality 90), so that the DCT
scaling applies (a 224 converter drafts JPEGs from 448 pixels on their short side). For
each comparison: mean absolute pixel difference after the resize (0-255 levels) and the
rows' cosine distance (1 - cos) and relative L2 difference (|a - b| / |b|), median and
largest. With random weights the row numbers show how far pixels move a row, not accuracy.
Writes bench/results/hub_resize.json and hub_resize.md.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import PETS, machine  # noqa: E402 - the shared helpers of bench/run.py


def random_preset(folder: Path) -> Path:
    """A DINOv2-S/14-shaped preset with random weights (seed 0) and dinov2_small's converter
    geometry (224, bicubic, antialias, centre crop; ImageNet mean and std)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=12, hidden_dim=384, num_heads=6, intermediate_dim=1536,
        image_shape=(224, 224, 3), position_embedding_shape=(518, 518, 3))
    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(224, 224), interpolation="bicubic", antialias=True,
        scale=[1 / (255 * s) for s in std],
        offset=[-m / s for m, s in zip(mean, std, strict=True)])
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


def photos(count: int) -> list[tuple[str, bytes]]:
    """(kind, JPEG bytes): non-square crops of pets-1k, and the same enlarged 4x."""
    from PIL import Image

    out = []
    for index, path in enumerate(sorted(PETS.rglob("*.jpg"))[:count]):
        image = Image.open(path).convert("RGB")
        w, h = image.size
        box = (0, h // 6, w, h - h // 6) if index % 2 else (w // 6, 0, w - w // 6, h)
        crop = image.crop(box)
        for kind, picture in (("small", crop), ("enlarged", crop.resize(
                (crop.width * 4, crop.height * 4), Image.BICUBIC))):
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=90)
            out.append((kind, buffer.getvalue()))
    return out


def full_decode(data: bytes) -> np.ndarray:
    """The whole file decoded, upright, RGB: what the authors' pipeline resizes.
    headstart's own decoding, with a size so large that no DCT scaling applies."""
    from headstart.extract.images import decode_pixels

    return decode_pixels(data, size=1 << 30, resize=lambda rgb: rgb)


def stats(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "max": float(np.max(values))}


def compare(pixels: dict, rows: dict, name: str, kinds: list[str]) -> dict:
    result = {}
    for kind in sorted(set(kinds)):
        pick = [i for i, k in enumerate(kinds) if k == kind]
        a, b = rows[name][pick], rows["converter"][pick]
        cosine = 1 - np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        result[kind] = {
            "pixel_mean_abs": stats([float(np.abs(pixels[name][i] - pixels["converter"][i])
                                           .mean()) for i in pick]),
            "cosine_distance": stats(cosine.tolist()),
            "relative_l2": stats((np.linalg.norm(a - b, axis=1)
                                  / np.linalg.norm(b, axis=1)).tolist()),
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", help="a KerasHub preset folder (default: a random "
                                         "DINOv2-S/14 at 224)")
    parser.add_argument("--count", type=int, default=64, help="pets-1k photos (default 64)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    from PIL import Image

    from headstart.extract import Backbone, WeightsSpec
    from headstart.extract.hub import ConverterResize
    from headstart.extract.images import decode_pixels

    with tempfile.TemporaryDirectory() as work:
        preset = args.preset or str(random_preset(Path(work) / "dinov2_s14_random"))
        backbone = Backbone(WeightsSpec("imagenet"), backbone=preset, batch_size=8)
        resize, size = backbone.resize, backbone.input_size
        other = ConverterResize(size, resize.interpolation, resize.antialias,
                                not resize.crop_to_aspect_ratio, resize.pad_to_aspect_ratio)
        files = photos(args.count)
        kinds = [kind for kind, _ in files]
        drafted = [min(Image.open(io.BytesIO(data)).size) >= 2 * size for _, data in files]
        pixels = {"converter": [], "draft": [], "squash": [], "geometry": []}
        for _, data in files:
            whole = full_decode(data)
            pixels["converter"].append(resize(whole))
            pixels["draft"].append(decode_pixels(data, size, resize))
            pixels["squash"].append(decode_pixels(data, size).astype(np.float32))
            pixels["geometry"].append(other(whole))
        rows = {name: backbone.embed(np.stack(values)) for name, values in pixels.items()}
    report = {
        "machine": machine(), "preset": args.preset or "random DINOv2-S/14, 224, seed 0",
        "converter": resize.describe(), "photos": {kind: kinds.count(kind) for kind in
                                                   sorted(set(kinds))},
        "drafted": {kind: int(sum(d for d, k in zip(drafted, kinds, strict=True) if k == kind))
                    for kind in sorted(set(kinds))},
        "comparisons": {name: compare(pixels, rows, name, kinds)
                        for name in ("draft", "squash", "geometry")},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hub_resize.json").write_text(json.dumps(report, indent=2))
    lines = ["| compared with the converter on the full decode | photos | pixels, mean abs "
             "(median / max) | rows, 1 - cos (median / max) | rows, relative L2 (median / "
             "max) |", "| --- | --- | ---: | ---: | ---: |"]
    for name, by_kind in report["comparisons"].items():
        for kind, numbers in by_kind.items():
            cells = [f"{numbers[key]['median']:.3g} / {numbers[key]['max']:.3g}"
                     for key in ("pixel_mean_abs", "cosine_distance", "relative_l2")]
            lines.append(f"| {name} | {kind} ({report['drafted'][kind]} of "
                         f"{report['photos'][kind]} drafted) | " + " | ".join(cells) + " |")
    (out / "hub_resize.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
