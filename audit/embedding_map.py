"""A 2-D map of the store's rows, for the report: which rows, and where each one lies.

    from headstart.audit.embedding_map import project
    m = project(unit_rows, must_include=flagged_rows, max_rows=3000, seed=0)
    m.rows, m.xy        # int64 (m,) store rows; float32 (m, 2) coordinates

The map shows at most `max_rows` rows: a uniform random sample (seeded) of the store,
plus the rows in `must_include` (the flagged images, so each finding is on the map; up
to half of max_rows of them).
The projection is PCA of the unit-length rows to 2 components (scikit-learn's `PCA`,
randomized SVD), fitted on the random sample only and applied to every shown row, so a
handful of flagged rows cannot pull the axes towards themselves. t-SNE (scikit-learn's
`TSNE` on a 50-component PCA, the usual preprocessing from van der Maaten and Hinton,
JMLR 2008) is available as `method="tsne"`; measured on the planted pets corpus
(bench/audit.py, map section) it separates the classes better but takes tens of seconds
on 2 cores, which the audit's 90-second budget on 25,000 rows does not have; PCA takes
well under a second. Rendering is `headstart.audit.report`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from headstart.audit.neighbours import unit_rows

MAX_ROWS = 3000
MAP_METHODS = ("pca", "tsne")


@dataclass(frozen=True)
class EmbeddingMap:
    """rows: int64 (m,) store rows shown, sorted; xy: float32 (m, 2) coordinates, unitless.

    method: "pca" or "tsne"; explained: for PCA, the share of the variance of the sampled
    unit rows that each of the 2 axes explains (float, 0..1), else None; fitted_on: rows
    in the random sample the projection was fitted on; seconds: time to project.
    """

    rows: np.ndarray
    xy: np.ndarray
    method: str
    explained: tuple[float, float] | None
    fitted_on: int
    seconds: float

    def record(self) -> dict:
        """How the map was made, for audit.json."""
        return {"method": self.method, "rows_shown": int(len(self.rows)),
                "fitted_on_rows": self.fitted_on, "seconds": self.seconds,
                "explained_variance": list(self.explained) if self.explained else None}


def sample_rows(n: int, must_include: np.ndarray, max_rows: int = MAX_ROWS,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(random, shown): int64 sorted rows of a seeded uniform sample of range(n), and that
    sample together with `must_include` (all rows when n <= max_rows). shown holds at
    most max_rows rows: the must-include rows take up to half of them (a seeded random
    half of them where there are more), the sample the rest."""
    must = np.unique(np.asarray(must_include, dtype=np.int64))
    if n <= max_rows:
        everything = np.arange(n, dtype=np.int64)
        return everything, everything
    rng = np.random.default_rng(seed)
    if len(must) > max_rows // 2:
        must = np.sort(rng.choice(must, size=max_rows // 2, replace=False))
    room = max_rows - len(must)
    random = np.sort(rng.choice(n, size=room, replace=False)).astype(np.int64)
    return random, np.union1d(random, must)


def project(features: np.ndarray, must_include: np.ndarray | None = None, *,
            max_rows: int = MAX_ROWS, seed: int = 0, method: str = "pca") -> EmbeddingMap:
    """The map of the store's rows `features` (float (n, d)); see the module docstring.

    Only the sampled and must-include rows are read, each scaled to unit length (float32).
    Raises ValueError for a method outside MAP_METHODS.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}; received {method!r}.")
    start = time.perf_counter()
    must = np.empty(0, np.int64) if must_include is None else must_include
    random, shown = sample_rows(len(features), must, max_rows, seed)
    rows = unit_rows(np.asarray(features[shown]))
    fit = rows[np.searchsorted(shown, random)]
    explained = None
    if len(shown) < 3:  # too few to project: a line of points
        xy = np.zeros((len(shown), 2), dtype=np.float32)
        xy[:, 0] = np.arange(len(shown))
    elif method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="randomized", random_state=seed).fit(fit)
        xy = pca.transform(rows).astype(np.float32)
        explained = tuple(float(v) for v in pca.explained_variance_ratio_)
    else:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        reduced = PCA(n_components=min(50, *rows.shape), svd_solver="randomized",
                      random_state=seed).fit_transform(rows)
        xy = TSNE(n_components=2, perplexity=min(30.0, (len(rows) - 1) / 3), init="pca",
                  random_state=seed).fit_transform(reduced).astype(np.float32)
        random = shown
    return EmbeddingMap(shown, xy, method, explained, int(len(random)),
                        round(time.perf_counter() - start, 3))


def neighbour_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Share of points whose label is the majority of their k nearest points on the map
    (leave-one-out, Euclidean): how well the map keeps the classes apart (float, 0..1)."""
    from sklearn.neighbors import NearestNeighbors

    if len(xy) <= k:
        return float("nan")
    index = NearestNeighbors(n_neighbors=k + 1).fit(xy)
    near = index.kneighbors(xy, return_distance=False)[:, 1:]
    n_classes = int(labels.max()) + 1
    votes = np.stack([(labels[near] == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return float(np.mean(votes.argmax(axis=1) == labels))
