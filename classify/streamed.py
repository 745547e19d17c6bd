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
is in memory. Each evaluation of the loss is one pass over the rows; L-BFGS needs about
one per iteration.

The two matrix products of a pass (logits, gradient) run in float32, which numpy does at
twice float64's rate (198 vs 96 GFLOP/s on 2 EPYC cores, 8192 x 2048 x 1000); the
softmax, the loss and every sum over blocks stay float64. The float32 rounding (relative
6e-8) is far below the stopping tolerance (gtol 1e-4 on the gradient).

Standardisation statistics come from one pass of scikit-learn's own
`StandardScaler.partial_fit` (float64 accumulators), which gives `fit`'s mean and scale.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit, log_expit, logsumexp
from sklearn.preprocessing import StandardScaler

# A block: raw rows (b, dim) of any float dtype, int labels (b,) in 0..K-1, weights (b,).
Block = tuple[np.ndarray, np.ndarray, np.ndarray]
Blocks = Callable[[], Iterable[Block]]


SCALER_ROWS = 2048  # rows per partial_fit call: its float64 copy and temporaries stay small


def streamed_scaler(blocks: Iterable[np.ndarray]) -> StandardScaler:
    """StandardScaler fitted by partial_fit on each block of rows, in one pass: the mean
    and scale of `fit` on all the rows (float64), one block in memory at a time, fed to
    partial_fit SCALER_ROWS rows at a time (its float64 copy and temporaries of a whole
    block would take 3 x 8 bytes per value, more than the block itself)."""
    scaler = StandardScaler()
    for rows in blocks:
        for start in range(0, len(rows), SCALER_ROWS):
            scaler.partial_fit(np.asarray(rows[start:start + SCALER_ROWS], dtype=np.float64))
    return scaler


@dataclass(frozen=True)
class LogisticFit:
    """What fit_logistic found: `w`, float64 of shape (K, dim + 1) for K > 2 classes or
    (1, dim + 1) for two (the binomial form; the last column is the intercept); L-BFGS's
    iterations; `passes`, how many times the rows were read (loss evaluations)."""

    w: np.ndarray
    n_iter: int
    passes: int


def fit_logistic(blocks: Blocks, n_classes: int, dim: int, *, C: float, mean: np.ndarray,
                 scale: np.ndarray, weight_sum: float, max_iter: int = 1000, tol: float = 1e-4,
                 warm_start: np.ndarray | None = None) -> LogisticFit:
    """Minimise scikit-learn's L2 logistic objective over the rows `blocks()` yields.

    blocks: called once per pass; yields (rows, labels, weights) with rows standardised
        here as (rows - mean) / scale in float32 (see the module docstring).
    weight_sum: S, the sum of the weights `blocks()` yields (known to the caller, so no
        pass over the rows is spent on it).
    Returns a LogisticFit. warm_start: a w of its shape to start from (e.g. the previous
    C's, or the solution on a subsample).
    """
    rows_out = 1 if n_classes == 2 else n_classes
    total = float(weight_sum)
    mean32, scale32 = np.float32(mean), np.float32(scale)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(rows_out, dim + 1)
        coef, intercept = w[:, :dim], w[:, dim]
        coef32 = coef.astype(np.float32)
        value, grad = 0.0, np.zeros_like(w)
        for rows, labels, weight in blocks():
            x = (np.asarray(rows, dtype=np.float32) - mean32) / scale32
            z = (x @ coef32.T).astype(np.float64) + intercept
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
            grad[:, :dim] += error.astype(np.float32).T @ x
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
    return LogisticFit(result.x.reshape(rows_out, dim + 1), int(result.nit), int(result.nfev))


# ---- memory and reading --------------------------------------------------------------------

# Train rows on which the streamed fit walks over C before it resumes the walk on every
# row (LogRegHead.fit_streamed): the best C can move with the number of rows, so the
# subsample's choice is where the walk on every row starts, not its answer;
# bench/streamed.py measures both walks' choices.
SUBSAMPLE_ROWS = 50_000
MIN_SUBSAMPLE_ROWS = 1_000  # fewer would choose C on too few images per class
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DEFAULT_SHARE = 0.5  # of the memory available when fit-head starts (MemAvailable)
# Bytes per stored value that fit-head's in-memory logreg holds at its peak: the rows as
# float32 (4), scikit-learn's float64 standardised copy of the train rows (8) and the
# float64 copy LogisticRegression makes of it (8), rounded up for validation's copy.
IN_MEMORY_BYTES_PER_VALUE = 24
# Bytes per value of a block while the streamed loss is summed: the float16 or float32
# window read (up to 4), the float32 rows taken from it (4) and their standardised copy (4),
# with room for a second block being converted.
BLOCK_BYTES_PER_VALUE = 16
LBFGS_COPIES = 24  # float64 copies of the coefficients L-BFGS-B keeps (10 pairs, x, grad...)


