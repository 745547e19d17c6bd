"""Same-bytes conflicts, thresholds from the store, near-duplicate clusters, leakage."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.audit import duplicates, thresholds
from headstart.audit.neighbours import Neighbours, exact_neighbours, unit_rows


def test_conflicts_are_groups_of_one_sha256_under_several_labels():
    hashes = ["a", "b", "a", "c", "b", "a", "d", "d"]
    labels = np.array([0, 1, 1, 0, 1, 2, 0, 0])
    groups = duplicates.conflict_groups(hashes, labels)
    assert [g.tolist() for g in groups] == [[0, 2, 5]]  # "b" and "d" agree on their label


def test_copy_threshold_is_0_5_of_the_median_over_sha256_unique_rows():
    # Rows 0 and 1 share bytes; their mutual cosine of 1 must not enter the median.
    n = 6
    indices = np.array([[1, 2], [0, 2], [3, 0], [2, 4], [5, 3], [4, 3]])
    cosine = np.array([[1.0, 0.8], [1.0, 0.8], [0.7, 0.8], [0.7, 0.6], [0.9, 0.6],
                       [0.9, 0.5]], dtype=np.float32)
    hashes = ["x", "x", "c", "d", "e", "f"]
    found = Neighbours(indices, cosine, "test")
    limits = thresholds.derive_thresholds(found, hashes)
    # sha256-unique rows 0, 2, 3, 4, 5; nearest other bytes: 0.2, 0.3, 0.3, 0.1, 0.1
    assert limits.n_unique == n - 1
    assert limits.median_nn_distance == pytest.approx(0.2, abs=1e-6)
    assert limits.copy == pytest.approx(0.5 * 0.2, abs=1e-7)
    record = limits.record()
    assert set(record) == {"median_nn_distance", "copy"}, "one threshold for every pair"
    assert "measured" in record["copy"]["source"]
    assert "sha256-unique" in record["median_nn_distance"]["derived"]


def chain_rows() -> np.ndarray:
    """Rows 0-1-2 a chain of close copies, 3 an exact copy of 4, the rest spread out."""
    rng = np.random.default_rng(0)
    X = rng.random((40, 16)).astype(np.float32)
    X[1] = X[0] + 0.01
    X[2] = X[1] + 0.01
    X[3] = X[4]
    return X


def test_clusters_join_chains_of_close_pairs_and_same_bytes():
    X = chain_rows()
    hashes = [f"{i:02d}" for i in range(40)]
    hashes[7] = hashes[30]  # same bytes, features made different on purpose
    found = exact_neighbours(unit_rows(X), k=5)
    pairs = duplicates.near_pairs(found, max_distance=1e-3)
    assert {(int(i), int(j)) for i, j in zip(pairs[0], pairs[1], strict=True)} == {
        (0, 1), (1, 2), (0, 2), (3, 4)}
    assert (np.diff(pairs[2]) <= 0).all()
    cluster = duplicates.clusters(40, hashes, pairs)
    assert cluster[0] == cluster[1] == cluster[2] == 0
    assert cluster[3] == cluster[4] == 3 and cluster[7] == cluster[30] == 7
    assert len(np.unique(cluster)) == 40 - 2 - 1 - 1
    groups = duplicates.cluster_groups(cluster)
    assert [g.tolist() for g in groups] == [[0, 1, 2], [3, 4], [7, 30]]


def test_cross_split_pairs_and_the_test_images_they_leak():
    X = chain_rows()
    found = exact_neighbours(unit_rows(X), k=5)
    pairs = duplicates.near_pairs(found, max_distance=1e-3)
    assignment = np.zeros(40, dtype=np.int8)
    assignment[[2, 4]] = 2  # test
    assignment[1] = 1  # validation
    leak = duplicates.cross_split(pairs, assignment)
    assert {(int(i), int(j)) for i, j in zip(leak.i, leak.j, strict=True)} == {
        (0, 1), (1, 2), (0, 2), (3, 4)}
    assert leak.leaky_test.tolist() == [2, 4]
