"""A planted corpus for measuring the audit: real pet photos with known faults added.

    python bench/corpus.py OUT_DIR [--photos pets-1k/] [--seed 0]

From a folder of class sub-folders of JPEGs (default: pets-1k beside the checkout) it
writes OUT_DIR/{Cat,Dog}/img-NNNN.* (neutral names, shuffled, so nothing but the truth
file tells a plant from an original) and OUT_DIR/truth.json:

- label flips: 5% of the originals are filed under the other class;
- near duplicates across splits: 20 originals get a JPEG quality-40 re-encode and a
  resized copy (one side scaled by 0.6..0.8 or 1.3..1.5), filed under the same class,
  each copy landing in another split than its original under fit-head's default split
  (seed 0, 70/15/15 by sha256); originals are drawn at random until 20 qualify;
- near duplicates within a split: 20 other originals get a quality-40 re-encode and 20
  more a resized copy, each copy landing in its original's split (kinds
  `reencode_within`, `resize_within`); drawn the same way, after the ones above;
- byte copies under the other class: 10 originals copied byte for byte into the other
  class folder (same sha256, two labels);
- 20 non-pet images, half under each class: 7 blank frames (uniform colours), 7 text
  cards (dark text on a light card), 6 noise images (uniform random pixels).

Only Pillow and headstart's split rule are used; no features are computed here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from headstart.classify.split import assign_splits

HERE = Path(__file__).resolve().parent
PETS = HERE.parent.parent / "shared" / "data" / "pets-1k"
WORDS = ["INVOICE", "Chapter 3", "Lorem ipsum dolor", "EXIT", "Table of contents", "42",
         "Meeting at noon", "Page 17", "Receipt #5531"]


def _split(data: bytes, seed: int = 0) -> int:
    """0 train, 1 validation, 2 test: where fit-head's default split puts these bytes."""
    return int(assign_splits([hashlib.sha256(data).hexdigest()], seed=seed)[0])


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


SHADES = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (240, 235, 220), (30, 60, 160),
          (200, 40, 40), (90, 160, 90)]
OTHER_SHADES = [(250, 220, 60), (60, 30, 90), (180, 180, 200), (20, 110, 110)]


def _non_pet(kind: str, index: int, rng: random.Random, shades=SHADES) -> bytes:
    size = (200, 160)
    if kind == "blank":
        return _jpeg(Image.new("RGB", size, shades[index % len(shades)]), 90)
    if kind == "text":
        card = Image.new("RGB", size, (250, 250, 245 - 5 * index))
        draw = ImageDraw.Draw(card)
        font = ImageFont.load_default(size=18 + 2 * index)
        for line in range(3):
            draw.text((10, 15 + 45 * line), rng.choice(WORDS), fill=(20, 20, 20), font=font)
        return _jpeg(card, 90)
    noise = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    return _jpeg(noise, 90)


