"""What a store file may contain, checked every time one is opened: nothing read from outside.

A store, a shard or a part file handed over by someone else may be crafted. HDF5 can make
a dataset read bytes from anywhere: external raw storage (`dataset.external`, e.g. the
`sha256` column stored in /etc/passwd), external links and soft links (`classes` taken
from another file), and virtual datasets whose sources are other files. headstart writes
none of these except one: the `features` dataset of a sharded store's top file is a
virtual dataset over its shard files. The one rule, for every object in every file:

- every link is a hard link (no external or soft links, at any depth);
- no dataset has external raw storage;
- only `features` of a store's top file may be virtual (never in a shard or a part
  file), and each of its sources is `NAME.shards/gGGGGGG-sIIIII-of-NNNNN.h5`: a relative
  path without `..`, one folder deep in a `*.shards/` folder beside the store, named as
  headstart names shard files, reading that file's `features`;
- the index columns hold every element they declare (they are never compressed), so a
  tiny file cannot declare 10^9 rows and make a reader allocate gigabytes;
- `sha256` holds lowercase hex digests (or nothing, for a file that could not be read).

Anything else is refused in one sentence naming the file and the object.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import h5py
import numpy as np

from headstart.errors import StoreError
from headstart.features import schema

SHARD_FILE = re.compile(schema.SHARD_NAME)
INDEX_COLUMNS = (schema.LABELS, schema.PATHS, schema.HASHES, schema.SIZES, schema.MTIMES,
                 schema.GIVEN_SPLIT, schema.CLASSES, schema.SKIPPED_PATHS,
                 schema.SKIPPED_REASONS, schema.SKIPPED_HASHES, schema.SKIPPED_SIZES,
                 schema.SKIPPED_MTIMES)
HEX = frozenset(b"0123456789abcdef")


def may_be_virtual(path: Path) -> bool:
    """Only a store's top file may hold a virtual dataset: not a shard, not a part file."""
    return not (SHARD_FILE.fullmatch(path.name) or path.parent.name.endswith(".parts"))


def check_contents(handle: h5py.File, path: Path) -> None:
    """StoreError unless every object of the open file `handle` follows the module's rule.

    One pass over the file's links with HDF5's own visitor (a store has a dozen objects;
    about 0.1 ms a file, so the shard files of a large store are checked on every open).
    """
    links: list[tuple[bytes, int]] = []
    handle.id.links.visit(lambda name, info: links.append((name, info.type)), info=True)
    virtual_allowed = may_be_virtual(path)
    for raw, kind in links:
        where = "/" + raw.decode("utf-8", "backslashreplace")
        if kind == h5py.h5l.TYPE_EXTERNAL:
            raise _refused(path, where, "is a link to another file")
        if kind == h5py.h5l.TYPE_SOFT:
            raise _refused(path, where, "is a soft link")
        if kind != h5py.h5l.TYPE_HARD:
            raise _refused(path, where, "is a link of a kind headstart never writes")
        if h5py.h5o.get_info(handle.id, raw).type == h5py.h5o.TYPE_DATASET:
            _check_dataset(handle, raw, path, where, virtual_allowed=virtual_allowed)


def check_shard_rows(handle: h5py.File, path: Path) -> None:
    """The part of the rule a store's reader needs of each shard file it reads rows from:
    hard links only, and `features` neither virtual nor stored in another file.

    Cheaper than check_contents (one dataset inspected, not every column), so opening a
    store of 1,000 shards stays fast; code that reads a shard's index opens it through
    open_h5, which applies the whole rule.
    """
    links: list[int] = []
    handle.id.links.visit(lambda name, info: links.append(info.type), info=True)
    if any(kind != h5py.h5l.TYPE_HARD for kind in links):
        raise _refused(path, "/", "holds a link to another object or file")
    if schema.FEATURES in handle:
        _check_dataset(handle, schema.FEATURES.encode(), path, "/" + schema.FEATURES,
                       virtual_allowed=False)


def virtual_source_problem(file_name: str, dataset_name: str) -> str | None:
    """Why a virtual source may not be read (None when it is a shard file of the rule)."""
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    if file_name.startswith(("/", "\\")) or PurePosixPath(file_name).is_absolute():
        return f"reads an absolute path '{file_name}'"
    if ".." in parts:
        return f"reads '{file_name}', outside the store's folder"
    if (len(parts) != 2 or not parts[0].endswith(".shards")
            or not SHARD_FILE.fullmatch(parts[1])):
        return f"reads '{file_name}', which is not a shard file in a '*.shards/' folder"
    if dataset_name.lstrip("/") != schema.FEATURES:
        return f"reads the dataset '{dataset_name}' of '{file_name}', not its features"
    return None


def check_hashes(hashes: np.ndarray, path: Path, column: str = schema.HASHES) -> None:
    """StoreError unless every entry of a S64 column is a lowercase hex sha256 (or empty)."""
    if hashes.dtype != np.dtype(schema.HASH_DTYPE):
        raise StoreError(f"'{path}': '{column}' must be {schema.HASH_DTYPE} hex digests, found "
                         f"{hashes.dtype}; the store is damaged, re-create it.")
    if not len(hashes):
        return
    raw = hashes.view(np.uint8).reshape(len(hashes), -1)
    filled = raw[:, 0] != 0
    allowed = np.zeros(256, bool)
    allowed[list(HEX)] = True
    bad = filled & ~allowed[raw].all(axis=1)
    if bad.any():
        raise StoreError(f"'{path}': '{column}' holds {int(bad.sum()):,} values that are not hex "
                         f"sha256 digests (row {int(np.flatnonzero(bad)[0])}); the store is "
                         "damaged or crafted, re-create it with extract-features.")


def _check_dataset(handle: h5py.File, raw: bytes, path: Path, where: str, *,
                   virtual_allowed: bool) -> None:
    dataset = h5py.h5d.open(handle.id, raw)
    plist = dataset.get_create_plist()
    if plist.get_external_count():
        raise _refused(path, where, f"stores its data in another file "
                                    f"('{plist.get_external(0)[0].decode(errors='replace')}')")
    virtual = plist.get_layout() == h5py.h5d.VIRTUAL
    if virtual:
        if not virtual_allowed or where != "/" + schema.FEATURES:
            raise _refused(path, where, "is a virtual dataset, which headstart writes only as "
                                        "the features of a store's top file")
        for i in range(plist.get_virtual_count()):
            problem = virtual_source_problem(plist.get_virtual_filename(i),
                                             plist.get_virtual_dsetname(i))
            if problem:
                raise _refused(path, where, problem)
    if where.lstrip("/") in INDEX_COLUMNS:  # holds every element it declares, uncompressed
        if virtual or plist.get_nfilters():
            raise _refused(path, where, "is virtual or compressed, which headstart never "
                                        "writes for an index column")
        count = dataset.get_space().get_simple_extent_npoints()
        if dataset.get_storage_size() < count * dataset.get_type().get_size():
            raise _refused(path, where, f"declares {count:,} entries that the file does not "
                                        "hold")


def _refused(path: Path, where: str, why: str) -> StoreError:
    return StoreError(f"'{path}': '{where}' {why}; a headstart store reads nothing from "
                      "outside itself, so it is refused (re-create it with extract-features).")
