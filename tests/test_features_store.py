"""The store: round trips, atomic parts, consolidation, validation of foreign files, locking."""

from __future__ import annotations

import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from helpers import IDENTITY, random_rows

from headstart.features import (
    Entry,
    PartWriter,
    StoreBusyError,
    StoreError,
    consolidate,
    exclusive_lock,
    open_store,
    part_files,
    parts_dir,
    read_records,
    store_files,
    write_store,
)
from headstart.features.cli import main as info_main
from headstart.features.journal import read_rows, remove_stale_temporaries
from headstart.features.schema import chunk_rows

PATHS = ["Cat/a.jpg", "Cat/b.jpg", "Dog/c.jpg"]
HASHES = ["a" * 64, "b" * 64, "c" * 64]


def entries(paths, hashes):
    """Entry records of class-folder images (label: the first folder)."""
    return [Entry(p, h, p.split("/", 1)[0]) for p, h in zip(paths, hashes, strict=True)]


def make_store(path, rows=None, paths=PATHS, hashes=HASHES, **kw):
    rows = random_rows(len(paths)) if rows is None else rows
    kw.setdefault("attrs", {"complete": True})
    return write_store(path, features=rows, paths=paths, hashes=hashes, classes=["Cat", "Dog"],
                       identity=kw.pop("identity", IDENTITY), **kw)


def test_round_trip_is_exact_and_readable_with_plain_h5py(tmp_path):
    rows = random_rows(3)
    make_store(tmp_path / "s.h5", rows, skipped=[("Dog/bad.jpg", "empty file", "d" * 64)])
    with open_store(tmp_path / "s.h5") as store:
        np.testing.assert_array_equal(store.load_features(), rows)
        assert store.paths == PATHS and store.hashes == HASHES
        assert store.labels.tolist() == [0, 0, 1]
        assert store.class_counts() == {"Cat": 2, "Dog": 1}
        assert store.skipped == [("Dog/bad.jpg", "empty file")]
        assert store.identity == IDENTITY
    with h5py.File(tmp_path / "s.h5", "r") as f:  # the README's five-line example
        assert f["features"].shape == (3, 16)
        assert list(f["classes"].asstr()[...]) == ["Cat", "Dog"]
        assert f["features"].maxshape == (None, 16) and f["features"].chunks is not None
        assert f.attrs["weights"] == "none (seed 0)"


def test_float16_storage_reads_back_as_float32_within_half_precision(tmp_path):
    rows = random_rows(3) * 10
    identity = IDENTITY.__class__(**{**IDENTITY.as_attrs(), "dtype": "float16"})
    make_store(tmp_path / "s.h5", rows, identity=identity)
    with open_store(tmp_path / "s.h5") as store:
        assert store.features.dtype == np.float16
        loaded = store.load_features()
    assert loaded.dtype == np.float32
    np.testing.assert_allclose(loaded, rows, rtol=1e-3)  # float16 keeps 11 significant bits


def test_chunks_are_about_one_mebibyte_of_rows():
    assert chunk_rows(4096, "float32") == 64
    assert chunk_rows(4096, "float16") == 128


def test_iter_chunks_covers_every_row_once(tmp_path):
    rows = random_rows(70)
    paths = [f"Cat/{i:03d}.jpg" for i in range(70)]
    make_store(tmp_path / "s.h5", rows, paths=paths, hashes=["0" * 64] * 70)
    with open_store(tmp_path / "s.h5") as store:
        blocks = list(store.iter_chunks(rows=32))
    assert [b.stop - b.start for b, _ in blocks] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([x for _, x in blocks]), rows)


