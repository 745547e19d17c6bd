"""Rows to leave out of fitting, read from the audit's issues.csv (fit-head --exclude).

issues.csv (written by audit-features) has one line per flagged image and issue, with
at least the columns `path` (relative to the image folder, as stored) and `issue`, one
of ISSUE_KINDS. A user may delete lines they disagree with before fitting.

Excluded rows leave the train and validation splits only: the test split is never
changed, so test accuracy before and after an exclusion is measured on the same images.
What was excluded (the file, its sha256, the kinds, counts per split and kind) goes into
metrics.json.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from headstart import spreadsheet
from headstart.classify.split import SPLITS
from headstart.errors import ClassifyError
from headstart.features import sha256_file

# The audit's issue kinds, in report order: same bytes under several labels, near
# duplicates across splits, near duplicates within a split, likely label errors, outliers.
ISSUE_KINDS = ("conflict", "leak", "duplicate", "label", "outlier")


def parse_kinds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'label,duplicate' or a sequence -> ('label', 'duplicate'); None -> every kind.

    Raises ClassifyError naming an unknown kind.
    """
    if text is None:
        return ISSUE_KINDS
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [t for t in names if t]
    unknown = [t for t in names if t not in ISSUE_KINDS]
    if unknown or not names:
        raise ClassifyError(f"--exclude-kinds must be a comma-separated list of "
                            f"{', '.join(ISSUE_KINDS)}, got {text!r}.")
    return tuple(dict.fromkeys(names))


def check_exclude_file(path: str | Path) -> None:
    """Raise ClassifyError now for an --exclude file that cannot be read as issues.csv."""
    _read(Path(path))


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ClassifyError(f"No issues file at '{path}'; run `audit-features` first, which "
                            "writes audit/issues.csv.")
    try:  # as written by audit-features, or saved again by a spreadsheet
        found = spreadsheet.table(spreadsheet.decoded(path.read_bytes()))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ClassifyError(f"'{path}' is not a readable CSV file ({error}); give the "
                            "issues.csv written by audit-features.") from None
    columns = [cell.strip() for cell in found[0]] if found else []
    rows = [dict(zip(columns, row, strict=False)) for row in found[1:]]
    if not {"path", "issue"} <= set(columns):
        raise ClassifyError(f"'{path}' has no 'path' and 'issue' columns; give the issues.csv "
                            "written by audit-features.")
    return rows


def excluded_rows(path: str | Path, kinds: Sequence[str], *, store_paths: Sequence[str],
                  assignment: np.ndarray, store: str | Path = "") -> tuple[np.ndarray, dict]:
    """Rows of the train and validation splits that `path` flags with one of `kinds`.

    Returns (bool mask, shape (n_rows,), True for rows to leave out; the record for
    metrics.json). Raises ClassifyError when the file lists paths the store does not
    hold (an issues.csv of another store).
    """
    path = Path(path)
    lines = _read(path)
    index = {p: row for row, p in enumerate(store_paths)}
    unknown = sorted({line["path"] for line in lines if line["path"] not in index})
    if unknown:
        raise ClassifyError(
            f"'{path}' lists {len(unknown)} images that '{store}' does not hold (first: "
            f"'{unknown[0]}'); it was written for another store: run audit-features on this one.")
    test = SPLITS.index("test")
    mask = np.zeros(len(store_paths), dtype=bool)
    counts = {split: dict.fromkeys(kinds, 0) for split in SPLITS[:test]}
    kept_in_test = dict.fromkeys(kinds, 0)
    for row, kind in sorted({(index[line["path"]], line["issue"]) for line in lines
                             if line["issue"] in kinds}):
        split = int(assignment[row])
        if split == test:
            kept_in_test[kind] += 1
            continue
        counts[SPLITS[split]][kind] += 1
        mask[row] = True
    record = {"file": str(path), "sha256": sha256_file(path), "kinds": list(kinds),
              "images": int(mask.sum()), "counts": counts,
              "flagged_in_test_kept": kept_in_test,
              "rule": "flagged rows leave train and validation; the test split is unchanged"}
    return mask, record