def parse_memory(text: str) -> int:
    """Bytes of a --memory value: "1500M", "4G", "512K", "2.5G" or plain bytes.

    Raises UsageError (one sentence) for anything else or a value under 1 MiB.
    """
    from headstart.errors import UsageError

    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in UNITS and value[-1:] else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        number = -1.0
    if not number > 0 or number * UNITS[unit] < UNITS["M"]:
        raise UsageError(f"--memory takes a size such as 1500M or 4G (at least 1M), got "
                         f"{text!r}.")
    return int(number * UNITS[unit])


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or the
    physical memory where /proc/meminfo is not there."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget() -> int:
    """fit-head's memory budget when --memory is not given: DEFAULT_SHARE of what is
    available now."""
    return int(DEFAULT_SHARE * available_memory())


def fits_in_memory(n_rows: int, dim: int, budget: int) -> bool:
    """Whether the in-memory fit's peak (IN_MEMORY_BYTES_PER_VALUE per value) fits."""
    return n_rows * dim * IN_MEMORY_BYTES_PER_VALUE <= budget


def model_bytes(dim: int, n_classes: int) -> int:
    """What L-BFGS's LBFGS_COPIES float64 copies of the coefficients take, in bytes."""
    return LBFGS_COPIES * 8 * n_classes * (dim + 1)


def block_rows_for(budget: int, dim: int, n_classes: int) -> int:
    """Store rows read at a time: what half of the budget holds at BLOCK_BYTES_PER_VALUE
    per value (the other half is for the model with L-BFGS's copies, the labels and the
    subsample of subsample_rows_for), between 256 and 65,536. Raises UsageError when the
    model alone does not fit."""
    from headstart.errors import UsageError

    model = model_bytes(dim, n_classes)
    if model > budget // 2:
        raise UsageError(f"--memory {budget / UNITS['M']:.0f}M is too small for a linear probe "
                         f"of {n_classes} classes x {dim} features, whose optimiser holds "
                         f"{model / UNITS['M']:.0f} MB; give at least "
                         f"{2 * model / UNITS['M']:.0f}M.")
    per_row = BLOCK_BYTES_PER_VALUE * dim + 3 * 8 * n_classes
    return int(min(65536, max(256, (budget // 2) // per_row)))


def subsample_rows_for(budget: int, dim: int, n_classes: int) -> int:
    """Train rows the walk over C may hold in memory (float32): SUBSAMPLE_ROWS, or what
    the half of the budget that blocks leave holds after the model's copies; 0 (walk on
    every row) when that is under MIN_SUBSAMPLE_ROWS."""
    rows = min(SUBSAMPLE_ROWS, max(0, budget // 2 - model_bytes(dim, n_classes)) // (4 * dim))
    return rows if rows >= MIN_SUBSAMPLE_ROWS else 0


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (getrusage's ru_maxrss)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Consecutive store rows read together when rows are wanted in a shuffled order (a group
# gathers block_rows // SPAN_ROWS spans drawn at random). Stores keep their rows in path
# order, so a span holds one class or two; 32 rows (128 KB of 2,048 float16 columns) keeps
# a group of 8,192 rows drawn from 256 places in the store at one read each.
SPAN_ROWS = 32


class RowSource:
    """Rows of a (n, dim) array-like (an h5py dataset, or an ndarray) read `block_rows`
    store rows at a time: one contiguous read per block, whichever rows of it are wanted."""

    def __init__(self, features, block_rows: int):
        self.features = features
        self.block_rows = int(block_rows)

    def groups(self, rows: np.ndarray, rng: np.random.Generator,
               span: int = SPAN_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `rows`, float32 rows) for sorted row indices `rows`, in groups of
        about block_rows rows, each gathered from block_rows // span spans of up to `span`
        consecutive store rows taken in the order `rng` permutes them (every row once).
        The rows inside a group stay in store order: shuffle them with the positions."""
        rows = np.asarray(rows)
        if not len(rows):
            return
        starts = np.flatnonzero(np.r_[True, np.diff(rows // span) != 0])
        bounds = np.r_[starts, len(rows)]
        order = rng.permutation(len(starts))
        per_group = max(1, self.block_rows // span)
        for first in range(0, len(order), per_group):
            picked = order[first:first + per_group]
            positions = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in picked])
            wanted = [rows[bounds[i]:bounds[i + 1]] for i in picked]
            yield positions, np.concatenate([
                np.asarray(self.features[int(r[0]):int(r[-1]) + 1][r - r[0]], dtype=np.float32)
                for r in wanted])

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """(positions in `rows`, float32 rows) for sorted row indices `rows`."""
        rows = np.asarray(rows)
        if not len(rows):
            return
        step = self.block_rows
        for start in range(int(rows[0]) - int(rows[0]) % step, int(rows[-1]) + 1, step):
            lo, hi = np.searchsorted(rows, [start, start + step])
            if lo == hi:
                continue
            window = self.features[start:min(start + step, int(rows[hi - 1]) + 1)]
            yield slice(int(lo), int(hi)), np.asarray(window[rows[lo:hi] - start],
                                                      dtype=np.float32)