def test_atomic_write_leaves_no_temporary_and_keeps_old_file_on_failure(tmp_path):
    make_store(tmp_path / "s.h5")
    with pytest.raises(ValueError, match="do not line up"):
        make_store(tmp_path / "s.h5", random_rows(2))
    with open_store(tmp_path / "s.h5") as store:
        assert store.n_rows == 3
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b"not hdf5 at all"), "not a readable HDF5 file"),
        (lambda p: p.write_bytes(p.read_bytes()[:3000]), "not a readable HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "not a headstart feature store"),
    ],
    ids=["not-hdf5", "truncated", "empty-hdf5"],
)
def test_foreign_or_damaged_files_are_refused_in_one_sentence(tmp_path, damage, message):
    path = make_store(tmp_path / "s.h5")
    damage(path)
    with pytest.raises(StoreError, match=message):
        open_store(path)


def test_wrong_shapes_and_label_ranges_are_refused(tmp_path):
    path = make_store(tmp_path / "s.h5")
    with h5py.File(path, "a") as f:
        del f["labels"]
        f["labels"] = np.array([0, 1, 7], dtype=np.int32)
    with pytest.raises(StoreError, match="labels run from 0 to 7 but there are 2 classes"):
        open_store(path)
    with h5py.File(path, "a") as f:
        del f["paths"]
        f.create_dataset("paths", data=["x"], dtype=h5py.string_dtype())
    with pytest.raises(StoreError, match="'paths' has shape"):
        open_store(path)


def test_missing_store_names_the_command_to_create_it(tmp_path):
    with pytest.raises(StoreError, match=r"No feature store at .*extract-features DIR -o"):
        open_store(tmp_path / "nope.h5")


def test_part_writer_commits_parts_and_consolidation_sorts_and_dedupes(tmp_path):
    store = tmp_path / "s.h5"
    writer = PartWriter(store, identity=IDENTITY, classes=["Cat", "Dog"], attrs={"command": "x"},
                        flush_rows=2)
    rows = random_rows(3)
    writer.add_rows(rows[2:], entries(["Dog/c.jpg"], [HASHES[2]]))
    assert part_files(store) == []  # buffered, below flush_rows
    writer.add_rows(rows[:2], entries(PATHS[:2], HASHES[:2]))
    writer.add_skipped(Entry("Cat/z.jpg", "e" * 64), "empty file")
    writer.commit()
    assert len(part_files(store)) == 2
    with pytest.raises(StoreError, match="unfinished.*3 new images.*run `x` again"):
        open_store(store)
    present = dict(zip(PATHS, HASHES, strict=True)) | {"Cat/z.jpg": "e" * 64}
    result = consolidate(store, identity=IDENTITY, classes=["Cat", "Dog"], present=present,
                         attrs={"complete": True})
    assert (result.rows, result.skipped, result.dropped) == (3, 1, 0)
    assert not parts_dir(store).exists()
    with open_store(store) as s:
        assert s.paths == PATHS  # sorted by path, whatever the commit order
        np.testing.assert_array_equal(s.load_features(), rows)
    # Consolidating again (a crash between rename and deleting parts) changes nothing.
    consolidate(store, identity=IDENTITY, classes=["Cat", "Dog"], present=present,
                attrs={"complete": True})
    with open_store(store) as s:
        assert s.n_rows == 3


def test_consolidation_drops_vanished_and_changed_files_and_later_records_win(tmp_path):
    store = make_store(tmp_path / "s.h5")
    writer = PartWriter(store, identity=IDENTITY, classes=["Cat", "Dog"], attrs={})
    new_row = np.full((1, 16), 7, np.float32)
    writer.add_rows(new_row, entries(["Cat/b.jpg"], ["f" * 64]))  # changed, re-extracted
    writer.commit()
    present = {"Cat/b.jpg": "f" * 64, "Dog/c.jpg": HASHES[2]}  # Cat/a.jpg was deleted
    result = consolidate(store, identity=IDENTITY, classes=["Cat", "Dog"], present=present,
                         attrs={})
    assert result.dropped == 1
    with open_store(store, require_complete=False) as s:
        assert s.paths == ["Cat/b.jpg", "Dog/c.jpg"]
        np.testing.assert_array_equal(s.load_features()[0], new_row[0])