def build(out: Path, photos: Path = PETS, seed: int = 0) -> dict:
    """Write the corpus into `out` (replaced) and return the truth written to truth.json."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    originals = [(c, p) for c in classes for p in sorted((photos / c).glob("*.jpg"))]
    other = {c: next(o for o in classes if o != c) for c in classes}
    files: list[tuple[str, bytes, dict]] = []  # (class folder, bytes, what it is)
    order = list(range(len(originals)))
    rng.shuffle(order)
    n_flips = round(0.05 * len(originals))
    flipped = set(order[:n_flips])
    byte_copies = order[n_flips:n_flips + 10]
    used = flipped | set(byte_copies)
    for i, (cls, path) in enumerate(originals):
        data = path.read_bytes()
        folder = other[cls] if i in flipped else cls
        files.append((folder, data, {"kind": "flip" if i in flipped else "original",
                                     "true_class": cls, "source": f"{cls}/{path.name}"}))
    for i in byte_copies:
        cls, path = originals[i]
        files.append((other[cls], path.read_bytes(),
                      {"kind": "byte_copy", "true_class": cls, "source": f"{cls}/{path.name}"}))
    near = 0
    for i in order[n_flips + 10:]:
        if near == 20:
            break
        cls, path = originals[i]
        data = path.read_bytes()
        with Image.open(path) as image:
            image.load()
            scale = rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.3, 1.5)])
            resized = image.resize((round(image.width * scale), round(image.height * scale)),
                                   Image.BICUBIC)
            copies = {"reencode": _jpeg(image, 40), "resize": _jpeg(resized, 90)}
        if any(_split(c) == _split(data) for c in copies.values()):
            continue  # both copies must cross splits
        near += 1
        used.add(i)
        for kind, copy in copies.items():
            files.append((cls, copy, {"kind": kind, "true_class": cls,
                                      "source": f"{cls}/{path.name}"}))
    within = {"reencode_within": 0, "resize_within": 0}
    for i in order[n_flips + 10:]:
        if min(within.values()) == 20:
            break
        if i in used:
            continue
        cls, path = originals[i]
        data = path.read_bytes()
        kind = "reencode_within" if within["reencode_within"] < 20 else "resize_within"
        with Image.open(path) as image:
            image.load()
            if kind == "reencode_within":
                copy = _jpeg(image, 40)
            else:
                scale = rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.3, 1.5)])
                copy = _jpeg(image.resize((round(image.width * scale),
                                           round(image.height * scale)), Image.BICUBIC), 90)
        if _split(copy) != _split(data):
            continue  # the copy must share its original's split
        within[kind] += 1
        used.add(i)
        files.append((cls, copy, {"kind": kind, "true_class": cls,
                                  "source": f"{cls}/{path.name}"}))
    for j in range(20):
        kind = ["blank"] * 7 + ["text"] * 7 + ["noise"] * 6
        files.append((classes[j % 2], _non_pet(kind[j], j, rng),
                      {"kind": kind[j], "true_class": None, "source": None}))
    if out.exists():
        shutil.rmtree(out)
    rng.shuffle(files)
    truth = {"seed": seed, "photos": str(photos), "rows": {}}
    sources: dict[str, str] = {}
    for n, (folder, data, what) in enumerate(files):
        suffix = ".jpg"
        name = f"{folder}/img-{n:04d}{suffix}"
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        what["split"] = ("train", "validation", "test")[_split(data)]
        truth["rows"][name] = what
        if what["kind"] in ("original", "flip"):
            sources[what["source"]] = name
    for what in truth["rows"].values():  # where each copy's original went
        if what["kind"] in ("reencode", "resize", "byte_copy", "reencode_within",
                            "resize_within"):
            what["original"] = sources[what["source"]]
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def build_calibration(out: Path, corpus: Path, photos: Path = PETS, seed: int = 1) -> dict:
    """A separate set to choose settings on, disjoint from the corpus's planted images.

    20 originals that the corpus left untouched (no flip, copy or re-encode), each with a
    JPEG quality-40 re-encode and a resized copy, and 10 other non-pet images (4 blank
    frames in other colours, 4 text cards with other words, 2 noise images). Written to
    out/{Cat,Dog}/ with truth in out/truth.json, like `build`. Last, a mirrored and a
    cropped (central 5/7) copy of 5 of the originals, to measure what the audit misses.
    """
    rng = random.Random(seed)
    used = {t["source"] for t in json.loads((corpus / "truth.json").read_text())["rows"].values()
            if t["kind"] != "original"}
    candidates = [p for p in sorted(photos.glob("*/*.jpg"))
                  if f"{p.parent.name}/{p.name}" not in used]
    if out.exists():
        shutil.rmtree(out)
    truth = {"seed": seed, "photos": str(photos), "rows": {}}
    n = 0

    def put(folder: str, data: bytes, what: dict) -> str:
        nonlocal n
        name = f"{folder}/cal-{n:04d}.jpg"
        n += 1
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        truth["rows"][name] = what
        return name

    for path in rng.sample(candidates, 20):
        cls = path.parent.name
        original = put(cls, path.read_bytes(), {"kind": "original", "true_class": cls,
                                                "source": f"{cls}/{path.name}"})
        with Image.open(path) as image:
            image.load()
            scale = rng.choice([rng.uniform(0.6, 0.8), rng.uniform(1.3, 1.5)])
            resized = image.resize((round(image.width * scale), round(image.height * scale)),
                                   Image.BICUBIC)
            for kind, data in (("reencode", _jpeg(image, 40)), ("resize", _jpeg(resized, 90))):
                put(cls, data, {"kind": kind, "true_class": cls, "original": original})
    kinds = ["blank"] * 4 + ["text"] * 4 + ["noise"] * 2
    for j, kind in enumerate(kinds):
        put(("Cat", "Dog")[j % 2], _non_pet(kind, j + 3, rng, OTHER_SHADES), {"kind": kind})
    # What the audit cannot see: mirrored and cropped copies of the first 5 originals.
    firsts = [(name, t) for name, t in truth["rows"].items() if t["kind"] == "original"][:5]
    for name, what in firsts:
        with Image.open(out / name) as image:
            image.load()
            w, h = image.size
            edits = {"hflip": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                     "crop": image.crop((w // 7, h // 7, w - w // 7, h - h // 7))}
            for kind, edited in edits.items():
                put(what["true_class"], _jpeg(edited, 90),
                    {"kind": kind, "true_class": what["true_class"], "original": name})
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def build_holdout(out: Path, seed: int = 2) -> dict:
    """Non-pet images made only to check the outlier score after it was chosen.

    30 images in a group larger than the audit's k: 12 blank frames in random colours,
    12 text cards and 6 noise images, drawn with another seed than the corpus's and the
    calibration set's, half under each class. Written to out/{Cat,Dog}/ with truth in
    out/truth.json, like `build`; bench/audit.py ranks them among the corpus's photos.
    """
    rng = random.Random(seed)
    if out.exists():
        shutil.rmtree(out)
    truth = {"seed": seed, "rows": {}}
    shades = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(12)]
    kinds = ["blank"] * 12 + ["text"] * 12 + ["noise"] * 6
    for j, kind in enumerate(kinds):
        folder = ("Cat", "Dog")[j % 2]
        name = f"{folder}/holdout-{j:04d}.jpg"
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(_non_pet(kind, j % 12, rng, shades))
        truth["rows"][name] = {"kind": kind}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=Path, default=PETS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-for", type=Path, metavar="CORPUS",
                        help="write the calibration set for this corpus instead")
    args = parser.parse_args()
    if args.calibration_for:
        truth = build_calibration(args.out, args.calibration_for, args.photos)
    else:
        truth = build(args.out, args.photos, args.seed)
    kinds: dict[str, int] = {}
    for what in truth["rows"].values():
        kinds[what["kind"]] = kinds.get(what["kind"], 0) + 1
    print(f"{args.out}: {len(truth['rows'])} images; " + ", ".join(
        f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
