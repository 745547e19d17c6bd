"""Crafted stores and heads: nothing is read from outside them, nothing exhausts memory."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import FakeBackbone, first_usable_seed, make_store, many_images, separable

from headstart.classify.cli import fit_head_main, predict_main
from headstart.classify.persist import WEIGHTS, load_head
from headstart.errors import HeadError, StoreError
from headstart.extract import extract_features
from headstart.features import open_store, read_records, schema
from headstart.features.cli import main as info_main
from headstart.features.cli import merge_main
from headstart.features.contents import virtual_source_problem
from headstart.features.stitch import shard_path

SECRET = "root:x:0:0:root:/root:/bin/bash\n" * 8


@pytest.fixture
def store(tmp_path) -> Path:
    X, y = separable(n=60, dim=8)
    return make_store(tmp_path / "features.h5", X, y, classes=["cat", "dog"])


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "passwd"
    path.parent.mkdir()
    path.write_text(SECRET)
    return path


def replace_dataset(store: Path, name: str, **create) -> None:
    with h5py.File(store, "r+") as handle:
        del handle[name]
        handle.create_dataset(name, **create)


def assert_every_command_refuses(store: Path, tmp_path: Path, capsys, words: str) -> None:
    """open_store, read_records, features-info and fit-head: one sentence, status 2."""
    with pytest.raises(StoreError, match=words):
        open_store(store)
    with pytest.raises(StoreError, match=words):
        read_records([store])
    assert info_main([str(store)]) == 2
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path / "heads"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count(words.split(".*")[0].replace("\\", "")) >= 2, err
    assert "Traceback" not in err and "root:x:0" not in err
    assert not (tmp_path / "heads").exists()


@pytest.mark.parametrize("column", [schema.HASHES, schema.LABELS, schema.SKIPPED_HASHES])
def test_external_raw_storage_is_refused_in_any_dataset(store, secret, tmp_path, capsys,
                                                        column):
    """fit-head copied /etc/passwd into split.csv through an external sha256 column."""
    with h5py.File(store, "r") as handle:
        n, dtype = handle[column].shape[0], handle[column].dtype
    replace_dataset(store, column, shape=(n,), dtype=dtype,
                    external=[(str(secret), 0, n * dtype.itemsize)])
    assert_every_command_refuses(store, tmp_path, capsys, "stores its data in another file")


@pytest.mark.parametrize("kind", ["external", "soft", "external in a group"])
def test_links_are_refused_at_any_depth(store, tmp_path, capsys, kind):
    """features-info showed classes read through an external link from another file."""
    other = make_store(tmp_path / "other.h5", *separable(n=20, dim=8),
                       classes=["zebra", "yak"])
    with h5py.File(store, "r+") as handle:
        if kind == "external":
            del handle[schema.CLASSES]
            handle[schema.CLASSES] = h5py.ExternalLink(str(other), "/" + schema.CLASSES)
        elif kind == "soft":
            handle["alias"] = h5py.SoftLink("/" + schema.LABELS)
        else:
            handle["skipped"]["more"] = h5py.ExternalLink(str(other), "/labels")
    assert_every_command_refuses(store, tmp_path, capsys, "link to" if kind != "soft"
                                 else "soft link")


def virtual_over(store: Path, source_file: str, dataset: str = "features",
                 name: str = "features") -> None:
    with h5py.File(store, "r") as handle:
        shape, dtype = handle[schema.FEATURES].shape, handle[schema.FEATURES].dtype
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[:] = h5py.VirtualSource(source_file, dataset, shape=shape, dtype=dtype)
    with h5py.File(store, "r+") as handle:
        del handle[name]
        handle.create_virtual_dataset(name, layout, fillvalue=np.nan)


@pytest.mark.parametrize("source", ["../outside/other.h5", "ABSOLUTE", "other.h5",
                                    "features.h5.shards/secret.h5",
                                    "x.shards/deeper/g000000-s00000-of-00001.h5"])
def test_virtual_sources_outside_the_stores_shard_folders_are_refused(store, tmp_path,
                                                                      capsys, source):
    (tmp_path / "outside").mkdir()
    other = make_store(tmp_path / "outside" / "other.h5", *separable(n=60, dim=8))
    if source == "ABSOLUTE":
        source = str(other)
    virtual_over(store, source)
    assert_every_command_refuses(store, tmp_path, capsys, "reads")


def sharded_store(tmp_path: Path) -> Path:
    """8 images extracted by two shard workers and merged: a top file over 2 shard files."""
    folder = many_images(tmp_path / "pets", 8)
    out = tmp_path / "features.h5"
    for index in range(2):
        extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False,
                         log=lambda line: None, shard=(index, 2))
    assert merge_main([str(out)]) == 0
    return out


def test_only_features_may_be_virtual_and_never_in_a_shard(tmp_path, capsys):
    out = sharded_store(tmp_path)
    with open_store(out) as opened:
        assert len(opened.shards) == 2  # a sharded store within the rule opens
    shard = shard_path(out, 0, 0, 2)
    # the shard file itself becomes a virtual dataset over its neighbour
    virtual_over(shard, shard_path(out, 0, 1, 2).name)
    with pytest.raises(StoreError, match="virtual dataset, which headstart writes only"):
        open_store(out)
    # and labels as a virtual dataset in a one-file store
    plain = make_store(tmp_path / "plain.h5", *separable(n=20, dim=8))
    with h5py.File(plain, "r") as handle:
        n = handle[schema.LABELS].shape[0]
    layout = h5py.VirtualLayout(shape=(n,), dtype="int32")
    layout[:] = h5py.VirtualSource("plain.h5.shards/g000000-s00000-of-00001.h5", "labels",
                                   shape=(n,))
    with h5py.File(plain, "r+") as handle:
        del handle[schema.LABELS]
        handle.create_virtual_dataset(schema.LABELS, layout)
    assert_every_command_refuses(plain, tmp_path, capsys, "virtual")


def test_a_shard_file_that_is_a_link_is_refused(tmp_path):
    out = sharded_store(tmp_path)
    shard = shard_path(out, 0, 1, 2)
    moved = tmp_path / "elsewhere.h5"
    shutil.move(shard, moved)
    shard.symlink_to(moved)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(out)


def test_the_virtual_source_rule():
    ok = "features.h5.shards/g000001-s00002-of-00004.h5"
    assert virtual_source_problem(ok, "/features") is None
    assert virtual_source_problem(ok, "labels") is not None
    for bad in ["/etc/passwd", "../x.shards/g000001-s00002-of-00004.h5",
                "features.h5.shards/../../g000001-s00002-of-00004.h5",
                "features.h5/g000001-s00002-of-00004.h5", "g000001-s00002-of-00004.h5",
                "features.h5.shards/g1-s2-of-4.h5", "C:\\x.shards\\g000001-s00002-of-00004.h5"]:
        assert virtual_source_problem(bad, "features") is not None, bad


@pytest.mark.parametrize("column", [schema.LABELS, schema.PATHS, schema.HASHES])
def test_a_tiny_file_declaring_a_billion_rows_is_refused_without_allocating(tmp_path, capsys,
                                                                           column):
    """A 12 KB store declaring 10^9 rows made features-info allocate 4 GB."""
    store = make_store(tmp_path / "features.h5", *separable(n=10, dim=4))
    with h5py.File(store, "r") as handle:
        dtype = handle[column].dtype
    replace_dataset(store, column, shape=(10**9,), dtype=dtype, chunks=(1024,),
                    maxshape=(None,))
    assert store.stat().st_size < 2 << 20  # one chunk of features; 10^9 labels are 4 GB
    assert_every_command_refuses(store, tmp_path, capsys, "declares 1,000,000,000 entries")


@pytest.mark.parametrize("value", [b"<script>alert(1)</script>".ljust(64, b"a"),
                                   b"A" * 64, b"../../etc/passwd".ljust(64, b"0")])
def test_hashes_that_are_not_hex_digests_are_refused(store, tmp_path, capsys, value):
    with h5py.File(store, "r+") as handle:
        handle[schema.HASHES][3] = value
    assert_every_command_refuses(store, tmp_path, capsys, "not hex sha256 digests")


# ---- heads ------------------------------------------------------------------------------

@pytest.fixture
def head_dir(tmp_path) -> Path:
    X, y = separable(n=120, dim=8)
    store = make_store(tmp_path / "features.h5", X, y, classes=["cat", "dog"])
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path / "heads"), "-q",
                          "--no-plots", "--seed", str(first_usable_seed(store))]) == 0
    return tmp_path / "heads" / "logreg"


def without_digests(head_dir: Path) -> dict:
    meta = json.loads((head_dir / "head.json").read_text())
    meta.pop("files")
    (head_dir / "head.json").write_text(json.dumps(meta))
    return meta


def npz_bytes(arrays: dict, raw: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, data in (raw or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_only_the_named_arrays_of_weights_npz_are_read(head_dir):
    """Every member of weights.npz was loaded, an unused 1.6 GB one included."""
    without_digests(head_dir)
    with np.load(head_dir / WEIGHTS) as stored:
        arrays = {name: stored[name] for name in stored.files}
    (head_dir / WEIGHTS).write_bytes(npz_bytes(arrays, {"unused.npy": b"\x93NUMPY garbage"}))
    assert load_head(head_dir).classes == ["cat", "dog"]


@pytest.mark.parametrize("case", ["shape 10^12", "object dtype", "truncated"])
def test_a_weights_member_declaring_more_than_it_holds_is_refused(head_dir, case):
    without_digests(head_dir)
    with np.load(head_dir / WEIGHTS) as stored:
        arrays = {name: stored[name] for name in stored.files}
    header = io.BytesIO()
    if case == "shape 10^12":
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**12,)})
        member = header.getvalue() + b"\0" * 64
    elif case == "object dtype":
        np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False,
                                                      "shape": (8,)})
        member = header.getvalue() + b"\0" * 64
    else:
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (8,)})
        member = header.getvalue() + b"\0" * 8
    del arrays["mean"]
    (head_dir / WEIGHTS).write_bytes(npz_bytes(arrays, {"mean.npy": member}))
    with pytest.raises(HeadError, match="holds a damaged head"):
        load_head(head_dir)


@pytest.mark.parametrize("content", ['"format_version": "9"', "nested", "huge"])
def test_crafted_head_json_gets_one_sentence(head_dir, capsys, content):
    path = head_dir / "head.json"
    if content == "nested":
        path.write_text("[" * 200_000 + "]" * 200_000)
    elif content == "huge":
        with open(path, "wb") as handle:
            handle.truncate(64 << 20)  # sparse: 64 MB of zeros
    else:
        meta = json.loads(path.read_text())
        meta["format_version"] = "9"
        path.write_text(json.dumps(meta))
    with pytest.raises(HeadError):
        load_head(head_dir)
    assert predict_main(["--head", str(head_dir), "--features", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("name", ["head.json", WEIGHTS])
@pytest.mark.parametrize("target", ["secret", "fifo"])
def test_a_head_file_that_is_a_link_or_a_fifo_is_refused(head_dir, secret, name, target):
    path = head_dir / name
    if target == "fifo":
        path.unlink()
        os.mkfifo(path)
    else:
        shutil.copy(path, secret)  # a valid file, but outside the head's folder
        path.unlink()
        path.symlink_to(secret)
    with pytest.raises(HeadError, match="link|not a regular file|not a head file"):
        load_head(head_dir)
