"""A store another program holds open is busy, not damaged: say who holds it, change nothing."""

from __future__ import annotations

import errno
import subprocess
import sys

import h5py
import pytest
from helpers import TESTS, FakeBackbone, make_store, many_images, separable

from headstart.classify.cli import fit_head_main, predict_main
from headstart.errors import EXIT_BUSY, StoreBusyError
from headstart.extract import extract_features
from headstart.features import open_store
from headstart.features.cli import main as info_main

HOLD = ("import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+'); "
        "print('open', flush=True); time.sleep(120)")


@pytest.fixture
def held(tmp_path):
    """A complete store, opened for writing by another process (a notebook's 'r+')."""
    X, y = separable(n=200, dim=8)
    path = make_store(tmp_path / "features.h5", X, y, classes=["Cat", "Dog"])
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "open"
    yield path, holder
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_read_only_commands_name_the_lock_and_its_holder(held, tmp_path, capsys):
    path, holder = held
    with pytest.raises(StoreBusyError, match=rf"is locked by another program \(pid {holder.pid}"):
        open_store(path)
    for command in (lambda: info_main([str(path)]),
                    lambda: fit_head_main(["--features", str(path), "-o", str(tmp_path), "-q"])):
        assert command() == EXIT_BUSY
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "close it there and run the same command" in err
        assert "re-create" not in err and "HDF5_USE_FILE_LOCKING=FALSE" in err


def test_extract_on_a_locked_store_changes_nothing_then_appends(tmp_path):
    folder = many_images(tmp_path / "pets", 6)
    out = tmp_path / "features.h5"
    run = dict(weights="none", model=FakeBackbone(), progress=False, log=lambda line: None)
    extract_features(folder, out, **run)
    many_images(tmp_path / "more", 8)
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra in sorted((tmp_path / "more").rglob("000[67].jpg")):
        (folder / extra.parent.name / f"new-{extra.name}").write_bytes(extra.read_bytes())
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreBusyError, match="so nothing was changed; close it there"):
            extract_features(folder, out, **run)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no parts, no shards
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with open_store(out) as store:
        assert store.n_rows == 6
    assert extract_features(folder, out, **run).rows == 8


def test_predict_features_on_a_locked_store_is_busy(held, tmp_path, capsys):
    path, holder = held
    heads = tmp_path / "heads"
    free = make_store(tmp_path / "free.h5", *separable(n=200, dim=8), classes=["Cat", "Dog"])
    assert fit_head_main(["--features", str(free), "-o", str(heads), "-q", "--no-plots"]) == 0
    assert predict_main(["--head", str(heads / "logreg"), "--features", str(path)]) == EXIT_BUSY
    assert "is locked by another program" in capsys.readouterr().err


def test_file_systems_without_locking_are_read_without_it(tmp_path, monkeypatch):
    """NFS or Lustre mounted without locks: HDF5's lock call fails with ENOLCK."""
    path = make_store(tmp_path / "features.h5", *separable(n=60, dim=4))
    real_file = h5py.File
    calls = []

    def no_locks(name, mode="r", *args, locking=None, **kwargs):
        calls.append(locking)
        if locking is None:
            raise OSError(errno.ENOLCK, "Unable to synchronously open file (unable to lock "
                                        "file, errno = 37, error message = 'No locks available')")
        return real_file(name, mode, *args, locking=locking, **kwargs)

    monkeypatch.setattr(h5py, "File", no_locks)
    with open_store(path) as store:
        assert store.n_rows == 60
    assert calls[:2] == [None, False]


def test_a_store_held_by_a_reader_is_not_busy(tmp_path):
    """HDF5's shared lock: another reader (HDFView in read-only mode) does not block."""
    path = make_store(tmp_path / "features.h5", *separable(n=60, dim=4))
    code = ("import h5py, sys, time; f = h5py.File(sys.argv[1], 'r'); print('open', flush=True);"
            " time.sleep(60)")
    reader = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              text=True, cwd=TESTS)
    try:
        assert reader.stdout.readline().strip() == "open"
        with open_store(path) as store:
            assert store.n_rows == 60
    finally:
        reader.kill()
        reader.wait()
        reader.stdout.close()
