"""Outlier scores: blank frames rank first only when centroid distance is added."""

from __future__ import annotations

import numpy as np

from headstart.audit import outliers
from headstart.audit.neighbours import exact_neighbours, unit_rows


def pets_and_blanks(seed: int = 0):
    """Two classes of spread-out rows and 6 'blank frames': near copies of one odd row.

    Like fc2 rows of blank images, the blanks sit very close to each other and far
    from both classes.
    """
    rng = np.random.default_rng(seed)
    dim = 64
    centres = rng.standard_normal((2, dim)) * 3
    labels = rng.integers(0, 2, 400)
    X = centres[labels] + rng.standard_normal((400, dim)) * 2.0
    blank = rng.standard_normal(dim) * 3
    blanks = blank + rng.standard_normal((6, dim)) * 0.05
    X = np.maximum(np.vstack([X, blanks]), 0).astype(np.float32)
    return X, np.concatenate([labels, [0, 1, 0, 1, 0, 1]]), np.arange(400, 406)


def scores(X, labels, k=10):
    unit = unit_rows(X)
    found = exact_neighbours(unit, k=k)
    centroid = outliers.centroid_distance(unit, labels, 2)
    neighbour = outliers.neighbour_distance(found)
    np.testing.assert_allclose(neighbour, found.distance[:, -1])
    return found, outliers.outlier_scores(centroid, neighbour)


def test_blank_frames_rank_first_and_are_flagged():
    X, labels, blanks = pets_and_blanks()
    found, result = scores(X, labels)
    top = np.argsort(-result.score)[:len(blanks)]
    assert set(top.tolist()) == set(blanks.tolist())
    assert set(blanks.tolist()) <= set(result.flagged.tolist())
    assert len(result.flagged) < 20  # the fence flags the odd ones, not a fixed share
    assert (np.diff(result.score[result.flagged]) <= 0).all()
    assert result.fence > np.percentile(result.score, 75)


def test_plain_neighbour_distance_ranks_blank_frames_as_most_typical():
    """Why the score takes the k-th neighbour, past the group, and adds the centroid."""
    X, labels, blanks = pets_and_blanks()
    found, _ = scores(X, labels)
    plain = found.distance[:, :5].mean(axis=1)
    assert set(np.argsort(plain)[:len(blanks)].tolist()) == set(blanks.tolist())


def test_centroid_distance_matches_a_direct_computation():
    X, labels, _ = pets_and_blanks()
    unit = unit_rows(X)
    centroids = np.stack([unit[labels == c].mean(axis=0) for c in (0, 1)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    expected = 1 - (unit @ centroids.T).max(axis=1)
    np.testing.assert_allclose(outliers.centroid_distance(unit, labels, 2, block=50), expected,
                               atol=1e-6)