def test_records_already_read_are_reused_and_only_later_files_are_read(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s.h5")
    known = read_records(store_files(store), IDENTITY)
    writer = PartWriter(store, identity=IDENTITY, classes=["Cat", "Dog"], attrs={})
    writer.add_rows(random_rows(1), entries(["Dog/d.jpg"], ["d" * 64]))
    writer.commit()
    import headstart.features.journal as journal

    opened = []
    real_open = journal.open_h5
    monkeypatch.setattr(journal, "open_h5", lambda path, **kw: opened.append(path) or
                        real_open(path, **kw))
    records = read_records(store_files(store), IDENTITY, known=known)
    assert opened == part_files(store)  # the store itself was not read again
    assert records == {**known, "Dog/d.jpg": records["Dog/d.jpg"]}
    assert records["Dog/d.jpg"].source == 1
    assert [file for file, _ in records.files] == store_files(store)
    # Known records of other files are not trusted: everything is read.
    of_parts = read_records(part_files(store))
    opened.clear()
    read_records(store_files(store), IDENTITY, known=of_parts)
    assert opened == store_files(store)
    # The one-pass finish gives the same store as reading everything again.
    present = dict(zip(PATHS, HASHES, strict=True)) | {"Dog/d.jpg": "d" * 64}
    consolidate(store, identity=IDENTITY, classes=["Cat", "Dog"], present=present,
                attrs={"complete": True}, known=known)
    with open_store(store) as s:
        assert s.paths == sorted(present)
    # The store was rewritten under the same name: the old records no longer count.
    opened.clear()
    assert "Dog/d.jpg" in read_records(store_files(store), IDENTITY, known=known)
    assert opened == [store]


def test_records_of_another_identity_are_refused(tmp_path):
    store = make_store(tmp_path / "s.h5")
    other = IDENTITY.__class__(**{**IDENTITY.as_attrs(), "weights": "imagenet"})
    with pytest.raises(StoreError, match="weights: the store's 'none \\(seed 0\\)', this "
                                         "run's 'imagenet'.*--weights none --seed 0.*another -o"):
        read_records(store_files(store), other)


def test_read_rows_handles_any_order_in_contiguous_runs(tmp_path):
    data = np.arange(40, dtype=np.float32).reshape(20, 2)
    rows = np.array([5, 3, 4, 17, 0])
    np.testing.assert_array_equal(read_rows(data, rows), data[rows])


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    store = tmp_path / "s.h5"
    parts_dir(store).mkdir()
    (tmp_path / ".s.h5.tmp-123").write_bytes(b"half")
    (parts_dir(store) / ".part-000001.h5.tmp-123").write_bytes(b"half")
    remove_stale_temporaries(store)
    assert list(tmp_path.glob(".s.h5.tmp-*")) == [] and list(parts_dir(store).iterdir()) == []


def test_second_writer_is_refused_and_lock_dies_with_its_holder(tmp_path):
    store = tmp_path / "s.h5"
    code = (
        "import sys, time; from headstart.features import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusyError, match="Another extract-features is writing"):
            with exclusive_lock(store):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait()
        holder.stdout.close()
    deadline = time.time() + 5
    while True:
        try:
            with exclusive_lock(store):
                break
        except StoreBusyError:
            assert time.time() < deadline
            time.sleep(0.05)


def test_features_info_summarises_a_store(tmp_path, capsys):
    make_store(tmp_path / "s.h5", skipped=[("Dog/bad.jpg", "empty file", "d" * 64)])
    assert info_main([str(tmp_path / "s.h5"), "--skipped"]) == 0
    out = capsys.readouterr().out
    for expected in ("rows: 3 x 16 float32", "Cat 2, Dog 1", "skipped: 1", "weights: none (seed 0)",
                     "complete: yes", "skipped Dog/bad.jpg: empty file"):
        assert expected in out
    assert info_main([str(tmp_path / "missing.h5")]) == 2
    assert "No feature store" in capsys.readouterr().err
