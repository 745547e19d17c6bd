"""The linear probe on rows read in blocks, against scikit-learn's in-memory fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from headstart.classify.streamed import blocks_of, fit_logistic, probabilities, streamed_scaler


def clustered(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float16 rows around one centre per class, overlapping (not separable), uneven
    classes and feature scales, like stored features."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n, p=np.linspace(1, 2, classes) / np.linspace(1, 2, classes)
                   .sum())
    centres = rng.normal(size=(classes, dim))
    X = (centres[y] + 1.5 * rng.normal(size=(n, dim))) * rng.uniform(0.1, 10, dim) + 3
    return X.astype(np.float16), y


def test_the_streamed_scaler_equals_standard_scaler_fit():
    X, _ = clustered(1000, 16, 3)
    X[:, 5] = 7  # a constant feature: scale 1, as StandardScaler sets it
    whole = StandardScaler().fit(X.astype(np.float64))
    streamed = streamed_scaler(X[i:i + 128] for i in range(0, len(X), 128))
    np.testing.assert_allclose(streamed.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(streamed.scale_, whole.scale_, rtol=1e-10)
    assert streamed.scale_[5] == 1.0


@pytest.mark.parametrize("classes, class_weight, C", [(3, None, 0.1), (5, "balanced", 1.0),
                                                      (2, None, 0.01), (2, "balanced", 10.0)])
def test_the_streamed_fit_agrees_with_scikit_learn_in_memory(classes, class_weight, C):
    """Same objective and optimiser: probabilities within 1e-4, log loss within 1e-4
    relative, coefficients within 1e-3 of the largest (both stop at gtol 1e-4)."""
    X, y = clustered(1500, 24, classes, seed=classes)
    X_val, y_val = clustered(500, 24, classes, seed=classes + 10)
    scaler = StandardScaler().fit(X.astype(np.float64))
    reference = LogisticRegression(C=C, class_weight=class_weight, max_iter=1000).fit(
        scaler.transform(X.astype(np.float64)), y)
    weight = compute_sample_weight("balanced", y) if class_weight else None
    w, n_iter = fit_logistic(blocks_of(X, y, weight, block_rows=333), classes, 24, C=C,
                             mean=scaler.mean_, scale=scaler.scale_)
    assert w.shape == (1 if classes == 2 else classes, 25) and n_iter > 1
    np.testing.assert_allclose(w[:, :24], reference.coef_, rtol=0,
                               atol=1e-3 * np.abs(reference.coef_).max())
    expected = reference.predict_proba(scaler.transform(X_val.astype(np.float64)))
    actual = probabilities(w, X_val, scaler.mean_, scaler.scale_)
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    assert log_loss(y_val, actual) == pytest.approx(log_loss(y_val, expected), rel=1e-4)


def test_a_warm_start_from_a_neighbouring_c_needs_fewer_iterations():
    X, y = clustered(1500, 24, 4)
    scaler = streamed_scaler([X])
    blocks = blocks_of(X, y, block_rows=500)
    options = dict(mean=scaler.mean_, scale=scaler.scale_)
    w_small, _ = fit_logistic(blocks, 4, 24, C=0.1, **options)
    cold, cold_iter = fit_logistic(blocks, 4, 24, C=0.3, **options)
    warm, warm_iter = fit_logistic(blocks, 4, 24, C=0.3, warm_start=w_small, **options)
    assert warm_iter < cold_iter
    # The same optimum to L-BFGS's tolerance (gtol 1e-4): log loss within 1e-3 relative.
    assert log_loss(y, probabilities(warm, X, **options)) == pytest.approx(
        log_loss(y, probabilities(cold, X, **options)), rel=1e-3)
