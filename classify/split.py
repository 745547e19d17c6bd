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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.errors import ClassifyError

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
    fractions: Sequence[float], source: str | Path, rule: str | None = None,
) -> None:
    """Refuse a split in which some class has no image in train, validation or test.

    Every such class is named, in one sentence. rule: how the split was made, for the
    message (default: the hash rule with `seed` and `fractions`).
    """
    counts = split_counts(assignment, labels, classes)
    empty = [name for name, per_split in counts.items() if sum(per_split.values()) == 0]
    if empty:
        names = _names(empty)
        raise ClassifyError(
            f"{'Class' if len(empty) == 1 else 'Classes'} {names} "
            f"{'has' if len(empty) == 1 else 'have'} no images in '{source}' (all of their files "
            "were skipped or the folder is empty); add images to it or remove the folder and "
            "re-extract."
        )
    short = {name: [split for split, n in per_split.items() if n == 0]
             for name, per_split in counts.items()}
    short = {name: missing for name, missing in short.items() if missing}
    if not short:
        return
    rule = rule or f"the split (seed {seed}, {format_fractions(fractions)})"
    need = int(np.ceil(3 / min(fractions)))
    advice = (f"give each class about {need} or more images, or try another --seed or --split.")
    if len(short) == 1:
        (name, missing), = short.items()
        total = sum(counts[name].values())
        raise ClassifyError(
            f"Class '{name}' has only {total} images in '{source}' and {rule} puts none in "
            f"{' or '.join(missing)}; {advice}"
        )
    parts = [f"'{name}' ({_images(sum(counts[name].values()))}, none in {' or '.join(missing)})"
             for name, missing in short.items()]
    raise ClassifyError(
        f"Classes {', '.join(parts[:-1])} and {parts[-1]} have too few images in '{source}' "
        f"for {rule}; {advice}"
    )


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def _names(names: Sequence[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


@dataclass(frozen=True)
class Split:
    """Which split each row of a store belongs to, and how that was decided."""

    assignment: np.ndarray  # int8, shape (n_rows,): 0 train, 1 validation, 2 test
    info: dict  # rule, key, seed, fractions, counts per class: what metrics.json records

    def rows(self, name: str) -> np.ndarray:
        """int64 indices of the rows in split `name` ("train", "validation" or "test")."""
        return np.flatnonzero(self.assignment == SPLITS.index(name))


SPLIT_CHOICES = ("auto", "given", "hash")


def check_split_option(split: str | Sequence[float]) -> None:
    """Raise ClassifyError now for a --split value resolve_split would refuse later."""
    if not (isinstance(split, str) and split.strip().lower() in SPLIT_CHOICES):
        parse_fractions(split)


def resolve_split(*, hashes: Sequence[str], labels: np.ndarray, classes: Sequence[str],
                  seed: int = 0, split: str | Sequence[float] = "auto",
                  given: Sequence[str] | None = None, source: str | Path = "") -> Split:
    """The split fit-head uses for a store's rows; every command that needs one calls this.

    split: "auto" (the folders' split when the store has one, else the hash rule with
        70/15/15), "given" (the folders' split; refused if the store has none), "hash"
        (the hash rule, 70/15/15), or train/validation/test fractions for the hash rule
        ("80/10/10" or a 3-sequence).
    given: each row's split from a pre-split folder layout (store.given_splits), or None.
    A given layout without a test (or validation) folder has it carved from its train
    part by the hash rule: a train image goes to the missing split when
    u >= f_train / (f_train + f_missing), u as in `split_units`; evaluation folders are
    never touched. Only train given: the hash rule applies to the train part.
    Raises ClassifyError for malformed fractions, a "given" split the store lacks, a
    layout without a train folder, or a class left with no image in some split.
    """
    if isinstance(split, str) and split.strip().lower() in SPLIT_CHOICES:
        mode = split.strip().lower()
        fractions = DEFAULT_FRACTIONS
    else:
        mode, fractions = "hash", parse_fractions(split)
    if mode == "given" and given is None:
        raise ClassifyError(f"'{source}' has no split given by its folders (it was not "
                            "extracted from train/validation/test folders); use --split hash.")
    if mode == "hash" or given is None:
        assignment = assign_splits(hashes, seed=seed, fractions=fractions)
        check_split(assignment, labels, classes, seed=seed, fractions=fractions, source=source)
        info = {"source": "hash", "rule": RULE, "key": "sha256 of the image file", "seed": seed,
                "fractions": dict(zip(SPLITS, fractions, strict=True))}
        rule = None
    else:
        assignment, info = _given_split(hashes, given, seed, fractions, source)
        rule = "the split given by the folders" + (
            f" (completed by the hash rule, seed {seed})" if info["carved"] else "")
        check_split(assignment, labels, classes, seed=seed, fractions=fractions, source=source,
                    rule=rule)
    info["counts"] = split_counts(assignment, labels, classes)
    info["file"] = "split.csv"
    return Split(assignment, info)


def _given_split(hashes: Sequence[str], given: Sequence[str], seed: int,
                 fractions: Sequence[float], source: str | Path) -> tuple[np.ndarray, dict]:
    names = np.asarray(list(given), dtype=object)
    present = [s for s in SPLITS if (names == s).any()]
    if "train" not in present:
        raise ClassifyError(
            f"'{source}' was extracted from split folders without a train folder (found "
            f"{', '.join(present) or 'none'}); add one, or use --split hash to split by content."
        )
    assignment = np.full(len(names), -1, dtype=np.int8)
    for index, name in enumerate(SPLITS):
        assignment[names == name] = index
    train = np.flatnonzero(assignment == 0)
    missing = [s for s in SPLITS if s not in present]
    carved = {}
    units = split_units([hashes[i] for i in train], seed)
    if len(missing) == 2:  # only train given: the hash rule within it
        sub = assign_splits([hashes[i] for i in train], seed=seed, fractions=fractions)
        assignment[train] = sub
        carved = {s: f"from the given train part by the hash rule ({format_fractions(fractions)})"
                  for s in missing}
    elif missing:
        name = missing[0]
        share = fractions[SPLITS.index(name)]
        cut = fractions[0] / (fractions[0] + share)
        assignment[train[units >= cut]] = SPLITS.index(name)
        carved = {name: f"from the given train part by the hash rule: a train image moves when "
                        f"u >= {cut:.4f} = {fractions[0]:g} / ({fractions[0]:g} + {share:g})"}
    if (assignment < 0).any():
        raise ClassifyError(f"'{source}' has rows without a given split; re-extract it.")
    info = {"source": "given by the folders", "given": present, "carved": carved,
            "rule": RULE if carved else None, "seed": seed,
            "fractions": dict(zip(SPLITS, fractions, strict=True)) if carved else None}
    return assignment, info


def format_fractions(fractions: Sequence[float]) -> str:
    return "/".join(f"{100 * f:g}" for f in fractions)


def write_split_csv(
    path: str | Path, *, paths: Sequence[str], hashes: Sequence[str], labels: np.ndarray,
    classes: Sequence[str], assignment: np.ndarray, excluded: np.ndarray | None = None,
) -> Path:
    """One row per image: path, sha256, class, split, excluded; reusable without headstart.

    excluded: bool (n,), rows left out of fitting by `fit-head --exclude` ("yes"), else "".
    """
    path = Path(path)
    excluded = np.zeros(len(paths), dtype=bool) if excluded is None else excluded
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sha256", "class", "split", "excluded"])
        for p, h, label, s, out in zip(paths, hashes, labels, assignment, excluded,
                                       strict=True):
            writer.writerow([p, h, classes[label], SPLITS[s], "yes" if out else ""])
    return path


def read_split_rows(path: str | Path) -> dict[str, tuple[str, str, bool]]:
    """path -> (sha256, split, excluded), as written by write_split_csv.

    Files written before the `excluded` column existed exclude nothing. Raises KeyError
    naming a missing column.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["path"]: (row["sha256"], row["split"], bool(row.get("excluded")))
                for row in csv.DictReader(handle)}


def read_split_csv(path: str | Path) -> dict[str, str]:
    """path -> split name, as written by write_split_csv."""
    return {name: split for name, (_, split, _) in read_split_rows(path).items()}
