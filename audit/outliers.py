"""Outliers: images that belong to no class (a text card, a blank frame, a landscape).

Two distances, both cosine, both divided by their median over the store so that they
are in the same unit and add up:

- to the nearest class centroid (the unit-length mean of each class's unit rows): large
  for an image unlike every class;
- to the nearest neighbours that are not near duplicates of the row (the mean over up to
  NEIGHBOURS of them): large for an image unlike every other image.

Neither alone is enough. Neighbour distance alone ranks blank frames and text cards as
the most typical images, because they are near copies of one another; leaving near
duplicates out and adding the centroid distance moves them to the top. A row is flagged
when its score lies above Tukey's far-out fence, Q3 + 3 * (Q3 - Q1) (Tukey, "Exploratory
Data Analysis", 1977), a fence that needs no assumed distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.audit.neighbours import Neighbours

NEIGHBOURS = 5  # non-duplicate neighbours averaged for the neighbour distance
FENCE = 3.0  # Tukey's far-out fence: Q3 + FENCE * IQR


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


def neighbour_distance(neighbours: Neighbours, cluster: np.ndarray,
                       near_duplicate: float, count: int = NEIGHBOURS) -> np.ndarray:
    """float32, shape (n,): mean cosine distance to the nearest `count` non-duplicate neighbours.

    A neighbour is a duplicate when it is within `near_duplicate` or in the row's
    near-duplicate cluster. A row whose k neighbours are all duplicates gets the distance
    of its farthest one (a lower bound).
    """
    idx, dist = neighbours.indices, neighbours.distance
    valid = idx >= 0
    duplicate = (dist <= near_duplicate) | (cluster[np.where(valid, idx, 0)] == cluster[:, None])
    usable = valid & ~duplicate
    rank = np.cumsum(usable, axis=1)
    take = usable & (rank <= count)
    n_taken = take.sum(axis=1)
    total = np.where(take, dist, 0).sum(axis=1)
    farthest = np.where(valid, dist, -np.inf).max(axis=1)
    return np.where(n_taken > 0, total / np.maximum(n_taken, 1), farthest).astype(np.float32)


@dataclass(frozen=True)
class Outliers:
    """score: float32 (n,), higher is stranger; flagged: int64 rows above the fence, by score."""

    score: np.ndarray
    centroid: np.ndarray  # float32 (n,), cosine distance to the nearest class centroid
    neighbour: np.ndarray  # float32 (n,), to the nearest non-duplicate neighbours
    fence: float
    flagged: np.ndarray


def outlier_scores(centroid: np.ndarray, neighbour: np.ndarray, fence: float = FENCE
                   ) -> Outliers:
    """Combine the two distances (each over its median) and flag scores above Tukey's fence."""
    score = (centroid / max(float(np.median(centroid)), 1e-12)
             + neighbour / max(float(np.median(neighbour)), 1e-12)).astype(np.float32)
    q1, q3 = np.percentile(score, [25, 75])
    cut = float(q3 + fence * (q3 - q1))
    flagged = np.flatnonzero(score > cut)
    flagged = flagged[np.argsort(-score[flagged], kind="stable")]
    return Outliers(score, centroid, neighbour, cut, flagged)
