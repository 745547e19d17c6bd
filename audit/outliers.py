"""Outliers: images that belong to no class (a text card, a blank frame, a landscape).

Two cosine distances, each divided by its median over the store so that they are in
the same unit and add up:

- to the nearest class centroid (the unit-length mean of each class's unit rows): large
  for an image unlike every class;
- to the k-th nearest neighbour (the kNN-distance outlier score of Ramaswamy, Rastogi
  and Shim, SIGMOD 2000; k is the audit's -k, 10): large for an image unlike every other
  image. Taking the k-th rather than the nearest neighbours reaches past any group of
  fewer than k near-identical images, so a handful of blank frames or text cards cannot
  vouch for one another.

Neither alone is enough: distance to the nearest neighbours ranks blank frames and text
cards as the most typical images, because they are close copies of one another. The
choice was measured on a calibration set (bench/audit.py: 10 non-pet images added to
pets-1k rows, disjoint from the planted ones of the quality figures): with the mean
distance to the 5 nearest neighbours instead of the k-th, text cards ranked as low as
406th of 1,060 (and 973rd without the centroid term); with the k-th, all blank frames
and text cards ranked in the top 16. A row is flagged when its score lies above Tukey's fence,
Q3 + 1.5 x (Q3 - Q1) (Tukey, "Exploratory Data Analysis", 1977), which needs no assumed
distribution; on the same calibration set the far-out fence (3 x) flagged none of the
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


def neighbour_distance(neighbours: Neighbours) -> np.ndarray:
    """float32, shape (n,): cosine distance to the k-th (the farthest found) neighbour."""
    distance = np.where(neighbours.indices >= 0, neighbours.distance, -np.inf)
    return distance.max(axis=1).astype(np.float32)


@dataclass(frozen=True)
class Outliers:
    """score: float32 (n,), higher is stranger; flagged: int64 rows above the fence, by score."""

    score: np.ndarray
    centroid: np.ndarray  # float32 (n,), cosine distance to the nearest class centroid
    neighbour: np.ndarray  # float32 (n,), cosine distance to the k-th nearest neighbour
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
