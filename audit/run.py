"""The audit of one store: check the options, read the rows once, run every check, write.

    from headstart.audit import audit_store
    result = audit_store("features.h5", out_dir="audit", seed=0)   # writes audit/
    result.counts()                # images and groups per issue kind

Order of work: options and the optional head are checked before any row is read; the
store is loaded (float32), split exactly as fit-head splits it (same --seed and
--split); rows are scaled to unit length and ONE k-nearest-neighbour pass is made; the
thresholds come from that pass; then same-bytes conflicts, copy clusters (within a split and
across splits), out-of-fold probabilities and confident learning, outlier scores.
Nothing is re-split, no file is deleted or moved, and pixels are decoded only for the
report's thumbnails.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from headstart.audit import duplicates, embedding_map, labels, neighbours, outliers, thresholds
from headstart.audit.options import DEFAULTS, FLAGS, OPTIONS
from headstart.classify.dataset import load_dataset
from headstart.classify.persist import load_head
from headstart.classify.split import SPLITS, check_split_option, resolve_split
from headstart.errors import ClassifyError
from headstart.features import open_store
from headstart.options import check_options

# Allowed values, checked before any work; audit-features builds its argument types here.


@dataclass
class Audit:
    """Everything the audit found; `headstart.audit.report` and `issues` turn it into files.

    Arrays are per row of the store (n rows) unless stated: `assignment` int8 split
    (0 train, 1 validation, 2 test); `cluster` int64 copy cluster id (copy threshold);
    `proba` float64 (n, n_classes) out-of-fold probabilities; `label_issue` bool;
    `neighbour_labels` int64 (n, n_classes) label counts among each row's k neighbours.
    """

    source: Path
    store: dict
    classes: list[str]
    paths: list[str]
    hashes: list[str]
    labels: np.ndarray
    assignment: np.ndarray
    split_info: dict
    neighbours: neighbours.Neighbours
    thresholds: thresholds.Thresholds
    conflicts: list[np.ndarray]
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]  # within the copy threshold
    cluster: np.ndarray  # clusters of those pairs and of same-sha256 rows
    leakage: duplicates.Leakage
    proba: np.ndarray
    label_issue: np.ndarray
    neighbour_labels: np.ndarray
    outliers: outliers.Outliers
    settings: dict
    map: embedding_map.EmbeddingMap | None = None  # the report's 2-D map of the rows
    head: dict | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def source_dir(self) -> str | None:
        return self.store.get("source_dir")

    def duplicate_groups(self) -> list[np.ndarray]:
        """Clusters of copies (copy threshold, 2 or more rows) inside one split, largest first.

        The first row of each (its smallest index) is the one kept. A cluster that is
        nothing but one same-bytes conflict is left out: it is reported (first) as a
        conflict.
        """
        conflicts = {tuple(g.tolist()) for g in self.conflicts}
        return [g for g in duplicates.cluster_groups(self.cluster)
                if tuple(np.sort(g).tolist()) not in conflicts
                and len(np.unique(self.assignment[g])) == 1]

    def leak_groups(self) -> list[np.ndarray]:
        """Clusters of copies (copy threshold) whose rows lie in more than one split."""
        return [g for g in duplicates.cluster_groups(self.cluster)
                if len(np.unique(self.assignment[g])) > 1]


def check_audit_options(**values) -> None:
    """UsageError naming the first option outside its declared range (before any work)."""
    check_options(values, OPTIONS, flags=FLAGS)


def _load_head(path: str | Path | None, store) -> object | None:
    if path is None:
        return None
    head = load_head(path)
    head.check_matches(store.identity, store.dim, str(store.path), classes=store.classes)
    return head


class _Steps:
    """Progress on stderr (tqdm) for the long steps, and each step's seconds."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.seconds: dict[str, float] = {}

    def bar(self, name: str, total: int, unit: str):
        return tqdm(total=total, desc=name, unit=unit, disable=self.quiet, leave=False,
                    dynamic_ncols=True)

    def timed(self, name: str, start: float) -> None:
        self.seconds[name] = round(time.perf_counter() - start, 3)


