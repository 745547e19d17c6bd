"""The report's 2-D map: which rows it shows and the projection (the page: test_audit_report)."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.audit import embedding_map


def test_a_large_store_shows_a_seeded_sample_and_every_flagged_row():
    must = np.array([5, 17, 9_999, 17])
    random, shown = embedding_map.sample_rows(10_000, must, max_rows=500, seed=3)
    assert len(random) == 500 - 3 and np.all(np.diff(random) > 0)
    assert set(must.tolist()) <= set(shown.tolist()) and len(shown) <= 500
    again, _ = embedding_map.sample_rows(10_000, must, max_rows=500, seed=3)
    np.testing.assert_array_equal(random, again)
    many = np.arange(0, 10_000, 7)  # more flagged rows than half the map
    random, shown = embedding_map.sample_rows(10_000, many, max_rows=500, seed=3)
    assert len(shown) <= 500 and len(np.intersect1d(shown, many)) >= 250
    _, shown = embedding_map.sample_rows(400, must[:2], max_rows=500)
    np.testing.assert_array_equal(shown, np.arange(400))


def test_pca_map_keeps_two_separated_classes_apart_and_ignores_row_length():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2, 64)) * 2
    labels = np.arange(600) % 2
    X = np.maximum(centres[labels] + rng.standard_normal((600, 64)), 0).astype(np.float32)
    m = embedding_map.project(X, np.array([1, 2]), max_rows=300, seed=0)
    assert m.method == "pca" and m.xy.shape == (len(m.rows), 2) and m.xy.dtype == np.float32
    assert embedding_map.neighbour_agreement(m.xy, labels[m.rows]) > 0.95
    scaled = embedding_map.project(X * rng.uniform(0.5, 3, (600, 1)).astype(np.float32),
                                   np.array([1, 2]), max_rows=300, seed=0)
    np.testing.assert_allclose(np.abs(scaled.xy), np.abs(m.xy), atol=1e-4)
    shuffled = embedding_map.neighbour_agreement(m.xy, rng.permutation(labels[m.rows]))
    assert shuffled < 0.7
    with pytest.raises(ValueError, match="method must be one of"):
        embedding_map.project(X, method="umap")
