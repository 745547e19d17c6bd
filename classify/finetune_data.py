"""The images fine-tune trains on: the store's images, checked, on the head's split, augmented.

The store records each image's path (relative to the folder it was extracted from, its
`source_dir` attribute) and the sha256 of its bytes; the head's split.csv records which
split fit-head put each image in. An image is used only when its file is still there
with the same bytes, and it keeps the split the head was fitted and tested with, so the
test images stay unseen by both phases.

Augmentation (training batches only) is a random horizontal flip and a small random
crop, a square of 85-100% of the side at a random place, resized back with PIL's
bilinear filter (Géron, Hands-On ML, ch. 14: flips and crops for a small data set).
Both depend only on (seed, epoch, image), and the order of each epoch only on
(seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.classify.dataset import Dataset
from headstart.classify.head import Head
from headstart.classify.persist import check_member
from headstart.classify.split import SPLITS, read_split_rows
from headstart.errors import ClassifyError, HeadError

SPLIT_CSV = "split.csv"
CROP_FRACTION = (0.85, 1.0)  # side of the random square crop, as a fraction of the image side


@dataclass
class TrainingImages:
    """The usable images, each with its class (index into the head's classes) and split."""

    root: Path  # the image folder
    paths: list[str]  # relative to root, '/'-separated
    hashes: list[str]  # hex sha256 recorded in the store
    labels: np.ndarray  # int32 (n,), index into head.classes
    splits: np.ndarray  # int8 (n,), index into SPLITS
    store_rows: np.ndarray  # int64 (n,), each image's row in the store
    missing: list[str] = field(default_factory=list)  # recorded but not found or unreadable
    changed: list[str] = field(default_factory=list)  # found with other bytes
    unsplit: list[str] = field(default_factory=list)  # in the store, not in the head's split
    excluded: list[str] = field(default_factory=list)  # left out by fit-head --exclude

    def rows(self, split: str) -> np.ndarray:
        """int64 indices (into paths) of the images in `split`."""
        return np.flatnonzero(self.splits == SPLITS.index(split))


def read_head_split(head_dir: Path) -> dict[str, tuple[str, str, bool]]:
    """path -> (sha256, split, excluded) from the head's split.csv; HeadError if it is missing.

    excluded: the head was fitted without the image (`fit-head --exclude`); fine-tune
    leaves it out too. Files written before that column existed exclude nothing.
    """
    path = head_dir / SPLIT_CSV
    if not path.is_file():
        raise HeadError(
            f"'{path}' is missing, so the split the head was fitted on is unknown; fit the "
            "head again with fit-head (it writes split.csv)."
        )
    check_member(head_dir, SPLIT_CSV)
    try:
        return read_split_rows(path)
    except KeyError as error:
        raise HeadError(f"'{path}' has no {error} column; fit the head again.") from None


def find_training_images(data: Dataset, head: Head, head_dir: Path,
                         images: str | Path | None = None, *,
                         hash_files: Callable | None = None) -> TrainingImages:
    """Match the store's rows with the files in the image folder and the head's split.

    images: the image folder; default: the store's `source_dir` attribute.
    hash_files: {key: sha256} for (key, path) items ("" if unreadable); default
        headstart.extract.hash_files (a thread pool).
    Raises ClassifyError (one sentence) when the folder is gone, no image is usable, or
    a split has no usable image; HeadError when split.csv is missing.
    """
    if hash_files is None:
        from headstart.extract import hash_files
    split_of = read_head_split(head_dir)
    root = Path(images) if images else Path(str(data.attrs.get("source_dir", "")))
    if not str(root) or not root.is_dir():
        raise ClassifyError(
            f"The images of '{data.source}' were extracted from '{root}', which is not a "
            "folder here; pass --images DIR with the folder they were extracted from."
        )
    class_index = {name: i for i, name in enumerate(head.classes)}
    found = hash_files([(p, root / p) for p in data.paths])
    usable, missing, changed, unsplit, excluded = [], [], [], [], []
    for row, (path, digest) in enumerate(zip(data.paths, data.hashes, strict=True)):
        recorded = split_of.get(path)
        if recorded is None or recorded[0] != digest or recorded[1] not in SPLITS:
            unsplit.append(path)
        elif recorded[2]:
            excluded.append(path)
        elif not found.get(path):
            missing.append(path)
        elif found[path] != digest:
            changed.append(path)
        else:
            usable.append(row)
    if not usable:
        raise ClassifyError(
            f"None of the {len(data.paths):,} images recorded in '{data.source}' is usable in "
            f"'{root}' ({len(missing):,} missing, {len(changed):,} changed since extraction, "
            f"{len(unsplit):,} not in the head's split); pass --images DIR with the folder "
            "they were extracted from, or extract and fit again."
        )
    rows = np.asarray(usable, dtype=np.int64)
    labels = np.array([class_index[data.classes[data.labels[r]]] for r in rows], dtype=np.int32)
    splits = np.array([SPLITS.index(split_of[data.paths[r]][1]) for r in rows], dtype=np.int8)
    result = TrainingImages(root, [data.paths[r] for r in rows], [data.hashes[r] for r in rows],
                            labels, splits, rows, missing, changed, unsplit, excluded)
    empty = [name for name in SPLITS if not len(result.rows(name))]
    if empty:
        raise ClassifyError(
            f"No usable image of '{data.source}' is in the {' or '.join(empty)} split of "
            f"'{head_dir / SPLIT_CSV}' ({len(missing):,} missing, {len(changed):,} changed); "
            "restore the images or pass --images DIR with the folder they were extracted from."
        )
    return result


def augment(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random horizontal flip and a small random square crop resized back.

    pixels: uint8 (s, s, 3) -> uint8 (s, s, 3); float32 (a preset's converter resize) ->
    float32, each channel resized with PIL's bilinear filter in its float mode.
    """
    size = pixels.shape[0]
    side = int(round(size * rng.uniform(*CROP_FRACTION)))
    top, left = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    out = pixels[top:top + side, left:left + side]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if side != size and out.dtype == np.uint8:
        out = np.asarray(Image.fromarray(np.ascontiguousarray(out)).resize(
            (size, size), Image.BILINEAR))
    elif side != size:
        out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(out[..., c]), "F")
                                   .resize((size, size), Image.BILINEAR))
                        for c in range(out.shape[-1])], axis=-1)
    return np.ascontiguousarray(out)


def batches(images: TrainingImages, rows: np.ndarray, *, size: int, batch_size: int,
            seed: int, epoch: int | None = None, workers: int | None = None,
            resize: Callable | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pixels (b, size, size, 3), labels int32 (b,)) over `rows`, decoded as extracted:
    uint8, or float32 through a KerasHub preset's converter `resize`.

    epoch: None for evaluation (store order, no augmentation); a number for training
    (shuffled and augmented as a function of seed and epoch only).
    Raises ClassifyError when a file became unreadable or changed since it was checked.
    """
    from headstart.extract import decode_stream

    if epoch is not None:
        rows = np.random.default_rng([seed, epoch]).permutation(rows)
    items = ((str(r), images.root / images.paths[r]) for r in rows)
    pixels, labels = [], []
    for decoded in decode_stream(items, size=size, workers=workers, lookahead=2 * batch_size,
                                 resize=resize):
        row = int(decoded.key)
        if decoded.pixels is None or decoded.sha256 != images.hashes[row]:
            raise ClassifyError(
                f"'{images.root / images.paths[row]}' changed or became unreadable during "
                "fine-tuning; restore it (or remove it and extract again), then run the same "
                "command again to resume."
            )
        image = decoded.pixels
        if epoch is not None:
            key = int(images.hashes[row][:15], 16)  # the image's content, not its position
            image = augment(image, np.random.default_rng([seed, epoch, key]))
        pixels.append(image)
        labels.append(images.labels[row])
        if len(pixels) == batch_size:
            yield np.stack(pixels), np.asarray(labels, dtype=np.int32)
            pixels, labels = [], []
    if pixels:
        yield np.stack(pixels), np.asarray(labels, dtype=np.int32)
