"""Train / validation / test assignment that is reproducible and stable per image.

An image's split is a pure function of the seed and the sha256 of its bytes (already in
the store): ``u = int(sha256(f"{seed}:{image_sha256}")[:13], 16) / 16**13`` is a number in
[0, 1), and an image goes to train if ``u < f_train``, to validation if
``u < f_train + f_validation``, else to test. Consequences:

* Adding images to a store never moves an image already assigned, and neither does
  renaming or moving the folder (TF Hub's ``retrain.py`` hashed file names for the same
  reason; hashing the content also survives renames).
* Byte-identical duplicates, which photo collections such as PetImages contain, always
  land in the same split, so a duplicate cannot leak from training into test.
* Stratification holds in expectation, not exactly: every class is cut by the same
  thresholds, so each class's proportions are 70/15/15 up to binomial noise (about
  +/- 1.1 points for the test share of a 1,000-image class). Exact per-class quotas would
  need a ranking of each class's images, and then one added image would move others.
  The actual counts are reported, and a class that ends up with no image in some split
  is refused rather than silently missing from the evaluation.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ClassifyError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
RULE = (
    "u = int(sha256(f'{seed}:{image_sha256}').hexdigest()[:13], 16) / 16**13; "
    "train if u < f_train, validation if u < f_train + f_validation, else test"
)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, float, float]:
    """'70/15/15', '0.7/0.15/0.15' or (0.7, 0.15, 0.15) -> (0.7, 0.15, 0.15)."""
    parts = text.replace(",", "/").split("/") if isinstance(text, str) else list(text)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or min(values) <= 0:
        raise ClassifyError(
            f"--split must be three positive numbers like 70/15/15 (train/validation/test), "
            f"got {text!r}."
        )
    total = sum(values)
    if abs(total - 100) < 1e-6:
        values = [v / 100 for v in values]
    elif abs(total - 1) > 1e-6:
        raise ClassifyError(f"--split {text!r} must add up to 100 (or to 1), not {total:g}.")
    return (values[0], values[1], values[2])


def split_units(hashes: Sequence[str], seed: int = 0) -> np.ndarray:
    """float64, shape (n,): each image's position in [0, 1), from the seed and its content hash."""
    return np.fromiter(
        (int(hashlib.sha256(f"{seed}:{h}".encode()).hexdigest()[:13], 16) / 16**13 for h in hashes),
        dtype=np.float64, count=len(hashes),
    )


def assign_splits(
    hashes: Sequence[str], *, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> np.ndarray:
    """int8, shape (n,): 0 train, 1 validation, 2 test (indices into SPLITS)."""
    units = split_units(hashes, seed)
    cuts = np.array([fractions[0], fractions[0] + fractions[1]])
    return np.searchsorted(cuts, units, side="right").astype(np.int8)


def split_counts(assignment: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """{class: {"train": n, "validation": n, "test": n}}."""
    return {
        name: {split: int(np.sum((labels == c) & (assignment == s)))
               for s, split in enumerate(SPLITS)}
        for c, name in enumerate(classes)
    }


def check_split(
    assignment: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, seed: int,
    fractions: Sequence[float], source: str | Path,
) -> None:
    """Refuse a split in which some class has no image in train, validation or test."""
    counts = split_counts(assignment, labels, classes)
    for name, per_split in counts.items():
        total = sum(per_split.values())
        if total == 0:
            raise ClassifyError(
                f"Class '{name}' has no images in '{source}' (all of its files were skipped "
                "or its folder is empty); add images to it or remove the folder and re-extract."
            )
        empty = [split for split, n in per_split.items() if n == 0]
        if empty:
            need = int(np.ceil(3 / min(fractions)))
            raise ClassifyError(
                f"Class '{name}' has only {total} images in '{source}' and the split "
                f"(seed {seed}, {format_fractions(fractions)}) puts none in {' or '.join(empty)}; "
                f"give each class about {need} or more images, or try another --seed or --split."
            )


def format_fractions(fractions: Sequence[float]) -> str:
    return "/".join(f"{100 * f:g}" for f in fractions)


def write_split_csv(
    path: str | Path, *, paths: Sequence[str], hashes: Sequence[str], labels: np.ndarray,
    classes: Sequence[str], assignment: np.ndarray,
) -> Path:
    """One row per image: path, sha256, class, split; reusable without headstart."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256", "class", "split"])
        for p, h, label, s in zip(paths, hashes, labels, assignment, strict=True):
            writer.writerow([p, h, classes[label], SPLITS[s]])
    return path


def read_split_csv(path: str | Path) -> dict[str, str]:
    """path -> split name, as written by write_split_csv."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: row["split"] for row in csv.DictReader(handle)}
