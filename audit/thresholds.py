"""Per-store distance thresholds, derived from the store's own nearest-neighbour distances.

A fixed cosine cut does not transfer between backbones, layers or data sets (on fc2 rows
a fixed cosine of 0.95 catches only about a third of JPEG quality-40 copies), so the
near-duplicate threshold scales with how far apart this store's distinct images
typically are: the median cosine distance from each sha256-unique image to its nearest
neighbour with other bytes. Byte-identical copies are left out of that median, since
they would pull it towards zero.

near duplicate: cosine distance <= NEAR_DUPLICATE_FACTOR x that median. The factor 0.13
is cleanlab's (Datalab's NearDuplicateIssueManager, `threshold=0.13` times the median
nearest-neighbour distance; cleanlab 2.x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.audit.duplicates import hash_ids
from headstart.audit.neighbours import Neighbours

NEAR_DUPLICATE_FACTOR = 0.13
SOURCE = ("cleanlab Datalab NearDuplicateIssueManager (threshold=0.13 x median nearest-"
          "neighbour distance)")


@dataclass(frozen=True)
class Thresholds:
    """Cosine distances (1 - cosine); `near_duplicate` = factor x `median_nn_distance`."""

    median_nn_distance: float
    near_duplicate: float
    n_unique: int  # sha256-unique rows the median was taken over
    factor: float = NEAR_DUPLICATE_FACTOR

    @property
    def near_duplicate_cosine(self) -> float:
        return 1.0 - self.near_duplicate

    def record(self) -> dict:
        """How each threshold was derived, for audit.json and the report."""
        return {
            "median_nn_distance": {
                "value": self.median_nn_distance,
                "derived": f"median cosine distance from each of the {self.n_unique:,} "
                           "sha256-unique images to its nearest neighbour with other bytes"},
            "near_duplicate": {
                "value": self.near_duplicate, "cosine": self.near_duplicate_cosine,
                "derived": f"{self.factor:g} x median nearest-neighbour distance",
                "source": SOURCE},
        }


def nearest_other_bytes(neighbours: Neighbours, hashes: list[str]) -> np.ndarray:
    """float32, shape (n,): cosine distance to the nearest neighbour with another sha256.

    NaN where all k neighbours share the row's bytes.
    """
    ids = hash_ids(hashes)
    idx = neighbours.indices
    other = (idx >= 0) & (ids[np.where(idx >= 0, idx, 0)] != ids[:, None])
    first = np.argmax(other, axis=1)
    found = other[np.arange(len(idx)), first]
    distance = neighbours.distance[np.arange(len(idx)), first]
    return np.where(found, distance, np.nan).astype(np.float32)


def derive_thresholds(neighbours: Neighbours, hashes: list[str],
                      factor: float = NEAR_DUPLICATE_FACTOR) -> Thresholds:
    """The store's thresholds from its neighbours; see the module docstring."""
    ids = hash_ids(hashes)
    unique = ids == np.arange(len(ids))
    distances = nearest_other_bytes(neighbours, hashes)[unique]
    distances = distances[np.isfinite(distances)]
    median = float(np.median(distances)) if len(distances) else 0.0
    median = max(median, 1e-12)  # as cleanlab: never a zero threshold
    return Thresholds(median, factor * median, int(len(distances)), factor)
