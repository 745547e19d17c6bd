"""Stores that span shard files: stitched by a virtual dataset, checked on every open."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from helpers import FakeBackbone, many_images

from headstart.errors import StoreError
from headstart.extract import extract_features
from headstart.features import open_store, shards_dir
from headstart.features.cli import describe, merge_main


def run(folder, out, **kw):
    kw = {"weights": "none", "model": FakeBackbone(), "progress": False,
          "log": lambda line: None, **kw}
    return extract_features(folder, out, **kw)


def snapshot(path):
    with open_store(path) as store:
        return store.paths, store.load_features(), store.skipped, store.labels.tolist()


def add_images(folder, source, names):
    for src, name in zip(sorted(source.rglob("*.jpg")), names, strict=False):
        shutil.copy(src, folder / src.parent.name / name)


@pytest.fixture
def appended(tmp_path):
    """A 20-image store, then 4 more images appended with single_file_limit=0 (sharded)."""
    folder = many_images(tmp_path / "pets", 20)
    out = tmp_path / "f.h5"
    run(folder, out)
    first_inode = os.stat(out).st_ino
    many_images(tmp_path / "more", 4)
    add_images(folder, tmp_path / "more", ["new0.jpg", "new1.jpg", "new2.jpg", "new3.jpg"])
    (folder / "Cat" / "0004.jpg").unlink()  # and one file deleted
    summary = run(folder, out, single_file_limit=0)
    return folder, out, first_inode, summary


def test_an_append_to_a_large_store_adds_a_shard_and_copies_no_old_row(appended, tmp_path):
    folder, out, first_inode, summary = appended
    assert (summary.added, summary.dropped, summary.rows, summary.shards) == (4, 1, 23, 2)
    shards = sorted(shards_dir(out).iterdir())
    assert [p.name for p in shards] == ["g000000-s00000-of-00001.h5",
                                       "g000001-s00000-of-00001.h5"]
    assert os.stat(shards[0]).st_ino == first_inode  # the old file, hard-linked, not copied
    with h5py.File(shards[1], "r") as new:
        assert new["features"].shape == (4, 4096)  # only the new rows were written
    with h5py.File(out, "r") as top:
        assert top["features"].is_virtual and top["features"].fillvalue != top["features"].fillvalue
    fresh = run(folder, tmp_path / "fresh.h5")  # one-file store of the same folder
    paths, rows, skipped, labels = snapshot(out)
    ref_paths, ref_rows, _, _ = snapshot(fresh.output)
    assert sorted(paths) == ref_paths and len(set(paths)) == len(paths)
    by_path = dict(zip(ref_paths, ref_rows, strict=True))
    np.testing.assert_array_equal(rows, np.stack([by_path[p] for p in paths]))
    assert paths[-4:] == sorted(paths[-4:]) and all("new" in p for p in paths[-4:])


def test_a_missing_shard_is_named_on_open_never_read_as_fill(appended):
    _, out, _, _ = appended
    victim = sorted(shards_dir(out).iterdir())[1]
    victim.rename(victim.with_suffix(".moved"))
    missing = f"reads its rows from '.*{victim.name}', which is missing"
    with pytest.raises(StoreError, match=missing):
        open_store(out)
    with h5py.File(out, "r") as top:  # what HDF5 alone would have returned: NaN, not data
        assert np.isnan(top["features"][-1]).all()


def test_the_folder_can_be_moved_and_readers_handle_virtual_stores(appended, tmp_path):
    _, out, _, _ = appended
    before = snapshot(out)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(str(out), moved / out.name)
    shutil.move(str(shards_dir(out)), moved / shards_dir(out).name)
    with open_store(moved / out.name) as store:
        assert store.chunk_rows > 0 and store.features.chunks is None
        blocks = [block for _, block in store.iter_chunks()]
        np.testing.assert_array_equal(np.concatenate(blocks), before[1])
        assert len(store.shards) == 2
    info = describe(moved / out.name)
    assert "spans 3 files: this top file and 2 shard files" in info
    assert "complete: yes" in info


def test_merge_copy_writes_one_self_contained_sorted_file(appended, capsys):
    _, out, _, _ = appended
    paths, rows, skipped, _ = snapshot(out)
    assert merge_main([str(out), "--copy"]) == 0
    assert "as one self-contained file" in capsys.readouterr().out
    with h5py.File(out, "r") as top:
        assert not top["features"].is_virtual
    assert not shards_dir(out).exists()  # shards no longer referenced are removed
    copied = snapshot(out)
    assert copied[0] == sorted(paths)
    order = np.argsort(paths)
    np.testing.assert_array_equal(copied[1], rows[order])


def test_a_small_store_stays_one_file_when_appended(tmp_path):
    folder = many_images(tmp_path / "pets", 10)
    out = tmp_path / "f.h5"
    run(folder, out)
    many_images(tmp_path / "more", 2)
    add_images(folder, tmp_path / "more", ["new0.jpg", "new1.jpg"])
    assert run(folder, out).shards == 0  # default limit: 64 MiB of rows
    assert not shards_dir(out).exists()
    with h5py.File(out, "r") as top:
        assert not top["features"].is_virtual
    assert snapshot(out)[0] == sorted(snapshot(out)[0])


def test_an_unchanged_rerun_hashes_nothing_and_a_touch_hashes_one_file(tmp_path, monkeypatch):
    import headstart.extract.decode as decode

    folder = many_images(tmp_path / "pets", 12)
    out = tmp_path / "f.h5"
    run(folder, out)
    reads = []
    real = decode.read_file
    monkeypatch.setattr(decode, "read_file", lambda path: reads.append(path) or real(path))
    again = run(folder, out)
    assert again.up_to_date and again.hashed == 0 and reads == []
    os.utime(folder / "Cat" / "0000.jpg", ns=(10**18, 10**18))
    touched = run(folder, out)
    assert (touched.hashed, touched.added) == (1, 0)  # same bytes: the row is kept
    assert len(reads) == 1
    assert run(folder, out).up_to_date  # the new mtime was recorded
    verified = run(folder, out, verify=True)
    assert verified.hashed == 12 and verified.up_to_date


def test_a_touched_file_of_a_sharded_store_keeps_its_row_and_its_new_time(appended):
    """The refresh of an unchanged file's stat goes into the new top file, rows untouched."""
    folder, out, _, _ = appended
    before = snapshot(out)
    touched = folder / "Cat" / "0000.jpg"
    os.utime(touched, ns=(10**18, 10**18))
    again = run(folder, out, single_file_limit=0)
    assert (again.hashed, again.added) == (1, 0)
    with h5py.File(out, "r") as top:
        assert top["features"].is_virtual
        row = [p.decode() for p in top["paths"][...]].index("Cat/0000.jpg")
        assert top["mtime_ns"][row] == 10**18
    after = snapshot(out)
    assert after[0] == before[0] and after[3] == before[3]
    np.testing.assert_array_equal(after[1], before[1])
    assert run(folder, out, single_file_limit=0).up_to_date  # nothing to hash any more
