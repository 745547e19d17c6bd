"""The audit's findings as one list of flagged images: issues.csv and audit.json.

issues.csv has one line per flagged image and kind, in report order (kinds as
`ISSUE_KINDS`, then by score, highest first):

    path            the image, relative to the image folder (as in the store)
    issue           conflict | leak | duplicate | label | outlier
    score           conflict: 1; leak, duplicate: cosine to the partner; label: 1 minus the
                    out-of-fold probability of the given label; outlier: the outlier score
                    (distances over their medians); higher is always more suspicious
    given_label     the stored label
    suggested_label label: the most probable other class; otherwise empty
    partner_path    conflict: a copy under another label; leak: its nearest copy
                    in another split; duplicate: the cluster's first image, which is kept

Within a cluster of copies (copy threshold) that lies in one split, every image but the
first is a `duplicate`; in a cluster of copies across splits every image is a `leak`
(fit-head --exclude then drops its train and validation members and keeps the test ones).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.audit.run import Audit
from headstart.classify.exclude import ISSUE_KINDS
from headstart.classify.split import SPLITS

FORMAT = "headstart-audit"  # audit.json's "format"
COLUMNS = ("path", "issue", "score", "given_label", "suggested_label", "partner_path")


@dataclass(frozen=True)
class Issue:
    row: int
    kind: str  # one of ISSUE_KINDS
    score: float
    suggested: int | None = None  # class index
    partner: int | None = None  # row index


def _nearest_in(audit: Audit, row: int, members: np.ndarray) -> tuple[int, float]:
    """The nearest of `members` among `row`'s neighbours (cosine), else the first member."""
    for other, cos in zip(audit.neighbours.indices[row], audit.neighbours.cosine[row],
                          strict=True):
        if other in members:
            return int(other), float(cos)
    return int(members[0]), 1.0 if audit.hashes[members[0]] == audit.hashes[row] else float("nan")


def collect(audit: Audit) -> list[Issue]:
    """Every flagged image and kind, in report order."""
    found: list[Issue] = []
    for group in audit.conflicts:
        for row in group:
            other = group[audit.labels[group] != audit.labels[row]][0]
            found.append(Issue(int(row), "conflict", 1.0, partner=int(other)))
    leaks, duplicates_ = [], []
    for group in audit.leak_groups():
        splits = audit.assignment[group]
        for row in group:
            partner, cos = _nearest_in(audit, row, group[splits != audit.assignment[row]])
            leaks.append(Issue(int(row), "leak", cos, partner=partner))
    for group in audit.duplicate_groups():
        for row in group[1:]:
            partner, cos = _nearest_in(audit, row, group[:1])
            duplicates_.append(Issue(int(row), "duplicate", cos, partner=int(group[0])))
    found += sorted(leaks, key=lambda x: -np.nan_to_num(x.score))
    found += sorted(duplicates_, key=lambda x: -np.nan_to_num(x.score))
    proba = audit.proba
    rows = np.flatnonzero(audit.label_issue)
    for row in rows[np.argsort(proba[rows, audit.labels[rows]], kind="stable")]:
        others = proba[row].copy()
        others[audit.labels[row]] = -1
        found.append(Issue(int(row), "label", float(1 - proba[row, audit.labels[row]]),
                           suggested=int(others.argmax())))
    for row in audit.outliers.flagged:
        found.append(Issue(int(row), "outlier", float(audit.outliers.score[row])))
    return found


def write_csv(audit: Audit, found: list[Issue], path: Path) -> Path:
    """issues.csv (see the module docstring), into the audit's staged folder (write.py)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for issue in found:
            writer.writerow([
                audit.paths[issue.row], issue.kind, f"{issue.score:.6f}",
                audit.classes[audit.labels[issue.row]],
                audit.classes[issue.suggested] if issue.suggested is not None else "",
                audit.paths[issue.partner] if issue.partner is not None else ""])
    return path


def counts(audit: Audit, found: list[Issue]) -> dict:
    """Images (and groups, where a kind comes in groups) per kind: never pairs."""
    per_kind = {kind: {"images": len({i.row for i in found if i.kind == kind})}
                for kind in ISSUE_KINDS}
    per_kind["conflict"]["groups"] = len(audit.conflicts)
    per_kind["leak"]["groups"] = len(audit.leak_groups())
    per_kind["leak"]["test_images_with_a_copy_in_train_or_validation"] = len(
        audit.leakage.leaky_test)
    per_kind["duplicate"]["groups"] = len(audit.duplicate_groups())
    per_kind["images_flagged"] = len({i.row for i in found})
    return per_kind


def record(audit: Audit, found: list[Issue]) -> dict:
    """The content of audit.json: store, split, settings, thresholds, counts, every issue."""
    return {
        "format": FORMAT, "store": audit.store, "settings": audit.settings,
        "split": {"info": {k: v for k, v in audit.split_info.items() if k != "counts"},
                  "images": {name: int((audit.assignment == s).sum())
                             for s, name in enumerate(SPLITS)}},
        "thresholds": audit.thresholds.record(),
        "outlier_fence": {"value": audit.outliers.fence,
                          "derived": "Q3 + 1.5 x IQR of the outlier scores (Tukey's fence)"},
        "counts": counts(audit, found), "head": audit.head, "seconds": audit.seconds,
        "map": audit.map.record() if audit.map is not None else None,
        "issues": [{"path": audit.paths[i.row], "issue": i.kind,
                    "score": None if np.isnan(i.score) else round(i.score, 6),
                    "split": SPLITS[audit.assignment[i.row]],
                    "given_label": audit.classes[audit.labels[i.row]],
                    "suggested_label": (audit.classes[i.suggested]
                                        if i.suggested is not None else None),
                    "partner_path": audit.paths[i.partner] if i.partner is not None else None}
                   for i in found],
    }


def write_json(data: dict, path: Path) -> Path:
    """audit.json, into the audit's staged folder (write.py)."""
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path
