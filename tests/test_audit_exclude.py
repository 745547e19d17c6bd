"""fit-head --exclude issues.csv: flagged rows leave train and validation, test stays."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import make_store, separable

from headstart.audit import audit_store, write_audit
from headstart.classify import fit_head
from headstart.classify.cli import fit_head_main
from headstart.classify.split import SPLITS, read_split_csv
from headstart.errors import ClassifyError
from headstart.features import open_store, sha256_file


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    X, y = separable(n=400, dim=16)
    return make_store(tmp_path_factory.mktemp("ex") / "features.h5", X, y,
                      classes=["Cat", "Dog"])


@pytest.fixture(scope="module")
def baseline(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    result = fit_head(store, model="logreg", out_dir=out, plots=False, C=0.01)
    return result, read_split_csv(out / "logreg" / "split.csv")


def write_issues(path, lines):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "issue", "score", "given_label", "suggested_label",
                         "partner_path"])
        for p, kind in lines:
            writer.writerow([p, kind, "0.5", "", "", ""])
    return path


def test_flagged_rows_leave_train_and_validation_and_test_is_unchanged(store, baseline,
                                                                       tmp_path):
    before, split = baseline
    by_split = {name: [p for p, s in split.items() if s == name] for name in SPLITS}
    lines = ([(p, "label") for p in by_split["train"][:10]]
             + [(p, "duplicate") for p in by_split["validation"][:3]]
             + [(p, "label") for p in by_split["test"][:5]]
             + [(by_split["train"][0], "outlier")])  # one image, two kinds
    issues = write_issues(tmp_path / "issues.csv", lines)
    after = fit_head(store, model="logreg", out_dir=tmp_path / "heads", plots=False, C=0.01,
                     exclude=issues)
    excluded = after.metrics["excluded"]
    assert excluded["images"] == 13
    assert excluded["counts"] == {"train": {"conflict": 0, "leak": 0, "duplicate": 0,
                                            "label": 10, "outlier": 1},
                                  "validation": {"conflict": 0, "leak": 0, "duplicate": 3,
                                                 "label": 0, "outlier": 0}}
    assert excluded["flagged_in_test_kept"]["label"] == 5
    assert excluded["sha256"] == sha256_file(issues)
    assert after.metrics["train"]["n"] == before.metrics["train"]["n"] - 10
    assert after.metrics["validation"]["n"] == before.metrics["validation"]["n"] - 3
    assert after.metrics["test"]["n"] == before.metrics["test"]["n"]
    saved = json.loads((tmp_path / "heads" / "logreg" / "metrics.json").read_text())
    assert saved["excluded"] == excluded
    with open(tmp_path / "heads" / "logreg" / "split.csv", newline="") as handle:
        marked = {row["path"] for row in csv.DictReader(handle) if row["excluded"] == "yes"}
    assert marked == set(by_split["train"][:10] + by_split["validation"][:3])
    only = fit_head(store, model="logreg", out_dir=None, C=0.01, exclude=issues,
                    exclude_kinds="duplicate")
    assert only.metrics["excluded"]["images"] == 3
    assert only.metrics["train"]["n"] == before.metrics["train"]["n"]


def test_an_issues_csv_saved_again_by_a_spreadsheet_excludes_the_same_rows(store, baseline,
                                                                          tmp_path):
    """A byte-order mark, CRLF line ends and ';' separators, as spreadsheets write them;
    the same reader as --labels."""
    _, split = baseline
    train = [p for p, s in split.items() if s == "train"][:6]
    plain = write_issues(tmp_path / "issues.csv", [(p, "label") for p in train])
    rows = [line.split(",") for line in plain.read_text(encoding="utf-8").splitlines()]
    saved = tmp_path / "issues-from-a-spreadsheet.csv"
    saved.write_bytes(b"\xef\xbb\xbf" + "".join(";".join(row) + "\r\n" for row in rows)
                      .encode("utf-8"))
    expected = fit_head(store, out_dir=None, C=0.01, exclude=plain).metrics["excluded"]
    actual = fit_head(store, out_dir=None, C=0.01, exclude=saved).metrics["excluded"]
    assert actual["images"] == expected["images"] == 6
    assert actual["counts"] == expected["counts"]


def test_exclusion_errors_are_one_sentence_before_any_fit(store, tmp_path, capsys):
    issues = write_issues(tmp_path / "issues.csv", [("Cat/99999.jpg", "label")])
    with pytest.raises(ClassifyError, match="was written for another store"):
        fit_head(store, out_dir=None, exclude=issues)
    with pytest.raises(ClassifyError, match="--exclude-kinds must be a comma-separated list"):
        fit_head(store, out_dir=None, exclude=issues, exclude_kinds="labels")
    with pytest.raises(ClassifyError, match="No issues file at"):
        fit_head(store, out_dir=None, exclude=tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ClassifyError, match="no 'path' and 'issue' columns"):
        fit_head(store, out_dir=None, exclude=tmp_path / "bad.csv")
    assert fit_head_main(["--features", str(store), "--exclude-kinds", "label", "-o",
                          str(tmp_path / "h"), "-q"]) == 2
    assert "--exclude-kinds needs --exclude" in capsys.readouterr().err


def test_audit_then_fit_without_the_flagged_images(tmp_path, capsys):
    """The flow a user follows: audit, read issues.csv, fit again without what it flags."""
    X, y = separable(n=500, dim=16, seed=3)
    flipped = np.random.default_rng(3).choice(len(y), 25, replace=False)
    y[flipped] ^= 1
    store = make_store(tmp_path / "features.h5", X, y, classes=["Cat", "Dog"])
    write_audit(audit_store(store), tmp_path / "audit", thumbnails=False)
    assert fit_head_main(["--features", str(store), "--exclude",
                          str(tmp_path / "audit" / "issues.csv"), "--exclude-kinds", "label",
                          "-o", str(tmp_path / "heads"), "--no-plots", "-q"]) == 0
    out = capsys.readouterr().out
    assert "excluded" in out and "test split unchanged" in out
    metrics = json.loads((tmp_path / "heads" / "logreg" / "metrics.json").read_text())
    with open_store(store) as s:
        paths = s.paths
    flagged_paths = {paths[i] for i in flipped}
    with open(tmp_path / "audit" / "issues.csv", newline="") as handle:
        labelled = {line["path"] for line in csv.DictReader(handle) if line["issue"] == "label"}
    assert len(labelled & flagged_paths) >= 0.8 * len(labelled)
    assert sum(metrics["excluded"]["counts"]["train"].values()) > 0


def copy_at(x: np.ndarray, distance: float, rng) -> np.ndarray:
    """A row at exactly `distance` cosine distance from `x`, with x's length."""
    u = x / np.linalg.norm(x)
    v = rng.standard_normal(len(x))
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    theta = np.arccos(1.0 - distance)
    return (np.linalg.norm(x) * (np.cos(theta) * u + np.sin(theta) * v)).astype(np.float32)


