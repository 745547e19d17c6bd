"""The linear probe on rows read in blocks: standardisation and logistic regression whose
memory does not grow with the number of rows (numpy and scipy; no TensorFlow).

The objective is scikit-learn's `LogisticRegression(solver="lbfgs")` (1.9), term for term:

    (1 / S) * sum_i s_i * loss_i  +  (1 / (2 * C * S)) * ||W||^2,     S = sum_i s_i

with s_i the sample weights (1, or class_weight="balanced"), loss_i the multinomial cross
entropy of K coefficient rows (the binomial one of a single row for two classes, as
scikit-learn fits them), the intercepts not penalised. It is minimised by the same
optimiser with the same settings (scipy's L-BFGS-B, maxls 50, gtol = tol, ftol 64 eps),
except that the loss and its gradient are summed over blocks of rows as they are read, so
the result agrees with scikit-learn's in-memory fit to its tolerance while only one block
is in memory. Each L-BFGS iteration is one pass over the rows.

Standardisation statistics come from one pass of scikit-learn's own
`StandardScaler.partial_fit` (float64 accumulators), which gives `fit`'s mean and scale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit, logsumexp
from sklearn.preprocessing import StandardScaler

# A block: raw rows (b, dim) of any float dtype, int labels (b,) in 0..K-1, weights (b,).
Block = tuple[np.ndarray, np.ndarray, np.ndarray]
Blocks = Callable[[], Iterable[Block]]


def streamed_scaler(blocks: Iterable[np.ndarray]) -> StandardScaler:
    """StandardScaler fitted by partial_fit on each block of rows, in one pass: the mean
    and scale of `fit` on all the rows (float64), one block in memory at a time."""
    scaler = StandardScaler()
    for rows in blocks:
        scaler.partial_fit(np.asarray(rows, dtype=np.float64))
    return scaler


def blocks_of(X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
              block_rows: int = 4096) -> Blocks:
    """Blocks over arrays already in memory (for tests and small stores)."""
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)

    def blocks() -> Iterator[Block]:
        for start in range(0, len(y), block_rows):
            end = start + block_rows
            yield X[start:end], y[start:end], weight[start:end]

    return blocks


def fit_logistic(blocks: Blocks, n_classes: int, dim: int, *, C: float, mean: np.ndarray,
                 scale: np.ndarray, max_iter: int = 1000, tol: float = 1e-4,
                 warm_start: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Minimise scikit-learn's L2 logistic objective over the rows `blocks()` yields.

    blocks: called once per pass; yields (rows, labels, weights) with rows standardised
        here as (rows - mean) / scale in float64.
    Returns (w, n_iter): w float64 of shape (K, dim + 1) for K > 2 classes, (1, dim + 1)
    for two (the binomial form; the last column is the intercept), and L-BFGS's iteration
    count. warm_start: a w of that shape to start from (e.g. the previous C's).
    """
    rows_out = 1 if n_classes == 2 else n_classes
    total = sum(float(weight.sum()) for _, _, weight in blocks())

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(rows_out, dim + 1)
        coef, intercept = w[:, :dim], w[:, dim]
        value, grad = 0.0, np.zeros_like(w)
        for rows, labels, weight in blocks():
            x = (np.asarray(rows, dtype=np.float64) - mean) / scale
            z = x @ coef.T + intercept
            if n_classes == 2:
                target = (labels == 1).astype(np.float64)
                value += float(weight @ (-log_expit(z[:, 0]) + (1 - target) * z[:, 0]))
                error = (expit(z[:, 0]) - target)[:, None]
            else:
                norm = logsumexp(z, axis=1)
                value += float(weight @ (norm - z[np.arange(len(labels)), labels]))
                error = np.exp(z - norm[:, None])
                error[np.arange(len(labels)), labels] -= 1.0
            error *= weight[:, None]
            grad[:, :dim] += error.T @ x
            grad[:, dim] += error.sum(axis=0)
        l2 = 1.0 / (C * total)
        value = value / total + 0.5 * l2 * float(np.sum(coef * coef))
        grad /= total
        grad[:, :dim] += l2 * coef
        return value, grad.ravel()

    start = (np.zeros((rows_out, dim + 1)) if warm_start is None
             else np.asarray(warm_start, dtype=np.float64))
    result = optimize.minimize(objective, start.ravel(), method="L-BFGS-B", jac=True,
                               options={"maxiter": max_iter, "maxls": 50, "gtol": tol,
                                        "ftol": 64 * np.finfo(float).eps})
    return result.x.reshape(rows_out, dim + 1), int(result.nit)


def probabilities(w: np.ndarray, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray
                  ) -> np.ndarray:
    """float64 (n, K) class probabilities of raw rows under a fit_logistic result."""
    dim = w.shape[1] - 1
    x = (np.asarray(rows, dtype=np.float64) - mean) / scale
    z = x @ w[:, :dim].T + w[:, dim]
    if w.shape[0] == 1:
        positive = expit(z[:, 0])
        return np.column_stack([1 - positive, positive])
    return np.exp(z - logsumexp(z, axis=1, keepdims=True))
