"""Output folders and files: only headstart's own are replaced, always whole (headstart.outputs)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_store, separable

from headstart.audit.write import AUDIT_FOLDER, check_output_dir
from headstart.classify.checkpoint import CHECKPOINT_FOLDER
from headstart.classify.cli import fit_head_main
from headstart.classify.export import EXPORT_FOLDER
from headstart.classify.finetune_data import read_head_split
from headstart.classify.persist import HEAD_FOLDER, HEAD_JSON, WEIGHTS, load_head
from headstart.classify.predict import Predictions, write_predictions
from headstart.errors import HeadError, OutputError
from headstart.faults import ENV
from headstart.outputs import check_replaceable, replace_file, replace_folder

KINDS = [HEAD_FOLDER, EXPORT_FOLDER, AUDIT_FOLDER, CHECKPOINT_FOLDER]


def snapshot(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None)
                  for p in root.rglob("*"))


def foreign_folders(root: Path, kind) -> list[Path]:
    """Folders a user owns that look, by one name or another, like a `kind` folder."""
    label_studio = root / "label-studio"  # the reproduction, for each descriptor
    (label_studio / "sub").mkdir(parents=True)
    (label_studio / kind.descriptor).write_text('{"tool": "label-studio"}')
    (label_studio / "important.txt").write_text("thesis")
    forged = root / "forged"  # the right format, plus a file no such folder holds
    forged.mkdir()
    data = {"format": kind.formats[0]} if kind.formats else dict.fromkeys(kind.legacy_keys, 1)
    (forged / kind.descriptor).write_text(json.dumps(data))
    (forged / "notes.txt").write_text("mine")
    nothing_of_ours = root / "photos"
    nothing_of_ours.mkdir()
    (nothing_of_ours / "a.jpg").write_bytes(b"\xff\xd8")
    target = root / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    link = root / "link"
    link.symlink_to(target, target_is_directory=True)
    return [label_studio, forged, nothing_of_ours, link]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.noun)
def test_no_kind_of_folder_replaces_one_headstart_did_not_write(tmp_path, kind):
    for folder in foreign_folders(tmp_path, kind):
        before = snapshot(tmp_path)
        with pytest.raises(OutputError, match="not a headstart|not a folder"):
            check_replaceable(folder, kind)
        with pytest.raises(OutputError):
            replace_folder(folder, kind, lambda staging: (staging / kind.descriptor).write_text(
                json.dumps({"format": (kind.formats or ("x",))[0]})))
        assert snapshot(tmp_path) == before, folder


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.noun)
def test_an_absent_or_empty_folder_or_an_earlier_one_is_replaced_whole(tmp_path, kind):
    folder = tmp_path / "out"
    descriptor = {"format": kind.formats[0]} if kind.formats else dict.fromkeys(
        kind.legacy_keys, 1)

    def write(version):
        def into(staging: Path) -> str:
            (staging / kind.descriptor).write_text(json.dumps({**descriptor, "v": version}))
            return version
        return into

    assert replace_folder(folder, kind, write(1)) == 1
    assert kind.owns(folder)
    assert replace_folder(folder, kind, write(2)) == 2
    assert json.loads((folder / kind.descriptor).read_text())["v"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    replace_folder(empty, kind, write(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_a_failed_write_leaves_the_earlier_folder_and_no_staging(tmp_path):
    folder = tmp_path / "out"
    replace_folder(folder, AUDIT_FOLDER, lambda s: (s / "audit.json").write_text(
        '{"format": "headstart-audit"}'))
    before = snapshot(tmp_path)

    def fail(staging: Path):
        (staging / "report.html").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        replace_folder(folder, AUDIT_FOLDER, fail)
    assert snapshot(tmp_path) == before


def test_fit_head_and_audit_refuse_a_users_folder_before_any_work(tmp_path, capsys):
    X, y = separable(n=200, dim=8)
    store = make_store(tmp_path / "features.h5", X, y, classes=["cat", "dog"])
    heads = tmp_path / "heads"
    (heads / "logreg").mkdir(parents=True)
    (heads / "logreg" / "head.json").write_text('{"my": "notes"}')
    (heads / "logreg" / "thesis.txt").write_text("thesis")
    before = snapshot(tmp_path)
    assert fit_head_main(["--features", str(store), "-o", str(heads), "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a headstart head" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(tmp_path) == before
    report = tmp_path / "audit"
    report.mkdir()
    (report / "report.html").write_text("my own report")
    with pytest.raises(OutputError, match="not a headstart audit"):
        check_output_dir(report)
    from headstart.audit.cli import main as audit_main
    assert audit_main(["--features", str(store), "-o", str(report), "-q"]) == 2
    assert (report / "report.html").read_text() == "my own report"


def test_a_head_folder_is_replaced_whole_by_a_later_fit(tmp_path):
    X, y = separable(n=200, dim=8)
    store = make_store(tmp_path / "features.h5", X, y, classes=["cat", "dog"])
    heads = tmp_path / "heads"
    assert fit_head_main(["--features", str(store), "-o", str(heads), "-q"]) == 0
    assert (heads / "logreg" / "confusion_matrix.png").is_file()
    assert fit_head_main(["--features", str(store), "-o", str(heads), "-q", "--no-plots"]) == 0
    assert not (heads / "logreg" / "confusion_matrix.png").exists()  # not a mix of two fits
    meta = json.loads((heads / "logreg" / HEAD_JSON).read_text())
    assert sorted(meta["files"]) == sorted(p.name for p in (heads / "logreg").iterdir()
                                           if p.name != HEAD_JSON)


def two_stores(tmp_path: Path) -> tuple[Path, Path]:
    X, y = separable(n=200, dim=8)
    first = make_store(tmp_path / "first.h5", X, y, classes=["Cat", "Dog"])
    second = make_store(tmp_path / "second.h5", X[:, ::-1].copy(), y, classes=["yak", "zebra"])
    return first, second


KILLED_FIT = """
import sys
import headstart.outputs as outputs
if sys.argv[1] == "two-renames":
    outputs.exchange = lambda a, b: False  # a platform without renameat2
