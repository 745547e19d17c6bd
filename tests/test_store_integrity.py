"""Every row kept once, nothing of another store deleted, unreadable folders not taken for gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers import FakeBackbone, fake_cli, many_images

import headstart.extract.runner as runner
from headstart.errors import StoreBusyError, StoreError
from headstart.extract import extract_features
from headstart.faults import ENV
from headstart.features import open_store, schema
from headstart.features.cli import describe, merge_main
from headstart.features.shards import current_plan
from headstart.features.stitch import shard_path, stitch

FAST = ["--weights", "none", "-q", "--batch-size", "2", "--flush-every", "4"]
MERGE = """
import sys
from headstart.features.cli import merge_main
sys.exit(merge_main(sys.argv[1:]))
"""


def run(folder, out, **kw):
    kw = {"weights": "none", "model": FakeBackbone(), "progress": False,
          "log": lambda line: None, **kw}
    return extract_features(folder, out, **kw)


def rows_of(store) -> tuple[list[str], np.ndarray]:
    with open_store(store) as opened:
        return list(opened.paths), opened.load_features()


def sharded(folder, out, count=2):
    for index in range(count):
        run(folder, out, shard=(index, count))


# ---- merge: killed at every step, never a path twice ------------------------------------

@pytest.mark.parametrize("copy", [False, True], ids=["virtual", "copy"])
@pytest.mark.parametrize("point", ["merge:checked", "store:written", "merge:committed",
                                   "merge:plan-removed"])
@pytest.mark.parametrize("base", ["new", "append"])
def test_a_merge_killed_at_any_step_leaves_the_old_store_or_the_new_one(tmp_path, point, copy,
                                                                         base):
    """Killed after its commit, a re-run merge stored every image twice (56 rows for 28)."""
    folder = many_images(tmp_path / "pets", 14)
    out = tmp_path / "features.h5"
    old = None
    if base == "append":
        run(folder, out)
        old = rows_of(out)
        many_images(tmp_path / "more", 6)
        for i, image in enumerate(sorted((tmp_path / "more").rglob("*.jpg"))):
            shutil.copy(image, folder / image.parent.name / f"added-{i}.jpg")
    sharded(folder, out)
    reference = tmp_path / "reference.h5"
    run(folder, reference)
    argv = [sys.executable, "-c", MERGE, str(out)] + (["--copy"] if copy else [])
    killed = subprocess.run(argv, env={**os.environ, ENV: point}, capture_output=True,
                            text=True)
    assert killed.returncode == -9, killed.stderr
    if out.exists():  # the old store or the new one, never anything else
        paths, rows = rows_of(out)
        expected = old if point in ("merge:checked", "store:written") else rows_of(reference)
        if expected is None:
            raise AssertionError("a store appeared before the merge committed")
        assert sorted(paths) == sorted(expected[0])
    else:
        assert old is None and point in ("merge:checked", "store:written")
    if current_plan(out) is not None:
        assert merge_main([str(out)]) == 0
    paths, rows = rows_of(out)
    reference_paths, reference_rows = rows_of(reference)
    assert len(paths) == len(set(paths)) == len(reference_paths)
    order = np.argsort(paths)
    np.testing.assert_array_equal(rows[order], reference_rows[np.argsort(reference_paths)])
    assert current_plan(out) is None


def test_stitch_keeps_one_row_per_path_and_the_reader_refuses_a_doubled_store(tmp_path,
                                                                             capsys):
    folder = many_images(tmp_path / "pets", 10)
    out = tmp_path / "features.h5"
    run(folder, out)
    with open_store(out) as opened:
        identity, classes, attrs = opened.identity, opened.classes, dict(opened.attrs)
    again = shard_path(out, 3, 0, 1)  # the same images extracted again, as a shard
    again.parent.mkdir()
    shutil.copy(out, again)
    stitch(out, new_shards=[again], identity=identity, classes=classes, skipped=[],
           attrs=attrs)
    paths, _ = rows_of(out)
    assert len(paths) == len(set(paths)) == 10
    # a store an older headstart doubled: every command refuses it and names the remedy
    doubled = tmp_path / "doubled.h5"
    run(folder, doubled)
    with h5py.File(doubled, "r+") as handle:
        column = handle[schema.PATHS]
        column[1] = column.asstr()[0]
    with pytest.raises(StoreError, match="more than once .*merge-features --copy"):
        open_store(doubled)
    assert "more than once" in str(pytest.raises(StoreError, describe, doubled).value)
    assert merge_main([str(doubled), "--copy"]) == 0
    paths, _ = rows_of(doubled)
    assert len(paths) == len(set(paths)) == 9


def test_a_shard_worker_refuses_while_a_plain_run_writes_the_store(tmp_path, monkeypatch):
    """A plain run and a --shard 0/2 worker on one -o both finished; the merge held 56 rows."""
    folder = many_images(tmp_path / "pets", 12)
    out = tmp_path / "features.h5"
    plain = subprocess.Popen(fake_cli(folder, "-o", out, *FAST),
                             env={**os.environ, "HEADSTART_FAKE_DELAY": "0.3"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.with_name(out.name + ".parts")).is_dir():
        assert time.monotonic() < deadline and plain.poll() is None, plain.communicate()
        time.sleep(0.05)
    monkeypatch.setattr(runner, "PLANNING_WAIT_S", 0.5)
    with pytest.raises(StoreBusyError, match="Another extract-features is writing"):
        run(folder, out, shard=(0, 2))
    assert current_plan(out) is None
    _, err = plain.communicate(timeout=120)
    assert plain.returncode == 0, err
    assert run(folder, out, shard=(0, 2)).up_to_date  # nothing left for shards
    paths, _ = rows_of(out)
    assert len(paths) == len(set(paths)) == 12


# ---- a renamed store keeps its shards -------------------------------------------------

def test_a_new_extraction_never_deletes_the_shards_of_a_renamed_store(tmp_path, capsys):
    """mv features.h5 pets-v1.h5, then a new extraction to features.h5 deleted its shards."""
    folder = many_images(tmp_path / "pets", 10)
    out = tmp_path / "features.h5"
    sharded(folder, out)
    assert merge_main([str(out)]) == 0
    renamed = tmp_path / "pets-v1.h5"
    out.rename(renamed)
    before = rows_of(renamed)
    other = many_images(tmp_path / "other", 6)
    run(other, out)  # a plain run
    assert rows_of(out)[0] != before[0]
    sharded(other, tmp_path / "features.h5", count=3)  # and a sharded one, appended
    np.testing.assert_array_equal(rows_of(renamed)[1], before[1])
    assert "'features.h5.shards/'" in describe(renamed)  # where its rows really are
    # the renamed store can itself be appended to (its new shard goes beside it)
    many_images(tmp_path / "more", 2)
    for i, image in enumerate(sorted((tmp_path / "more").rglob("*.jpg"))):
        shutil.copy(image, folder / image.parent.name / f"added-{i}.jpg")
    run(folder, renamed, single_file_limit=0)
    paths, _ = rows_of(renamed)
    assert len(paths) == len(set(paths)) == 12
    assert merge_main([str(renamed), "--copy"]) == 0
    assert len(rows_of(renamed)[0]) == 12
    assert rows_of(out)[0]  # the other store was not touched by either


# ---- a folder that cannot be read now is not a folder that is gone ----------------------

def unreadable_by_permission(folder, monkeypatch):
    """chmod 000; as root (which reads it anyway) the kernel's refusal is simulated."""
    os.chmod(folder, 0)
    if os.geteuid() == 0:
        import headstart.extract.walk as walk

        real = os.scandir

        def scandir(path="."):
            if os.path.realpath(path) == os.path.realpath(folder):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)
        monkeypatch.setattr(walk.os, "scandir", scandir)
    return lambda: (os.chmod(folder, 0o755), monkeypatch.undo())


