"""Data layouts end to end: extract (fake backbone), fit-head's split, predict, features-info."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SAMPLE_PETS, FakeBackbone, make_store, separable, write_image

from headstart.classify.cli import fit_head_main, predict_main
from headstart.classify.split import SPLITS, resolve_split
from headstart.errors import ClassifyError, StoreError
from headstart.extract import LabelSpec, extract_features
from headstart.features import open_store
from headstart.features.cli import describe

PHOTOS = sorted(SAMPLE_PETS.rglob("*.jpg"))


def extract(folder, out, **kw):
    return extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False,
                            log=lambda line: None, **kw)


def copy_photos(root, layout: dict[str, int]):
    """layout: 'train/cats' -> number of photos (real sample photos, so rows differ)."""
    i = 0
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for _ in range(count):
            (root / folder / f"{i:03d}.jpg").write_bytes(PHOTOS[i % len(PHOTOS)].read_bytes()
                                                         + bytes([i % 251]))  # distinct bytes
            i += 1
    return root


def test_tutorial_layout_store_records_given_splits_and_fit_head_uses_them(tmp_path, capsys):
    root = copy_photos(tmp_path / "cats_and_dogs_filtered", {
        "train/cats": 12, "train/dogs": 12, "validation/cats": 5, "validation/dogs": 5})
    out = tmp_path / "features.h5"
    summary = extract(root, out)
    assert summary.class_counts == {"cats": 17, "dogs": 17}
    with open_store(out) as store:
        assert store.classes == ["cats", "dogs"]
        assert store.given_splits.count("validation") == 10
        assert store.label_source == "split folders"
    assert "splits given by folders: train 24, validation 10" in describe(out)
    heads = tmp_path / "heads"
    assert fit_head_main(["--features", str(out), "-o", str(heads), "-q", "--no-plots",
                          "--C", "1"]) == 0
    report = capsys.readouterr().out
    assert "split given by the folders (train, validation); test carved from the given " \
           "train part" in report
    metrics = json.loads((heads / "logreg" / "metrics.json").read_text())
    split = metrics["split"]
    assert split["source"] == "given by the folders" and list(split["carved"]) == ["test"]
    assert sum(c["validation"] for c in split["counts"].values()) == 10  # untouched
    rows = {r.split(",")[0]: r.split(",")[3] for r in
            (heads / "logreg" / "split.csv").read_text().splitlines()[1:]}
    assert all(rows[p] == "validation" for p in rows if p.startswith("validation/"))
    assert all(rows[p] in ("train", "test") for p in rows if p.startswith("train/"))
    assert fit_head_main(["--features", str(out), "-o", str(heads), "-q", "--no-plots",
                          "--split", "hash", "--seed", "3", "--C", "1"]) == 0
    hashed = json.loads((heads / "logreg" / "metrics.json").read_text())["split"]
    assert hashed["source"] == "hash"


def test_given_split_rules():
    hashes = [f"{i:064x}" for i in range(400)]
    labels = np.array([i % 2 for i in range(400)])
    given = ["train"] * 300 + ["test"] * 100  # no validation folder
    split = resolve_split(hashes=hashes, labels=labels, classes=["a", "b"], given=given)
    assert (split.assignment[300:] == 2).all()  # the given test folder stays test
    carved = np.mean(split.assignment[:300] == 1)
    assert 0.12 < carved < 0.24  # 15 / (70 + 15) = 17.6% of the train part, in expectation
    only_train = resolve_split(hashes=hashes, labels=labels, classes=["a", "b"],
                               given=["train"] * 400)
    shares = np.bincount(only_train.assignment, minlength=3) / 400
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.06)
    with pytest.raises(ClassifyError, match="without a train folder"):
        resolve_split(hashes=hashes, labels=labels, classes=["a", "b"],
                      given=["validation"] * 200 + ["test"] * 200)
    with pytest.raises(ClassifyError, match="has no split given by its folders"):
        resolve_split(hashes=hashes, labels=labels, classes=["a", "b"], split="given")
    assert SPLITS == ("train", "validation", "test")


def test_a_file_moved_between_split_folders_is_a_changed_row(tmp_path):
    root = copy_photos(tmp_path / "data", {"train/Cat": 4, "train/Dog": 4, "val/Cat": 2,
                                           "val/Dog": 2, "test/Cat": 2, "test/Dog": 2})
    out = tmp_path / "features.h5"
    extract(root, out)
    (root / "train" / "Cat" / "000.jpg").rename(root / "test" / "Cat" / "000.jpg")
    summary = extract(root, out)
    assert (summary.added, summary.dropped) == (1, 1)
    with open_store(out) as store:
        given = dict(zip(store.paths, store.given_splits, strict=True))
    assert given["test/Cat/000.jpg"] == "test" and "train/Cat/000.jpg" not in given


def test_another_label_source_is_refused_like_another_model(tmp_path):
    for name in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg"):
        write_image(tmp_path / "flat" / name, fmt="JPEG")
    out = tmp_path / "features.h5"
    extract(tmp_path / "flat", out, labels=LabelSpec(regex=r"^(cat|dog)\."))
    with pytest.raises(StoreError, match=r"takes its labels from file names: \^\(cat\|dog\)"):
        extract(tmp_path / "flat", out, labels=LabelSpec(unlabelled=True))


def test_kaggle_flat_folder_with_a_regex_then_fit(tmp_path):
    copy_photos(tmp_path / "train", {".": 0})
    for i, photo in enumerate(PHOTOS):
        name = ("cat" if photo.parent.name == "Cat" else "dog") + f".{i}.jpg"
        (tmp_path / "train" / name).write_bytes(photo.read_bytes())
    out = tmp_path / "features.h5"
    summary = extract(tmp_path / "train", out, labels=LabelSpec(regex=r"^(cat|dog)\."))
    assert summary.class_counts == {"cat": 14, "dog": 14}
    assert summary.label_source == r"file names: ^(cat|dog)\."


def test_unlabelled_store_is_scored_by_predict_and_refused_by_fit_head(tmp_path, capsys):
    for i, photo in enumerate(PHOTOS[:5]):
        (tmp_path / "test1").mkdir(exist_ok=True)
        (tmp_path / "test1" / f"{i}.jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "unlabelled.h5"
    summary = extract(tmp_path / "test1", out, labels=LabelSpec(unlabelled=True))
    assert summary.rows == 5 and summary.class_counts == {}
    assert "labels: none (an unlabelled store" in describe(out)
    assert fit_head_main(["--features", str(out), "-o", str(tmp_path / "h"), "-q"]) == 2
    assert "is an unlabelled store" in capsys.readouterr().err
    # a head fitted on features made the same way (fc2-sized rows from the fake backbone)
    with open_store(out) as store:
        identity, dim = store.identity, store.dim
    X, y = separable(n=200, dim=dim)
    labelled = make_store(tmp_path / "train.h5", X, y, classes=["Cat", "Dog"], identity=identity)
    assert fit_head_main(["--features", str(labelled), "-o", str(tmp_path / "h"), "-q",
                          "--no-plots", "--C", "1"]) == 0
    predictions = tmp_path / "predictions.csv"
    assert predict_main(["--head", str(tmp_path / "h" / "logreg"), "--features", str(out),
                         "--output", str(predictions)]) == 0
    assert len(predictions.read_text().splitlines()) == 6
    assert "accuracy" not in capsys.readouterr().err
