"""Load a feature store for fitting, refusing data a head cannot learn from: its rows in
memory, or (lazy) read from the file as they are needed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.errors import ClassifyError
from headstart.features import FeatureStore, Identity, open_store


class StoreFeatures:
    """A store's rows left in its open file: `features[a:b]` reads them (float32); the
    file stays open until `close()`."""

    def __init__(self, store: FeatureStore):
        self._store = store
        self.shape = tuple(store.features.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self._store.features[rows], dtype=np.float32)

    def close(self) -> None:
        self._store.close()


@dataclass(frozen=True)
class Dataset:
    """Everything a head is fitted on; `features` float32, shape (n_images, dim), in memory
    (an ndarray) or read from the store as needed (StoreFeatures, `load_dataset(in_memory=)`)."""

    features: np.ndarray | StoreFeatures
    labels: np.ndarray  # int32, shape (n_images,), index into classes
    classes: list[str]
    paths: list[str]
    hashes: list[str]
    identity: Identity
    attrs: dict
    source: Path
    given_splits: list[str] | None = None  # each row's split from pre-split folders

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def load_dataset(path: str | Path = "features.h5", *,
                 in_memory: Callable[[int, int, int], bool] | None = None) -> Dataset:
    """Read a complete, labelled store, opening it once.

    in_memory(n_rows, dim, n_classes): asked before any row is read; when it says no, the
    rows stay in the file (`dataset.features` is a StoreFeatures: close it when done).
    It may raise to refuse the store. Default: the rows are loaded.
    Raises StoreError or ClassifyError (one sentence) for unusable ones: missing,
    unfinished, damaged, unlabelled, one class, non-finite rows.
    """
    path = Path(path)
    store = open_store(path)
    lazy = False
    try:
        if not store.labelled:
            raise ClassifyError(
                f"'{path}' is an unlabelled store (extracted with --unlabelled), so there is "
                f"nothing to fit; score it with `predict --head HEAD --features {path}`."
            )
        lazy = in_memory is not None and not in_memory(store.n_rows, store.dim,
                                                       len(store.classes))
        features = StoreFeatures(store) if lazy else store.load_features()
        dataset = Dataset(features, np.asarray(store.labels, dtype=np.int32), list(store.classes),
                          list(store.paths), list(store.hashes), store.identity, dict(store.attrs),
                          path, store.given_splits)
        check_dataset(dataset)
    except BaseException:
        store.close()
        raise
    if not lazy:
        store.close()
    return dataset


def check_dataset(dataset: Dataset) -> None:
    """At least two classes with images, and only finite feature values."""
    name = dataset.source
    if len(dataset.labels) == 0:
        raise ClassifyError(
            f"'{name}' holds no images; run extract-features on a folder with images."
        )
    present = [dataset.classes[c] for c in np.unique(dataset.labels)]
    if len(present) < 2:
        raise ClassifyError(
            f"'{name}' has images of one class only ('{present[0]}'); a classifier needs at least "
            "two class folders, each with its own images."
        )
    bad = nonfinite_rows(dataset.features)
    if len(bad):
        raise ClassifyError(
            f"'{name}' has {len(bad)} feature rows with NaN or infinite values (first: "
            f"'{dataset.paths[bad[0]]}'); the store is damaged, delete it and run "
            "extract-features again."
        )


def nonfinite_rows(features: np.ndarray, block: int = 4096) -> np.ndarray:
    """Indices of rows holding NaN or +/-inf, checked a block at a time to keep memory flat."""
    bad = [start + np.flatnonzero(~np.isfinite(features[start:start + block]).all(axis=1))
           for start in range(0, len(features), block)]
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)
