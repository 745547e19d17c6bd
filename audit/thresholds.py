"""Per-store distance thresholds, derived from the store's own nearest-neighbour distances.

A fixed cosine cut does not transfer between backbones, layers or data sets (on fc2 rows
a fixed cosine of 0.95 catches only about a third of JPEG quality-40 copies), so both
thresholds scale with how far apart this store's distinct images typically are: the
median cosine distance from each sha256-unique image to its nearest neighbour with other
bytes. Byte-identical copies are left out of that median, since they would pull it
towards zero.

- copy: distance <= 0.5 x median, for every pair of images, within a split (reported
  as `duplicate`) and across splits (`leak`, where a missed copy inflates test
  accuracy). The factor was measured: on pets-1k fc2 rows, the 40 JPEG quality-40
  re-encodes and resized copies (x0.6-0.8 or x1.3-1.5) of 20 photos lie at up to 0.31 x
  the median from their originals; 0.5 is 1.5 x the largest, rounded up to 0.05
  (bench/audit.py, calibration set, disjoint from the planted copies the quality figures
  are measured on). Its clusters also group the folds of the label check, so no copy of
  an image helps to judge it.

cleanlab's near-duplicate rule (Datalab's NearDuplicateIssueManager, 0.13 x the median
nearest-neighbour distance, cleanlab 2.x) was used within a split before; it catches
only 4 of those 20 re-encodes (bench/audit.py), so a copy counted as one only when it
crossed splits. One threshold now defines a copy wherever the two files sit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headstart.audit.duplicates import hash_ids
from headstart.audit.neighbours import Neighbours

COPY_FACTOR = 0.5
COPY_SOURCE = ("measured: 1.5 x the largest distance/median ratio (0.31) of 40 JPEG "
               "quality-40 re-encodes and resized copies of 20 pets-1k photos, rounded up "
               "to 0.05 (bench/audit.py calibration set)")


@dataclass(frozen=True)
class Thresholds:
    """Cosine distances (1 - cosine), each a factor times `median_nn_distance`."""

    median_nn_distance: float
    n_unique: int  # sha256-unique rows the median was taken over
    copy_factor: float = COPY_FACTOR

    @property
    def copy(self) -> float:
        """Distance at or below which two images are copies, in one split or in two."""
        return self.copy_factor * self.median_nn_distance

    def record(self) -> dict:
        """How each threshold was derived, for audit.json and the report."""
        return {
            "median_nn_distance": {
                "value": self.median_nn_distance,
                "derived": f"median cosine distance from each of the {self.n_unique:,} "
                           "sha256-unique images to its nearest neighbour with other bytes"},
            "copy": {
                "value": self.copy, "cosine": 1 - self.copy,
                "derived": f"{self.copy_factor:g} x median nearest-neighbour distance",
                "source": COPY_SOURCE},
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


def derive_thresholds(neighbours: Neighbours, hashes: list[str]) -> Thresholds:
    """The store's thresholds from its neighbours; see the module docstring."""
    ids = hash_ids(hashes)
    unique = ids == np.arange(len(ids))
    distances = nearest_other_bytes(neighbours, hashes)[unique]
    distances = distances[np.isfinite(distances)]
    median = float(np.median(distances)) if len(distances) else 0.0
    return Thresholds(max(median, 1e-12), int(len(distances)))  # as cleanlab: never zero
