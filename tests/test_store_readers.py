"""Readers while a store grows, busy against interrupted, and refusals that continue a store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import IDENTITY, FakeBackbone, fake_cli, first_usable_seed, make_store, many_images

from headstart.classify.cli import fit_head_main, predict_main
from headstart.errors import StoreError, StoreGrowing
from headstart.extract import extract_features
from headstart.extract.labels import LabelSpec
from headstart.features import open_store, part_files, read_records, store_files
from headstart.features.cli import describe
from headstart.features.cli import main as info_main
from headstart.features.lock import lock_path

SLOW = ["--weights", "none", "-q", "--batch-size", "2", "--flush-every", "2", "--precision",
        "float32"]


def run(folder, out, **kw):
    kw = {"weights": "none", "model": FakeBackbone(), "progress": False,
          "log": lambda line: None, **kw}
    return extract_features(folder, out, **kw)


def add_images(folder: Path, scratch: Path, count: int) -> None:
    many_images(scratch, count)
    for i, image in enumerate(sorted(scratch.rglob("*.jpg"))):
        shutil.copy(image, folder / image.parent.name / f"added-{i:03d}.jpg")


def start_writer(folder: Path, out: Path, delay: float = 0.5) -> subprocess.Popen:
    """extract-features in a child process, slowed down; returns once it committed a part."""
    writer = subprocess.Popen(fake_cli(folder, "-o", out, *SLOW),
                              env={**os.environ, "HEADSTART_FAKE_DELAY": str(delay)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not part_files(out):
        if writer.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(writer.communicate())
        time.sleep(0.05)
    return writer


def finish(writer: subprocess.Popen) -> None:
    _, err = writer.communicate(timeout=240)
    assert writer.returncode == 0, err


def test_readers_read_the_store_as_it_was_while_an_append_runs(tmp_path, capsys):
    """fit-head said the store 'is unfinished ... run extract-features again' during an append."""
    folder = many_images(tmp_path / "pets", 40)
    out = tmp_path / "features.h5"
    run(folder, out)
    seed = first_usable_seed(out)
    add_images(folder, tmp_path / "more", 20)
    writer = start_writer(folder, out)
    try:
        heads = tmp_path / "heads"
        assert fit_head_main(["--features", str(out), "-o", str(heads), "--seed", str(seed),
                              "-q", "--no-plots"]) == 0
        err = capsys.readouterr().err
        assert "newer images are being added by a running extract-features (pid" in err
        assert "reads the 40 rows stored before it began" in err
        assert predict_main(["--head", str(heads / "logreg"), "--features", str(out)]) == 0
        assert "40 predicted" in capsys.readouterr().err
        with pytest.warns(StoreGrowing), open_store(out) as store:
            assert store.n_rows == 40 and store.complete
        assert "complete: yes, as it was before a running extract-features" in describe(out)
        assert writer.poll() is None  # the reads never stopped the writer
    finally:
        finish(writer)
    assert info_main([str(out)]) == 0
    assert "complete: yes" in capsys.readouterr().out
    with open_store(out) as store:
        assert store.n_rows == 60


def test_a_first_extraction_under_way_is_busy_and_a_killed_one_is_unfinished(tmp_path,
                                                                            capsys):
    folder = many_images(tmp_path / "pets", 30)
    out = tmp_path / "features.h5"
    writer = start_writer(folder, out)
    try:
        assert fit_head_main(["--features", str(out), "-o", str(tmp_path / "h"), "-q"]) == 3
        err = capsys.readouterr().err
        assert "is being written by a running extract-features (pid" in err, err
        assert "run extract-features again" not in err and "unfinished" not in err
        assert "a running extract-features is writing it" in describe(out)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    assert part_files(out)  # what the killed run committed
    with pytest.raises(StoreError, match="is unfinished: its extraction stopped"):
        open_store(out)
    assert "interrupted" in describe(out) and "run `" in describe(out)
    # and the same command finishes it
    run(folder, out)
    with open_store(out) as store:
        assert store.n_rows == 30


def test_looking_never_takes_the_writers_lock(tmp_path):
    """A writer starting while someone looks must not be refused: readers read the kernel's
    lock table, they never take the lock themselves (not even shared and non-blocking)."""
    folder = many_images(tmp_path / "pets", 8)
    out = tmp_path / "features.h5"
    run(folder, out)
    (out.with_name(out.name + ".parts")).mkdir()
    shutil.copy(out, out.with_name(out.name + ".parts") / "part-000000.h5")
    for _ in range(3):
        with pytest.raises(StoreError, match="unfinished"):
            open_store(out)
        describe(out)
    assert not lock_path(out).exists()


# ---- refusals that say how to continue, and a labels CSV that changes ------------------

def test_a_store_made_with_a_weights_file_says_which_option_continues_it(tmp_path):
    store = make_store(tmp_path / "s.h5", np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]),
                       identity=IDENTITY.__class__(**{**IDENTITY.as_attrs(),
                                                      "weights": "sha256:" + "ab" * 32}),
                       attrs={"weights_path": "/models/vgg16.weights.h5"})
    with pytest.raises(StoreError) as refused:
        read_records(store_files(store), IDENTITY)
    message = str(refused.value)
    assert "the store's 'sha256:abab" in message and "this run's 'none (seed 0)'" in message
    assert "run with --weights /models/vgg16.weights.h5" in message
    assert "delete" not in message
    other = IDENTITY.__class__(**{**IDENTITY.as_attrs(), "layer": "fc1", "dtype": "float16"})
    plain = make_store(tmp_path / "p.h5", np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1]))
    with pytest.raises(StoreError, match="run with --layer fc2 --dtype float32, or write"):
        read_records(store_files(plain), other)


def labelled_folder(root: Path, n: int) -> tuple[Path, Path]:
    many_images(root / "images", n)
    images = root / "flat"
    images.mkdir()
    rows = ["file,label"]
    for i, image in enumerate(sorted((root / "images").rglob("*.jpg"))):
        shutil.copy(image, images / f"img{i:03d}.jpg")
        rows.append(f"img{i:03d}.jpg,{image.parent.name.lower()}")
    csv = root / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return images, csv


def test_an_edited_labels_csv_appends_new_rows_and_refreshes_changed_labels(tmp_path):
    """Every edit of a --labels CSV was refused ('delete it to start over')."""
    images, csv = labelled_folder(tmp_path, 10)
    out = tmp_path / "features.h5"
    run(images, out, labels=LabelSpec(csv=str(csv)))
    with open_store(out) as store:
        before = dict(zip(store.paths, store.load_features(), strict=True))
        assert store.classes == ["cat", "dog"]
    shutil.copy(images / "img000.jpg", images / "img999.jpg")  # a new image, with a row
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace(",cat", ",dog")  # one label corrected
    csv.write_text("\n".join(lines + ["img999.jpg,fox"]) + "\n")
    embedded = []
    model = FakeBackbone()
    original = model.embed
    model.embed = lambda pixels: embedded.append(len(pixels)) or original(pixels)
    run(images, out, labels=LabelSpec(csv=str(csv)), model=model)
    assert sum(embedded) == 1  # only the new image was read
    with open_store(out) as store:
        labels = dict(zip(store.paths, (store.classes[i] for i in store.labels), strict=True))
        assert store.classes == ["cat", "dog", "fox"]
        assert labels["img000.jpg"] == "dog" and labels["img999.jpg"] == "fox"
        rows = dict(zip(store.paths, store.load_features(), strict=True))
    for path, row in before.items():
        np.testing.assert_array_equal(rows[path], row)
    # another kind of label source is still refused, naming the options that continue it
    with pytest.raises(StoreError, match="run with --labels labels.csv, as it was made"):
        run(images, out, labels=LabelSpec(regex=r"^(img)"))


def test_merge_names_running_shards_as_busy(tmp_path, capsys):
    from headstart.features.cli import merge_main

    folder = many_images(tmp_path / "pets", 20)
    out = tmp_path / "features.h5"
    run(folder, out, shard=(0, 2))
    worker = subprocess.Popen(fake_cli(folder, "-o", out, "--shard", "1/2", *SLOW),
                              env={**os.environ, "HEADSTART_FAKE_DELAY": "0.5"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from headstart.features.stitch import shard_path
    deadline = time.monotonic() + 120
    while not part_files(shard_path(out, 0, 1, 2)):
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.05)
    try:
        assert merge_main([str(out)]) == 3
        assert "still being written by running workers (shard 1)" in capsys.readouterr().err
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    assert merge_main([str(out)]) == 2
    assert "shard 1: interrupted" in capsys.readouterr().err
