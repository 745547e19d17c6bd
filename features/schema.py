"""Names and provenance of the feature store: the contract that plain h5py users read.

Root of every store file (a single-file store, each shard and each part file alike):

    features         float32|float16 [N, D]  chunked, resizable; one row per image. In a
                                             store of several shards, a virtual dataset
                                             over the shard files (fill value NaN)
    labels           int32 [N]               index into ``classes``; -1 in unlabelled stores
    paths            utf-8 str [N]           path relative to the image folder, '/'-separated
    sha256           ascii bytes S64 [N]     hex sha256 of each image file's bytes
    size             int64 [N]               file size in bytes when extracted     (optional)
    mtime_ns         int64 [N]               file modification time, ns            (optional)
    split            utf-8 str [N]           split given by the folder layout: train,
                                             validation or test (only pre-split layouts)
    classes          utf-8 str [C]           sorted class names
    skipped/paths    utf-8 str [K]           files that looked like images but could not be read
    skipped/reasons  utf-8 str [K]
    skipped/sha256   S64 [K]                 so an unchanged bad file is not retried
    skipped/size, skipped/mtime_ns  int64 [K]                                      (optional)

Attributes carry the provenance below; ``IDENTITY_KEYS`` are the ones that make two
stores' rows comparable, so a store is never extended by a run that differs in any, and
``label_source`` says where labels came from (another label source is refused as well).
Stores written before `size`, `mtime_ns`, `split`, `pooling` or `label_source` existed
read as: unknown stat (files are hashed once), no given split, no pooling, folders.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

FEATURES = "features"
LABELS = "labels"
PATHS = "paths"
HASHES = "sha256"
CLASSES = "classes"
SKIPPED_PATHS = "skipped/paths"
SKIPPED_REASONS = "skipped/reasons"
SKIPPED_HASHES = "skipped/sha256"
SIZES = "size"
MTIMES = "mtime_ns"
GIVEN_SPLIT = "split"
SKIPPED_SIZES = "skipped/size"
SKIPPED_MTIMES = "skipped/mtime_ns"
LABEL_SOURCE = "label_source"
MERGED_GENERATION = "merged_generation"  # the shard generation whose merge wrote the store
DEFAULT_LABEL_SOURCE = "folders"  # stores written before label sources existed


def repeated_paths(paths: Sequence[str]) -> list[str]:
    """The paths that occur more than once, in order of first occurrence (a store holds
    each path once)."""
    if len(set(paths)) == len(paths):
        return []
    return [path for path, n in Counter(paths).items() if n > 1]


def label_source_kind(source: str) -> str:
    """What must match for a run to extend a store: "csv" for any labels CSV (a labels file
    is data that changes: new rows append, changed labels refresh the kept rows), the
    whole source otherwise ("folders", "split folders", "file names: REGEX", "none")."""
    return "csv" if source.startswith("csv ") else source


def label_source_option(source: str) -> str:
    """The extract-features options that give `source`, for a message."""
    if source.startswith("csv "):
        return "--labels " + source[4:].split(" (", 1)[0]
    if source.startswith("file names: "):
        return f"--labels-from-name '{source[len('file names: '):]}'"
    if source == "none":
        return "--unlabelled"
    return "no label option (class folders)"
UNLABELLED = -1  # the label of every row in an unlabelled store

STRING = h5py.string_dtype("utf-8")
HASH_DTYPE = "S64"
# How headstart names a shard file inside a `<store>.shards/` folder (generation, index, count)
SHARD_NAME = r"g(\d{6})-s(\d{5})-of-(\d{5})\.h5"
STORAGE_DTYPES = ("float32", "float16")
COMPRESSIONS = ("none", "gzip", "lzf")

# Rows per chunk of `features`: 64 x 4096 float32 = 1 MiB, the top of h5py's advice
# (10 KiB - 1 MiB); bench/ measured it against 1, 16 and 256 rows (README, Performance).
CHUNK_BYTES = 1 << 20

IDENTITY_KEYS = ("model", "layer", "weights", "input_size", "resize", "preprocessing", "dtype",
                 "precision", "pooling")
# Attributes that stores written before they existed lack, with the value those stores had.
IDENTITY_DEFAULTS = {"precision": "float32", "pooling": "none"}


@dataclass(frozen=True)
class Identity:
    """What produced a store's rows. Rows from stores with different identities never mix."""

    model: str  # the backbone: a keras.applications name, e.g. "VGG16"
    layer: str  # the layer whose output is stored, e.g. "fc2"
    weights: str  # "imagenet", "none (seed 0)" or "sha256:<hex>" of a weights file
    input_size: int
    resize: str
    preprocessing: str
    dtype: str = "float32"  # how rows are stored
    precision: str = "float32"  # how the backbone computed them (mixed_float16 on GPUs)
    pooling: str = "none"  # "avg": a 4-d layer output averaged over height and width

    def as_attrs(self) -> dict[str, str | int]:
        return {key: getattr(self, key) for key in IDENTITY_KEYS}

    @classmethod
    def from_attrs(cls, attrs: h5py.AttributeManager | dict) -> Identity:
        missing = [key for key in IDENTITY_KEYS
                   if key not in attrs and key not in IDENTITY_DEFAULTS]
        if missing:
            raise ValueError(f"attributes {missing} are missing")
        values = {key: attrs[key] if key in attrs else IDENTITY_DEFAULTS[key]
                  for key in IDENTITY_KEYS}
        values["input_size"] = int(values["input_size"])
        return cls(**{k: v if not isinstance(v, bytes) else v.decode() for k, v in values.items()})

    def differences(self, other: Identity) -> list[str]:
        """Readable list of fields that differ, e.g. ["weights: 'none (seed 0)' vs 'imagenet'"]."""
        return [
            f"{key}: {getattr(self, key)!r} vs {getattr(other, key)!r}"
            for key in IDENTITY_KEYS
            if getattr(self, key) != getattr(other, key)
        ]


class Skipped(NamedTuple):
    """A file that looked like an image but could not be read, and why."""

    path: str
    reason: str
    sha256: str  # "" when the file could not even be read
    size: int = -1  # bytes; -1 when unknown
    mtime_ns: int = -1  # -1 when unknown


def chunk_rows(dim: int, dtype: str) -> int:
    """Rows per `features` chunk so one chunk is about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (dim * np.dtype(dtype).itemsize))


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks so memory stays flat for large weights files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
