"""Outliers: images that belong to no class (a text card, a blank frame, a landscape).

Two cosine distances, each divided by its median over the store so that they are in
the same unit and add up:

- to the nearest class centroid (the unit-length mean of each class's unit rows): large
  for an image unlike every class;
- to the k-th nearest *typical* neighbour (the kNN-distance outlier score of Ramaswamy,
  Rastogi and Shim, SIGMOD 2000; k is the audit's -k, 10): large for an image unlike
  every image that lies near a class. Typical rows are those whose centroid distance is
  within Tukey's fence of all centroid distances. Taking the k-th rather than the
  nearest neighbour reaches past any group of fewer than k near-identical images, and
  leaving atypical rows out of the neighbours keeps a larger group of blank frames or
  text cards from vouching for one another: their neighbours are then the photos.

Neither distance alone is enough: distance to the nearest neighbours ranks blank frames
and text cards as the most typical images, because they are close copies of one another.
The choice was measured (bench/audit.py) on a calibration set, 10 non-pet images added
to pets-1k rows and disjoint from the planted ones of the quality figures, and on the
planted corpus, whose 20 non-pet images (more than k) are one another's nearest
neighbours: with the mean distance to the 5 nearest neighbours instead of the k-th,
text cards ranked as low as 406th of 1,060 on the calibration set; with the k-th
neighbour among all rows, all non-pet images ranked in the top 16 there but one text
card of the corpus 145th of 1,070; with the k-th typical neighbour, the worst ranks are
11th of 1,060 and 33rd of 1,070. A row is flagged when its score lies above Tukey's
fence, Q3 + 1.5 x (Q3 - Q1) (Tukey, "Exploratory Data Analysis", 1977), which needs no
assumed distribution; on the calibration set the far-out fence (3 x) flagged none of the
10 non-pet images, the 1.5 x fence all 10 and 6 photos besides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.audit.neighbours import Neighbours

FENCE = 1.5  # Tukey's fence: Q3 + FENCE * IQR


def centroid_distance(unit: np.ndarray, labels: np.ndarray, n_classes: int,
                      block: int = 8192) -> np.ndarray:
    """float32, shape (n,): cosine distance of each unit row to the nearest class centroid."""
    centroids = np.zeros((n_classes, unit.shape[1]), dtype=np.float64)
    np.add.at(centroids, labels, unit)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids = (centroids / np.where(norms > 0, norms, 1)).astype(np.float32)
    out = np.empty(len(unit), dtype=np.float32)
    for start in range(0, len(unit), block):
        out[start:start + block] = 1.0 - (unit[start:start + block] @ centroids.T).max(axis=1)
    return out


def tukey_fence(values: np.ndarray, fence: float = FENCE) -> float:
    """Q3 + fence x (Q3 - Q1) of `values` (Tukey's fence)."""
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 + fence * (q3 - q1))


def typical_rows(centroid: np.ndarray, fence: float = FENCE) -> np.ndarray:
    """bool, shape (n,): rows whose centroid distance lies within Tukey's fence of all."""
    return centroid <= tukey_fence(centroid, fence)


def _kth(indices: np.ndarray, distance: np.ndarray) -> np.ndarray:
    return np.where(indices >= 0, distance, -np.inf).max(axis=1).astype(np.float32)


def neighbour_distance(neighbours: Neighbours, typical: np.ndarray | None = None
                       ) -> np.ndarray:
    """float32, shape (n,): cosine distance to the k-th nearest (typical) neighbour.

    Without `typical`, the farthest of the k neighbours found. With `typical` (bool,
    (n,), see `typical_rows`), the k-th nearest among typical rows: the found neighbours
    already are that for a row with no atypical row among them; every other row (the
    atypical ones and their neighbours) is searched again with `neighbours.among`. When
    k or fewer rows are typical (stores of a few dozen rows), all rows count.
    Raises ValueError for neighbours without `among` (see `Neighbours.released`).
    """
    distance = _kth(neighbours.indices, neighbours.distance)
    if typical is None or typical.all() or typical.sum() <= neighbours.k:
        return distance
    if neighbours.among is None:
        raise ValueError("neighbour_distance(typical=...) needs the neighbours' search "
                         "(`among`), which released() dropped; pass it before releasing.")
    found = neighbours.indices
    near_atypical = ((found >= 0) & ~typical[np.maximum(found, 0)]).any(axis=1)
    again = np.flatnonzero(~typical | near_atypical)
    indices, cosine = neighbours.among(again, typical, neighbours.k)
    distance[again] = _kth(indices, 1.0 - cosine)
    return distance


@dataclass(frozen=True)
class Outliers:
    """score: float32 (n,), higher is stranger; flagged: int64 rows above the fence, by score."""

    score: np.ndarray
    centroid: np.ndarray  # float32 (n,), cosine distance to the nearest class centroid
    neighbour: np.ndarray  # float32 (n,), cosine distance to the k-th nearest typical neighbour
    fence: float
    flagged: np.ndarray


def outlier_scores(centroid: np.ndarray, neighbour: np.ndarray, fence: float = FENCE
                   ) -> Outliers:
    """Combine the two distances (each over its median) and flag scores above Tukey's fence."""
    score = (centroid / max(float(np.median(centroid)), 1e-12)
             + neighbour / max(float(np.median(neighbour)), 1e-12)).astype(np.float32)
    cut = tukey_fence(score, fence)
    flagged = np.flatnonzero(score > cut)
    flagged = flagged[np.argsort(-score[flagged], kind="stable")]
    return Outliers(score, centroid, neighbour, cut, flagged)
