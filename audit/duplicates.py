"""Exact copies with conflicting labels, near-duplicate clusters and leakage across splits.

All of it reads the one neighbour pass (`Neighbours`) and the sha256 of each file; no
pixel is decoded. Rows with one sha256 are byte-identical files. Two rows are near
duplicates when their cosine distance is at most the store's near-duplicate threshold
(`Thresholds`); near-duplicate clusters are the connected components of those pairs and
of same-sha256 pairs (scipy.sparse.csgraph), so a chain of re-encodes is one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from headstart.audit.neighbours import Neighbours


def conflict_groups(hashes: list[str], labels: np.ndarray) -> list[np.ndarray]:
    """Groups of rows with one sha256 and more than one label: each an int64 array of rows.

    Sorted by size (largest first), then by first row.
    """
    by_hash: dict[str, list[int]] = {}
    for row, digest in enumerate(hashes):
        by_hash.setdefault(digest, []).append(row)
    groups = [np.array(rows, dtype=np.int64) for rows in by_hash.values()
              if len(rows) > 1 and len(set(labels[rows].tolist())) > 1]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))


def hash_ids(hashes: list[str]) -> np.ndarray:
    """int64, shape (n,): one id per distinct sha256 (the first row holding it)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(h, row) for row, h in enumerate(hashes)], dtype=np.int64)


def near_pairs(neighbours: Neighbours, max_distance: float) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """(rows i, rows j, cosine) of neighbour pairs with i < j and distance <= max_distance.

    Each pair once, ordered by cosine, highest first. Pairs beyond the k nearest of both
    rows are not seen (k is the audit's -k).
    """
    rows = np.repeat(np.arange(len(neighbours.indices)), neighbours.k)
    cols = neighbours.indices.ravel()
    cos = neighbours.cosine.ravel()
    keep = (cols >= 0) & (1.0 - cos <= max_distance)
    i, j, cos = rows[keep], cols[keep], cos[keep]
    i, j = np.minimum(i, j), np.maximum(i, j)
    key = np.unique(np.stack([i, j], axis=1), axis=0, return_index=True)[1]
    i, j, cos = i[key], j[key], cos[key]
    order = np.lexsort((j, i, -cos))
    return i[order], j[order], cos[order]


def clusters(n: int, hashes: list[str], pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
             ) -> np.ndarray:
    """int64, shape (n,): cluster id of each row (its smallest row index).

    Rows sharing a sha256 or joined by a near-duplicate pair, transitively, share an id.
    """
    i, j, _ = pairs
    same = hash_ids(hashes)
    rows = np.concatenate([i, np.arange(n)])
    cols = np.concatenate([j, same])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]


@dataclass(frozen=True)
class Leakage:
    """Near-duplicate pairs whose two rows are in different splits.

    i, j: int64 rows (i < j); cosine: float32; ordered by cosine, highest first.
    leaky_test: int64 rows of the test split that have a near duplicate in train or
    validation (each once, sorted).
    """

    i: np.ndarray
    j: np.ndarray
    cosine: np.ndarray
    leaky_test: np.ndarray


def cross_split(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], assignment: np.ndarray,
                test: int = 2) -> Leakage:
    """The pairs of `pairs` that cross splits (`assignment`: int8 split of each row)."""
    i, j, cos = pairs
    crossing = assignment[i] != assignment[j]
    i, j, cos = i[crossing], j[crossing], cos[crossing]
    ends = np.concatenate([i, j])
    other = np.concatenate([j, i])
    leaky = np.unique(ends[(assignment[ends] == test) & (assignment[other] != test)])
    return Leakage(i, j, cos, leaky.astype(np.int64))


def cluster_groups(cluster: np.ndarray, min_size: int = 2) -> list[np.ndarray]:
    """Rows of each cluster with at least `min_size` rows, largest first, then by first row."""
    order = np.argsort(cluster, kind="stable")
    ids, starts, counts = np.unique(cluster[order], return_index=True, return_counts=True)
    groups = [order[s:s + c] for s, c in zip(starts, counts, strict=True) if c >= min_size]
    return sorted(groups, key=lambda g: (-len(g), int(g[0])))