def unmounted_link(folder, monkeypatch):
    """The class folder becomes a link to a disk that is not mounted."""
    away = folder.with_name(f".{folder.name}-on-disk")  # hidden: never scanned
    folder.rename(away)
    folder.symlink_to(folder.parent / "not-mounted" / folder.name, target_is_directory=True)

    def back():
        folder.unlink()
        away.rename(folder)
    return back




@pytest.mark.parametrize("make_unreadable", [unmounted_link, unreadable_by_permission],
                         ids=["link to an unmounted disk", "permission denied"])
@pytest.mark.parametrize("where", ["Dog", "Dog/sub"])
def test_rows_under_a_folder_that_cannot_be_read_now_are_kept(tmp_path, monkeypatch,
                                                              make_unreadable, where):
    """chmod 000 Dog, extract again: the class's rows were dropped, all re-extracted later."""
    folder = many_images(tmp_path / "pets", 12)
    sub = folder / "Dog" / "sub"
    sub.mkdir()
    for image in sorted((folder / "Dog").glob("*.jpg"))[:2]:
        image.rename(sub / image.name)
    out = tmp_path / "features.h5"
    run(folder, out)
    before = rows_of(out)
    lines = []
    restore = make_unreadable(folder / where, monkeypatch)
    try:
        summary = run(folder, out, log=lines.append)
        assert rows_of(out)[0] == before[0]  # nothing dropped
        assert summary.dropped == 0
        assert any("cannot be read now" in line and "kept" in line for line in lines), lines
    finally:
        restore()
    calls = []
    model = FakeBackbone()
    original = model.embed
    model.embed = lambda pixels: calls.append(len(pixels)) or original(pixels)
    run(folder, out, model=model)
    assert not calls  # readable again: nothing extracted again
    paths, rows = rows_of(out)
    assert paths == before[0]
    np.testing.assert_array_equal(rows, before[1])


def test_a_stored_file_that_cannot_be_read_now_keeps_its_row():
    """A file link to an unmounted disk: stat and hash fail; the row stays, not re-extracted."""
    from pathlib import Path

    from headstart.extract.catalog import Catalog
    from headstart.extract.plan import plan_work
    from headstart.features.journal import Record

    catalog = Catalog(Path("pets"), ["Cat/a.jpg", "Cat/b.jpg"],
                      {"Cat/a.jpg": "Cat", "Cat/b.jpg": "Cat"}, ["Cat"], "folders",
                      stats={"Cat/a.jpg": (-1, -1), "Cat/b.jpg": (7, 7)})
    records = {"Cat/a.jpg": Record(0, 0, "a" * 64, None, "Cat", "", 10, 5),
               "Cat/b.jpg": Record(0, 1, "b" * 64, None, "Cat", "", 10, 5),
               "Cat/gone.jpg": Record(0, 2, "c" * 64, None, "Cat", "", 10, 5)}
    work = plan_work(catalog, records, hash_files=lambda paths: {
        "Cat/a.jpg": "", "Cat/b.jpg": "d" * 64})
    assert work.unreadable == ["Cat/a.jpg"] and work.present["Cat/a.jpg"] == "a" * 64
    assert work.drop == ["Cat/b.jpg", "Cat/gone.jpg"]  # changed, and really deleted
    assert [e.path for e in work.todo] == ["Cat/b.jpg"]