def test_copies_within_a_split_are_one_group_whose_first_is_kept_and_excluded(tmp_path):
    """A copy at 0.3 x the median nearest-neighbour distance, in its original's split, is
    a duplicate (the old 0.13 x tier missed it); at 0.8 x it is not; --exclude-kinds
    duplicate leaves out the copy and keeps the original."""
    from helpers import IDENTITY, random_labels

    from headstart.audit.issues import collect
    from headstart.classify.split import assign_splits
    from headstart.features import write_store

    rng = np.random.default_rng(5)
    X, y = random_labels(n=300, dim=64, seed=5)
    hashes = [f"{i:064x}" for i in range(len(y))]
    split = assign_splits(hashes)
    probe = audit_store(make_store(tmp_path / "probe.h5", X, y, classes=["Cat", "Dog"]))
    median = probe.thresholds.median_nn_distance
    originals = [int(r) for r in np.flatnonzero(split == 0)[:3]] + [
        int(np.flatnonzero(split == 1)[0])]
    far = int(np.flatnonzero(split == 0)[3])
    rows, labels_, extra = [X], [y], []
    for n, (row, ratio) in enumerate([(r, 0.3) for r in originals] + [(far, 0.8)]):
        digest = next(h for h in (f"{10_000 + 100 * n + t:064x}" for t in range(100))
                      if assign_splits([h])[0] == split[row])  # the original's split
        hashes.append(digest)
        rows.append(copy_at(X[row], ratio * median, rng)[None])
        labels_.append(y[row:row + 1])
        extra.append(row)
    X2, y2 = np.vstack(rows), np.concatenate(labels_)
    paths = [f"{('Cat', 'Dog')[c]}/{i:05d}.jpg" for i, c in enumerate(y2)]
    store = write_store(tmp_path / "features.h5", features=X2, paths=paths, hashes=hashes,
                        classes=["Cat", "Dog"], identity=IDENTITY,
                        attrs={"complete": True, "seed": 0})
    result = audit_store(store)
    assert result.thresholds.median_nn_distance == pytest.approx(median, rel=0.05)
    groups = {tuple(g.tolist()) for g in result.duplicate_groups()}
    copies = {original: len(X) + n for n, original in enumerate(extra)}
    for original in originals:
        assert (original, copies[original]) in groups, "original first, then its copy"
    assert not any(far in g for g in groups), "0.8 x the median is not a copy"
    flagged = {(i.row, i.kind): i for i in collect(result)}
    for original in originals:
        issue = flagged[(copies[original], "duplicate")]
        assert issue.partner == original and (original, "duplicate") not in flagged
        assert issue.score == pytest.approx(1 - 0.3 * median, abs=1e-4)
    write_audit(result, tmp_path / "audit", thumbnails=False)
    with open(tmp_path / "audit" / "issues.csv", newline="") as handle:
        duplicate = {line["path"]: line["partner_path"] for line in csv.DictReader(handle)
                     if line["issue"] == "duplicate"}
    assert duplicate == {paths[copies[o]]: paths[o] for o in originals}
    before = fit_head(store, model="logreg", out_dir=None, C=0.01)
    after = fit_head(store, model="logreg", out_dir=tmp_path / "heads", plots=False, C=0.01,
                     exclude=tmp_path / "audit" / "issues.csv", exclude_kinds="duplicate")
    assert after.metrics["excluded"]["counts"]["train"]["duplicate"] == 3
    assert after.metrics["excluded"]["counts"]["validation"]["duplicate"] == 1
    assert after.metrics["train"]["n"] == before.metrics["train"]["n"] - 3
    assert after.metrics["validation"]["n"] == before.metrics["validation"]["n"] - 1
    kept = read_split_csv(tmp_path / "heads" / "logreg" / "split.csv")
    with open(tmp_path / "heads" / "logreg" / "split.csv", newline="") as handle:
        excluded = {row["path"] for row in csv.DictReader(handle) if row["excluded"] == "yes"}
    assert excluded == {paths[copies[o]] for o in originals}
    assert all(kept[paths[o]] in ("train", "validation") for o in originals)
