"""Synthetic feature stores for the classify tests: written with h5py, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from headstart.features import Identity, write_store
from sklearn.datasets import make_classification

IDENTITY = Identity("VGG16", "fc2", "none (seed 0)", 224, "bilinear", "vgg16.preprocess_input",
                    "float32")


def make_store(path: Path, X: np.ndarray, y: np.ndarray, *, classes: list[str] | None = None,
               identity: Identity = IDENTITY, attrs: dict | None = None,
               first_hash: int = 0) -> Path:
    """A complete store: row i is image f"{class}/{i:05d}.jpg" with content hash first_hash + i."""
    classes = classes or [f"class{c}" for c in range(int(y.max()) + 1)]
    paths = [f"{classes[label]}/{i:05d}.jpg" for i, label in enumerate(y)]
    hashes = ["%064x" % (first_hash + i) for i in range(len(y))]
    return write_store(path, features=X, paths=paths, hashes=hashes, classes=classes,
                       identity=identity, attrs={"complete": True, "seed": 0, **(attrs or {})})


def separable(n: int = 400, dim: int = 32, n_classes: int = 2, seed: int = 0):
    """Well-separated classes: any sound head reaches ~100% test accuracy."""
    X, y = make_classification(n_samples=n, n_features=dim, n_informative=min(dim, 8),
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=4.0, random_state=seed)
    return X.astype(np.float32), y


def random_labels(n: int = 1000, dim: int = 64, seed: int = 0):
    """fc2-like rows (non-negative, about half zeros) whose labels carry no information."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, dim), dtype=np.float32), 0)
    return X, rng.integers(0, 2, n)
