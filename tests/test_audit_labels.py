"""Confident learning: agreement with cleanlab's find_label_issues, grouped out-of-fold heads."""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from sklearn.datasets import make_blobs

from headstart.audit import labels


def noisy_probabilities(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with 10% flipped and probabilities of a fair but imperfect model."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n)
    given = truth.copy()
    flip = rng.random(n) < 0.10
    given[flip] = (truth[flip] + rng.integers(1, n_classes, flip.sum())) % n_classes
    logits = rng.normal(0, 1.0, (n, n_classes))
    logits[np.arange(n), truth] += rng.uniform(0.5, 4, n)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return given, proba


@pytest.mark.parametrize("n, n_classes, seed", [(400, 2, 0), (900, 3, 1), (1500, 7, 2),
                                                (60, 4, 3)])
def test_confident_learning_flags_exactly_what_cleanlab_flags(n, n_classes, seed):
    given, proba = noisy_probabilities(n, n_classes, seed)
    ours = labels.confident_learning(given, proba)
    reference = find_label_issues(given, proba, n_jobs=1)
    np.testing.assert_array_equal(ours, reference)
    assert ours.sum() > 0


def test_confident_joint_matches_cleanlab():
    from cleanlab.count import compute_confident_joint

    given, proba = noisy_probabilities(800, 3, 5)
    np.testing.assert_array_equal(labels.confident_joint(given, proba),
                                  compute_confident_joint(given, proba))


def planted(n: int = 600, flips: int = 30, seed: int = 0):
    """Two well-separated classes (no label noise of their own), `flips` labels flipped."""
    X, truth = make_blobs(n_samples=n, n_features=32, centers=2, cluster_std=4.0,
                          random_state=seed)
    given = truth.copy()
    flipped = np.random.default_rng(seed).choice(n, flips, replace=False)
    given[flipped] ^= 1
    return X, truth, given, flipped


def test_out_of_fold_confident_learning_finds_planted_flips():
    X, truth, given, flipped = planted()
    proba = labels.out_of_fold_probabilities(X, given, np.arange(len(given)), n_classes=2)
    flagged = np.flatnonzero(labels.confident_learning(given, proba))
    hits = np.intersect1d(flagged, flipped)
    # Confident learning is conservative: it flags as many as the calibrated confident
    # joint estimates (here 25 of the 30 the heads disagree with), all of them real.
    assert len(hits) / len(flipped) >= 0.8
    assert len(hits) / len(flagged) >= 0.95
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)  # float32 heads
    np.testing.assert_array_equal(find_label_issues(given, proba, n_jobs=1),
                                  labels.confident_learning(given, proba))


def test_grouped_folds_keep_a_mislabelled_copy_from_voting_for_its_label():
    """Ten images each stored twice under both labels: grouped, each copy is judged without
    its twin, so the wrong copy is flagged; the twin's label never reaches its own fold."""
    X, truth, given, _ = planted(flips=0)
    twins = np.arange(10)
    X = np.vstack([X, X[twins]])
    given = np.concatenate([given, 1 - given[twins]])
    groups = np.concatenate([np.arange(len(truth)), twins])  # a copy shares its twin's group
    proba = labels.out_of_fold_probabilities(X, given, groups, n_classes=2, folds=5)
    flagged = labels.confident_learning(given, proba)
    assert flagged[len(truth):].all()
    assert not flagged[twins].any()
    assert not flagged[10:len(truth)].any()


def test_neighbour_label_counts_ignore_missing_neighbours():
    found = np.array([[1, 2, -1], [0, 2, 3], [3, -1, -1], [0, 1, 2]])
    counts = labels.neighbour_label_counts(found, np.array([0, 1, 1, 0]), 2)
    np.testing.assert_array_equal(counts, [[0, 2], [2, 1], [1, 0], [1, 2]])
