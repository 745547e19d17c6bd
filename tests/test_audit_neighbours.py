"""The audit's one neighbour pass: exact against scikit-learn, float16 blocks, faiss recall."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from headstart.audit import neighbours
from headstart.errors import MissingExtraError


def clustered(n: int, dim: int, centres: int = 20, seed: int = 0) -> np.ndarray:
    """fc2-like rows: non-negative, in clusters (as image features are)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)) * 2
    rows = means[rng.integers(0, centres, n)] + rng.standard_normal((n, dim))
    return np.maximum(rows, 0).astype(np.float32)


def reference(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's brute-force cosine neighbours, without each row itself."""
    model = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X)
    distance, index = model.kneighbors(X)
    keep = index != np.arange(len(X))[:, None]
    index = np.array([row[mask][:k] for row, mask in zip(index, keep, strict=True)])
    distance = np.array([row[mask][:k] for row, mask in zip(distance, keep, strict=True)])
    return index, 1 - distance


def test_exact_pass_matches_scikit_learn_across_many_blocks(monkeypatch):
    X = clustered(700, 48)
    monkeypatch.setattr(neighbours, "BLOCK_BYTES", 1)  # the smallest block: 64 rows, 11 blocks
    found = neighbours.exact_neighbours(neighbours.unit_rows(X), k=7)
    index, cosine = reference(X, 7)
    np.testing.assert_allclose(found.cosine, cosine, atol=2e-6)
    # Same neighbours wherever the similarities are not tied at float precision.
    distinct = np.abs(np.diff(cosine, axis=1)).min(axis=1) > 1e-5
    assert distinct.mean() > 0.9
    np.testing.assert_array_equal(found.indices[distinct], index[distinct])
    assert found.indices.dtype == np.int64 and found.cosine.dtype == np.float32


def test_a_row_is_never_its_own_neighbour_and_duplicates_come_first():
    X = clustered(100, 16)
    X[10] = X[20]
    found = neighbours.exact_neighbours(neighbours.unit_rows(X), k=5)
    assert not (found.indices == np.arange(100)[:, None]).any()
    assert found.indices[10, 0] == 20 and found.indices[20, 0] == 10
    assert found.cosine[10, 0] == pytest.approx(1.0, abs=1e-6)
    assert (np.diff(found.cosine, axis=1) <= 0).all()


def test_fewer_rows_than_k_leaves_no_invented_neighbours():
    found = neighbours.find_neighbours(neighbours.unit_rows(clustered(4, 8)), k=10)
    assert found.k == 3 and (found.indices >= 0).all()


def test_float16_store_rows_are_converted_block_by_block(tmp_path):
    X = clustered(300, 32)
    with h5py.File(tmp_path / "half.h5", "w") as f:
        f.create_dataset("features", data=X.astype(np.float16), chunks=(64, 32))
    with h5py.File(tmp_path / "half.h5", "r") as f:
        unit = neighbours.unit_rows(f["features"], block=100)
    expected = X.astype(np.float16).astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, expected, rtol=1e-6)


def test_faiss_candidates_rescored_exactly_find_the_exact_neighbours():
    X = clustered(3000, 64, centres=40)
    unit = neighbours.unit_rows(X)
    exact = neighbours.exact_neighbours(unit, k=10)
    approx = neighbours.find_neighbours(unit, k=10, method="faiss")
    recall = np.mean([len(set(a) & set(e)) / 10
                      for a, e in zip(approx.indices, exact.indices, strict=True)])
    assert recall >= 0.95, recall
    assert "faiss" in approx.method
    # Every reported cosine is the exact one of that pair.
    rows = np.repeat(np.arange(3000), 10)
    np.testing.assert_allclose(approx.cosine.ravel(),
                               np.einsum("ij,ij->i", unit[rows], unit[approx.indices.ravel()]),
                               atol=1e-5)


def test_search_among_allowed_rows_matches_brute_force_for_both_methods(monkeypatch):
    X = clustered(3000, 64, centres=40)
    unit = neighbours.unit_rows(X)
    allowed = np.random.default_rng(1).random(3000) > 0.3
    rows = np.arange(0, 3000, 7)
    cosine = unit[rows] @ unit.T
    cosine[:, ~allowed] = -np.inf
    cosine[np.arange(len(rows)), rows] = -np.inf
    expected = np.argsort(-cosine, axis=1)[:, :10]
    exact = neighbours.exact_neighbours(unit, k=10)
    idx, cos = exact.among(rows, allowed, 10)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(cos, np.take_along_axis(cosine, expected, axis=1), atol=1e-5)
    approx = neighbours.find_neighbours(unit, k=10, method="faiss")
    idx, cos = approx.among(rows, allowed, 10)
    assert allowed[idx].all() and not (idx == rows[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(idx, expected, strict=True)])
    assert recall >= 0.95, recall
    assert exact.released().among is None and approx.released().indices is approx.indices
    # Allowed rows that the probed lists barely hold (20 rows, far from the queries):
    # rows the index finds too few for are searched exactly, so every answer is whole.
    few = np.zeros(3000, dtype=bool)
    few[np.argsort(unit @ unit[0])[:20]] = True
    exact_rows = []
    real_exact = neighbours.exact_among
    monkeypatch.setattr(neighbours, "exact_among", lambda unit_, rows_, allowed, k:
                        exact_rows.append(len(rows_)) or real_exact(unit_, rows_, allowed, k))
    idx, cos = approx.among(rows[:50], few, 10)
    assert exact_rows and exact_rows[0] < 50  # only the short rows were searched exactly
    assert (idx >= 0).all() and few[idx].all()
    brute = unit[rows[:50]] @ unit.T
    brute[:, ~few] = -np.inf
    expected = np.argsort(-brute, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(idx, expected, strict=True)])
    assert recall >= 0.95, recall


def test_missing_faiss_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    unit = neighbours.unit_rows(clustered(50, 8))
    with pytest.raises(MissingExtraError, match=r'pip install "headstart\[faiss\]"'):
        neighbours.find_neighbours(unit, k=3, method="faiss")
    monkeypatch.setattr(neighbours, "EXACT_LIMIT", 10)
    with pytest.raises(MissingExtraError, match="--neighbours exact"):
        neighbours.find_neighbours(unit, k=3, method="auto")
    assert neighbours.find_neighbours(unit, k=3, method="exact").method.startswith("exact")
