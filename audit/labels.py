"""Likely label errors: confident learning on out-of-fold predicted probabilities.

Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021) estimates the joint distribution of given and
true labels from predicted probabilities that no model saw the row's label for, then
flags, in each given class, as many rows as that joint says are mislabelled: those whose
probability of the other class most exceeds that of their given class ("prune by noise
rate"). `confident_learning` follows cleanlab 2.x's `filter.find_label_issues` with its
defaults (filter_by="prune_by_noise_rate", frac_noise=1, min_examples_per_class=1); a
test checks that both flag the same rows.

The probabilities come from fit-head's logreg model (standardised features, multinomial
LogisticRegression with lbfgs) at one fixed C, fitted 5 times, each time on 4/5 of the
rows and predicting the remaining 1/5 ("out-of-fold"). The folds are grouped by sha256
and copy cluster (scikit-learn's StratifiedGroupKFold), so a copy of a row is never in
the training part when the row is predicted, and a mislabelled copy cannot vote for its
own wrong label. For speed the features are standardised once over all rows (no label
is used, so nothing leaks), in float32, and each fold starts from the previous fold's
coefficients (warm start): on 25,000 x 4096 rows, a fold takes about half the time of
a float64 fit from zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from headstart.audit.options import AUDIT_C, FOLDS

MAX_ITER = 1000  # as fit-head's logreg head
EPSILON = 1e-6  # cleanlab's FLOATING_POINT_COMPARISON


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, *,
                              n_classes: int, folds: int = FOLDS, C: float = AUDIT_C,
                              seed: int = 0,
                              progress: Callable[[int], None] | None = None) -> np.ndarray:
    """float64, shape (n, n_classes): each row's probabilities from a head that never saw it.

    features: float, shape (n, dim); labels: int, shape (n,); groups: int, shape (n,),
    rows sharing a group (sha256 or copy cluster) always share a fold.
    Stratified by label where every class has at least `folds` groups (StratifiedGroupKFold,
    shuffled with `seed`), else plain GroupKFold. A class missing from a fold's training
    part gets probability 0 for that fold's rows.
    """
    n = len(labels)
    folds = min(folds, len(np.unique(groups)))
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    if min(per_class) >= folds:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=folds)
    standard = StandardScaler().fit_transform(np.asarray(features, dtype=np.float32))
    proba = np.zeros((n, n_classes), dtype=np.float64)
    warm = LogisticRegression(C=C, max_iter=MAX_ITER, warm_start=True)
    for train, held_out in splitter.split(np.zeros(n), labels, groups):
        present = np.unique(labels[train])
        if len(present) == 1:
            proba[np.ix_(held_out, present)] = 1.0
        else:
            model = warm if len(present) == len(np.unique(labels)) else LogisticRegression(
                C=C, max_iter=MAX_ITER)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(standard[train], labels[train])
            proba[np.ix_(held_out, model.classes_)] = model.predict_proba(standard[held_out])
        if progress:
            progress(1)
    return proba


def _round_rows(matrix: np.ndarray) -> np.ndarray:
    """Round each row to integers keeping its (rounded) total: cleanlab's round_preserving_sum."""
    out = np.empty(matrix.shape, dtype=np.int64)
    for r, floats in enumerate(np.asarray(matrix, dtype=float)):
        ints = floats.round()
        missing = floats.sum().round() - ints.sum()
        while abs(missing) > EPSILON:
            step = 1 if missing > 0 else -1
            order = np.argsort(floats - ints)[::-step][:min(int(abs(missing)), len(floats))]
            ints[order] += step
            missing = floats.sum().round() - ints.sum()
        out[r] = ints
    return out


def confident_joint(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """int64, shape (K, K): calibrated counts of (given label, likely true label).

    Per-class threshold t_j = mean probability of class j over rows given j; a row counts
    towards the true classes whose probability reaches the threshold (the most probable
    class when several do). Calibrated so each row sums to its class's count.
    """
    K = proba.shape[1]
    counts = np.bincount(labels, minlength=K)
    thresholds = np.array([proba[labels == j, j].mean() if counts[j] else 2.0 for j in range(K)])
    confident = proba >= np.maximum(thresholds, 2 * EPSILON) - EPSILON
    several = confident.sum(axis=1) > 1
    guess = np.where(several, proba.argmax(axis=1), confident.argmax(axis=1))
    any_ = confident.any(axis=1)
    joint = np.zeros((K, K), dtype=np.int64)
    np.add.at(joint, (labels[any_], guess[any_]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    calibrated = joint / np.maximum(joint.sum(axis=1, keepdims=True), 1e-100) * counts[:, None]
    calibrated = calibrated / max(calibrated.sum(), 1e-100) * counts.sum()
    return _round_rows(calibrated)


def confident_learning(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """bool, shape (n,): rows whose given label is likely wrong (prune by noise rate).

    labels: int, shape (n,), 0..K-1; proba: float, shape (n, K), out-of-fold.
    """
    labels = np.asarray(labels)
    K = proba.shape[1]
    prune = confident_joint(labels, proba).T.astype(float)  # (true guess, given)
    diagonal = prune.diagonal().copy()
    lifted = np.maximum(diagonal, 1)  # keep at least one row per class
    others = np.maximum(np.count_nonzero(prune, axis=0) - 1.0, 1.0)
    prune = np.maximum(prune - (lifted - diagonal) / others, 0)
    np.fill_diagonal(prune, lifted)
    prune = _round_rows(prune.astype(int))
    flagged = np.zeros(len(labels), dtype=bool)
    for given in range(K):
        rows = np.flatnonzero(labels == given)
        if len(rows) <= 1:
            continue
        for true in range(K):
            count = prune[true, given]
            if true != given and count > 0:
                margin = proba[rows, true] - proba[rows, given]
                flagged[rows[np.argsort(-margin)[:count]]] = True
    boosted = proba.copy()
    boosted[np.arange(len(labels)), labels] += EPSILON
    flagged[boosted.argmax(axis=1) == labels] = False  # never flag a row the head agrees with
    return flagged


def neighbour_label_counts(neighbours: np.ndarray, labels: np.ndarray,
                           n_classes: int) -> np.ndarray:
    """int64, shape (n, n_classes): how many of each row's neighbours carry each label.

    neighbours: int, shape (n, k), -1 for none.
    """
    counts = np.zeros((len(neighbours), n_classes), dtype=np.int64)
    valid = neighbours >= 0
    rows = np.repeat(np.arange(len(neighbours)), neighbours.shape[1]).reshape(neighbours.shape)
    np.add.at(counts, (rows[valid], labels[neighbours[valid]]), 1)
    return counts