from headstart.classify.cli import fit_head_main
sys.exit(fit_head_main(sys.argv[2:]))
"""


@pytest.mark.parametrize("swap,point", [("exchange", "publish:exchanged"),
                                        ("two-renames", "publish:renamed-old"),
                                        ("two-renames", "publish:renamed-new")])
def test_a_fit_killed_during_its_swap_leaves_one_whole_head(tmp_path, swap, point):
    """A kill between two renames of a head folder left weights under the other classes."""
    first, second = two_stores(tmp_path)
    heads = tmp_path / "heads"
    assert fit_head_main(["--features", str(first), "-o", str(heads), "-q", "--no-plots"]) == 0
    old_weights = (heads / "logreg" / WEIGHTS).read_bytes()
    run = subprocess.run(
        [sys.executable, "-c", KILLED_FIT, swap, "--features", str(second), "-o", str(heads),
         "-q", "--no-plots"], env={**os.environ, ENV: point}, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr
    if point == "publish:renamed-old":
        assert not (heads / "logreg").exists()  # the old head waits at .logreg.old-PID
    head = load_head(heads / "logreg")  # recovers it
    expected_classes = ["Cat", "Dog"] if point == "publish:renamed-old" else ["yak", "zebra"]
    assert head.classes == expected_classes
    assert ((heads / "logreg" / WEIGHTS).read_bytes() == old_weights) == (
        expected_classes == ["Cat", "Dog"])
    read_head_split(heads / "logreg")  # its split.csv belongs to it
    # the next run cleans what the killed one left, and replaces the head whole
    assert fit_head_main(["--features", str(first), "-o", str(heads), "-q", "--no-plots"]) == 0
    assert sorted(p.name for p in heads.iterdir()) == ["logreg"]
    assert load_head(heads / "logreg").classes == ["Cat", "Dog"]


def test_a_head_whose_files_come_from_two_fits_is_refused(tmp_path):
    first, second = two_stores(tmp_path)
    for name, store in (("a", first), ("b", second)):
        assert fit_head_main(["--features", str(store), "-o", str(tmp_path / name), "-q",
                              "--no-plots"]) == 0
    a, b = tmp_path / "a" / "logreg", tmp_path / "b" / "logreg"
    (a / WEIGHTS).write_bytes((b / WEIGHTS).read_bytes())
    with pytest.raises(HeadError, match="does not belong to the head"):
        load_head(a)
    (b / "split.csv").write_text((tmp_path / "a" / "logreg" / "split.csv").read_text()
                                 + "extra/0.jpg,0,train,0\n")
    with pytest.raises(HeadError, match="does not belong to the head"):
        read_head_split(b)


def test_a_head_written_before_file_digests_still_loads(tmp_path):
    first, _ = two_stores(tmp_path)
    assert fit_head_main(["--features", str(first), "-o", str(tmp_path / "h"), "-q",
                          "--no-plots"]) == 0
    folder = tmp_path / "h" / "logreg"
    meta = json.loads((folder / HEAD_JSON).read_text())
    del meta["files"]
    (folder / HEAD_JSON).write_text(json.dumps(meta))
    assert load_head(folder).classes == ["Cat", "Dog"]
    assert HEAD_FOLDER.owns(folder)


def predictions(paths: list[str]) -> Predictions:
    probabilities = np.tile([[0.25, 0.75]], (len(paths), 1))
    return Predictions(paths, probabilities, ["cat", "dog"], [(os.fsdecode(b"bad\xfe.png"),
                                                               "cannot decode")])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predictions_with_names_that_are_not_utf8_are_written_escaped(tmp_path, suffix):
    output = tmp_path / f"preds{suffix}"
    output.write_text("earlier")
    write_predictions(predictions([os.fsdecode(b"caf\xe9.jpg"), "ok.jpg"]), output)
    text = output.read_text(encoding="utf-8")
    if suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        assert [r[0] for r in rows[1:]] == ["caf\\xe9.jpg", "ok.jpg", "bad\\xfe.png"]
    else:
        data = json.loads(text)
        assert [p["path"] for p in data["predictions"]] == ["caf\\xe9.jpg", "ok.jpg"]
        assert data["skipped"][0]["path"] == "bad\\xfe.png"


def test_an_output_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    output = tmp_path / "preds.csv"
    output.write_text("earlier\n")
    import headstart.classify.predict as predict

    class Failing:
        def __init__(self, handle):
            self.rows = 0

        def writerow(self, row):
            self.rows += 1
            if self.rows == 2:
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict.csv, "writer", Failing)
    with pytest.raises(OSError):
        write_predictions(predictions(["a.jpg", "b.jpg"]), output)
    assert output.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv"]
    with pytest.raises(OutputError, match="is a folder"):
        replace_file(tmp_path, lambda tmp: None)