def audit_store(features: str | Path = DEFAULTS["features"], *, seed: int = DEFAULTS["seed"],
                split: str = DEFAULTS["split"], head: str | Path | None = None,
                k: int = DEFAULTS["k"], folds: int = DEFAULTS["folds"], C: float = DEFAULTS["C"],
                neighbours_method: str = DEFAULTS["neighbours_method"],
                quiet: bool = True) -> Audit:
    """Audit the store `features`; see the module docstring. Writes nothing (see `write_audit`).

    seed, split: as fit-head (the audit uses exactly fit-head's split).
    head: a head directory from fit-head; its test accuracy is reported on all test
        images and on those without a copy in train or validation.
    k: neighbours per row (the one kNN pass); folds, C: of the out-of-fold logreg heads.
    neighbours_method: "auto" (exact up to 100,000 rows, faiss above), "exact", "faiss".
    Raises UsageError for options out of range, StoreError/ClassifyError for an unusable
    store, HeadError for a head that does not match it, MissingExtraError without faiss
    where it is needed: all before the rows are read.
    """
    check_audit_options(k=k, folds=folds, C=C, neighbours=neighbours_method)
    check_split_option(split)
    steps = _Steps(quiet)
    begin = time.perf_counter()
    with open_store(features) as store:
        if not store.labelled:
            raise ClassifyError(
                f"'{features}' is an unlabelled store (extracted with --unlabelled); the audit "
                "compares labels, so extract the images with their class folders or --labels.")
        head_model = _load_head(head, store)
        if neighbours_method == "faiss" or (neighbours_method == "auto"
                                            and store.n_rows > neighbours.EXACT_LIMIT):
            neighbours._import_faiss("Approximate neighbours (--neighbours faiss)")
    data = load_dataset(features)
    chosen = resolve_split(hashes=data.hashes, labels=data.labels, classes=data.classes,
                           seed=seed, split=split, given=data.given_splits, source=features)
    steps.timed("load", begin)

    start = time.perf_counter()
    unit = neighbours.unit_rows(data.features)
    with steps.bar("neighbours", len(unit), "rows") as bar:
        found = neighbours.find_neighbours(unit, k, neighbours_method, progress=bar.update)
    steps.timed("neighbours", start)

    start = time.perf_counter()  # while the unit rows are at hand: the outliers' distances
    centroid = outliers.centroid_distance(unit, data.labels, len(data.classes))
    strange = outliers.outlier_scores(
        centroid, outliers.neighbour_distance(found, outliers.typical_rows(centroid)))
    found = found.released()
    del unit
    steps.timed("outliers", start)

    start = time.perf_counter()
    limits = thresholds.derive_thresholds(found, data.hashes)
    pairs = duplicates.near_pairs(found, limits.copy)
    cluster = duplicates.clusters(len(data.labels), data.hashes, pairs)
    leakage = duplicates.cross_split(pairs, chosen.assignment, SPLITS.index("test"))
    conflicts = duplicates.conflict_groups(data.hashes, data.labels)
    steps.timed("duplicates", start)

    start = time.perf_counter()
    with steps.bar("out-of-fold heads", folds, "folds") as bar:
        proba = labels.out_of_fold_probabilities(
            data.features, data.labels, cluster, n_classes=len(data.classes), folds=folds, C=C,
            seed=seed, progress=bar.update)
    label_issue = labels.confident_learning(data.labels, proba)
    counts = labels.neighbour_label_counts(found.indices, data.labels, len(data.classes))
    steps.timed("labels", start)

    start = time.perf_counter()
    flagged = np.concatenate([*conflicts, *duplicates.cluster_groups(cluster),
                              np.flatnonzero(label_issue), strange.flagged,
                              np.empty(0, np.int64)]).astype(np.int64)
    projected = embedding_map.project(data.features, flagged, seed=seed)
    steps.timed("map", start)

    head_record = None
    if head_model is not None:
        head_record = head_accuracy(head_model, data.features, data.labels, chosen.assignment,
                                    leakage.leaky_test, head)
    store_record = {"path": str(Path(features).resolve()), "n_images": len(data.labels),
                    "dim": data.dim, "identity": data.identity.as_attrs(),
                    "source_dir": data.attrs.get("source_dir"),
                    "class_counts": dict(zip(data.classes, np.bincount(
                        data.labels, minlength=len(data.classes)).tolist(), strict=True))}
    settings = {"seed": seed, "split": split, "k": found.k, "folds": folds, "C": C,
                "neighbours": found.method, "head": str(head) if head else None}
    steps.seconds["total"] = round(time.perf_counter() - begin, 3)
    return Audit(Path(features), store_record, list(data.classes), list(data.paths),
                 list(data.hashes), data.labels, chosen.assignment, chosen.info, found, limits,
                 conflicts, pairs, cluster, leakage, proba, label_issue, counts,
                 strange, settings, projected, head_record, steps.seconds)


def head_accuracy(head, features: np.ndarray, labels_: np.ndarray, assignment: np.ndarray,
                  leaky_test: np.ndarray, path: str | Path) -> dict:
    """The head's test accuracy on all test images, on the leak-free ones and on the leaky ones."""
    test = np.flatnonzero(assignment == SPLITS.index("test"))
    correct = head.predict_proba(features[test]).argmax(axis=1) == labels_[test]
    leaky = np.isin(test, leaky_test)

    def share(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        return {"n": n, "accuracy": float(correct[mask].mean()) if n else None}

    return {"path": str(path), "kind": head.kind, "all_test": share(np.ones_like(leaky)),
            "leak_free_test": share(~leaky), "leaky_test": share(leaky)}
