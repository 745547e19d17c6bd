"""The one k-nearest-neighbour pass every check of the audit reuses (cosine similarity).

Exact by default: rows are scaled to unit length once, then the similarity matrix is
computed a block of rows at a time as float32 matrix products (BLAS), and only each
row's k best are kept, so memory is bounded by one block (about 256 MB), not by n^2.
The matrix is symmetric, so block i is multiplied with rows i.. only, and each product
updates both the block's rows and, transposed, the later rows: half the arithmetic.
A float16 store is converted block by block before the products (a float16 matrix
product on CPUs is about 200 times slower than a float32 one).

Above about 100,000 rows the exact pass grows with n^2; `faiss_neighbours` (the optional
`faiss-cpu` package) finds candidates in an IVF index over PCA-reduced rows and
re-scores them exactly on the full rows, so the similarities it reports are exact and
only a neighbour the index missed can differ. bench/audit.py measures its recall.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from headstart.errors import missing_extra

BLOCK_BYTES = 256 << 20  # one block of similarities: the memory bound of the exact pass
EXACT_LIMIT = 100_000  # rows above which "auto" uses faiss
FAISS_DIMS = 256  # dimensions of the faiss index (uncentred PCA)
FAISS_TRAIN_ROWS = 50_000  # rows sampled to fit the projection and the IVF centroids


@dataclass(frozen=True)
class Neighbours:
    """Each row's k nearest other rows by cosine similarity, nearest first.

    indices: int64, shape (n, k); -1 where a store has fewer than k + 1 rows.
    cosine: float32, shape (n, k), in [-1, 1], descending along each row (-inf with -1).
    method: how they were found, for the report ("exact", or the faiss settings).
    among: the same search restricted to some rows, `among(rows, allowed, k)` ->
        (indices int64 (m, k), cosine float32 (m, k)): the k nearest neighbours of each of
        `rows` (int64, (m,)) among the rows where `allowed` (bool, (n,)) is True, a row
        never its own neighbour, -1 / -inf where fewer are allowed. It keeps the unit rows
        (and the faiss index) alive: `released()` drops it once it is no longer needed.
    """

    indices: np.ndarray
    cosine: np.ndarray
    method: str
    among: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = \
        field(default=None, repr=False, compare=False)

    def released(self) -> Neighbours:
        """The same neighbours without `among` (and the memory it holds)."""
        return replace(self, among=None)

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def distance(self) -> np.ndarray:
        """Cosine distance 1 - cosine, float32, shape (n, k)."""
        return 1.0 - self.cosine


def unit_rows(features, block: int = 4096) -> np.ndarray:
    """float32 copy of `features` (array or h5py dataset, shape (n, dim)) with unit-length rows.

    Read and converted `block` rows at a time, so a float16 store never takes part in a
    matrix product. An all-zero row stays zero (cosine 0 to every row).
    """
    n, dim = features.shape
    unit = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, block):
        rows = np.asarray(features[start:start + block], dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit[start:start + len(rows)] = rows / np.where(norms > 0, norms, 1.0)
    return unit


def _merge(best_cos: np.ndarray, best_idx: np.ndarray, rows: slice, candidates: np.ndarray,
           offset: int) -> None:
    """Fold `candidates` (similarities of `rows` to columns offset..) into the running k best."""
    k = best_cos.shape[1]
    if candidates.shape[1] > k:
        top = np.argpartition(candidates, -k, axis=1)[:, -k:]
    else:
        top = np.broadcast_to(np.arange(candidates.shape[1]), candidates.shape)
    cos = np.concatenate([best_cos[rows], np.take_along_axis(candidates, top, axis=1)], axis=1)
    idx = np.concatenate([best_idx[rows], top + offset], axis=1)
    order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    best_cos[rows] = np.take_along_axis(cos, order, axis=1)
    best_idx[rows] = np.take_along_axis(idx, order, axis=1)


def _fold_in(best_cos: np.ndarray, best_idx: np.ndarray, targets: np.ndarray,
             values: np.ndarray, columns: np.ndarray) -> None:
    """Fold scattered candidates (row `targets[i]` has neighbour `columns[i]` at `values[i]`)
    into the running k best; the sparse counterpart of `_merge`."""
    k = best_cos.shape[1]
    order = np.lexsort((-values, targets))
    targets, values, columns = targets[order], values[order], columns[order]
    rows, starts, counts = np.unique(targets, return_index=True, return_counts=True)
    rank = np.arange(len(targets)) - np.repeat(starts, counts)
    keep = rank < k
    slot = np.repeat(np.arange(len(rows)), counts)[keep]
    new_cos = np.full((len(rows), k), -np.inf, dtype=np.float32)
    new_idx = np.full((len(rows), k), -1, dtype=np.int64)
    new_cos[slot, rank[keep]] = values[keep]
    new_idx[slot, rank[keep]] = columns[keep]
    cos = np.concatenate([best_cos[rows], new_cos], axis=1)
    idx = np.concatenate([best_idx[rows], new_idx], axis=1)
    pick = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    best_cos[rows] = np.take_along_axis(cos, pick, axis=1)
    best_idx[rows] = np.take_along_axis(idx, pick, axis=1)


DENSE = 0.05  # above this share of candidates beating the current k-th, merge densely


def _update(best_cos: np.ndarray, best_idx: np.ndarray, sims: np.ndarray, first_row: int,
            first_column: int, *, transposed: bool = False) -> None:
    """Fold similarities of rows first_row.. to columns first_column.. into the k best.

    sims: (rows, columns), or (columns, rows) when `transposed` (the lower triangle read
    from the upper one). Only entries above a row's current k-th best can change it; once
    the running lists fill up those are few, and only they are gathered (the dense merge
    sorts every entry).
    """
    n_rows = sims.shape[1] if transposed else sims.shape[0]
    kth = best_cos[first_row:first_row + n_rows, -1]
    better = sims > (kth[None, :] if transposed else kth[:, None])
    if better.mean() > DENSE:
        dense = np.ascontiguousarray(sims.T) if transposed else sims
        _merge(best_cos, best_idx, slice(first_row, first_row + n_rows), dense, first_column)
    elif better.any():
        r, c = np.nonzero(better)
        values = sims[r, c]
        if transposed:
            r, c = c, r
        _fold_in(best_cos, best_idx, first_row + r, values, first_column + c)


def exact_neighbours(unit: np.ndarray, k: int = 10,
                     progress: Callable[[int], None] | None = None) -> Neighbours:
    """Exact k nearest neighbours of every row among the others, by cosine similarity.

    unit: float32, shape (n, dim), unit-length rows (see `unit_rows`).
    progress: called with the number of rows finished after each block.
    Cost: n^2 * dim / 2 multiply-adds; memory: the result plus one block of at most
    BLOCK_BYTES of similarities (and its transpose).
    """
    n = len(unit)
    best_cos = np.full((n, k), -np.inf, dtype=np.float32)
    best_idx = np.full((n, k), -1, dtype=np.int64)
    block = int(np.clip(BLOCK_BYTES // (4 * max(n, 1)), 64, 4096))
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit[start:].T  # (b, n - start), float32
        np.clip(sims, -1.0, 1.0, out=sims)
        own = np.arange(stop - start)
        sims[own, own] = -np.inf  # a row is not its own neighbour
        _update(best_cos, best_idx, sims, start, start)
        if stop < n:  # the same products, read as the later rows' similarities to this block
            _update(best_cos, best_idx, sims[:, stop - start:], stop, start, transposed=True)
        if progress:
            progress(stop - start)
    best_idx[~np.isfinite(best_cos)] = -1
    return Neighbours(best_idx, best_cos, "exact (blocked float32 matrix products)",
                      lambda rows, allowed, k: exact_among(unit, rows, allowed, k))


def exact_among(unit: np.ndarray, rows: np.ndarray, allowed: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of `rows` among the `allowed` rows (see `Neighbours.among`).

    unit: float32, shape (n, dim), unit-length rows; rows: int64 (m,); allowed: bool (n,).
    Returns (indices int64 (m, k), cosine float32 (m, k)), nearest first. Cost: m * n * dim
    multiply-adds, one block of at most BLOCK_BYTES of similarities at a time.
    """
    n = len(unit)
    best_cos = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_idx = np.full((len(rows), k), -1, dtype=np.int64)
    block = int(np.clip(BLOCK_BYTES // (4 * max(n, 1)), 64, 4096))
    banned = ~np.asarray(allowed, dtype=bool)
    for start in range(0, len(rows), block):
        part = rows[start:start + block]
        sims = unit[part] @ unit.T  # (b, n), float32
        np.clip(sims, -1.0, 1.0, out=sims)
        sims[:, banned] = -np.inf
        sims[np.arange(len(part)), part] = -np.inf  # a row is not its own neighbour
        _merge(best_cos, best_idx, slice(start, start + len(part)), sims, 0)
    best_idx[~np.isfinite(best_cos)] = -1
    return best_idx, best_cos


def _import_faiss(purpose: str):
    try:
        import faiss
    except ImportError:
        raise missing_extra("faiss-cpu", "faiss", purpose) from None
    return faiss


def faiss_neighbours(unit: np.ndarray, k: int = 10, *, dims: int = FAISS_DIMS,
                     candidates: int | None = None, nprobe: int = 32, seed: int = 0,
                     progress: Callable[[int], None] | None = None,
                     seconds: dict | None = None) -> Neighbours:
    """Approximate candidates from faiss, re-scored exactly: k neighbours, cosine, nearest first.

    unit: float32, shape (n, dim), unit-length rows. The rows are reduced to `dims`
    dimensions by an uncentred PCA (scikit-learn's TruncatedSVD, randomized, fitted on up
    to FAISS_TRAIN_ROWS sampled rows), scaled to unit length again and put in an IVF
    index (faiss.IndexIVFFlat, inner product, about 4 * sqrt(n) lists, `nprobe` of them
    searched per query). The `candidates` best (default 4 * k) of each row are then
    re-scored on the full rows, so every reported cosine is exact. seconds: if given, it
    receives the seconds of each stage ("train": the projection and the index's lists on
    the sample; "index": projecting and adding every row; "search": candidates and exact
    re-scoring). Raises MissingExtraError without faiss-cpu.
    """
    faiss = _import_faiss("Approximate neighbours (--neighbours faiss)")
    from sklearn.decomposition import TruncatedSVD

    seconds = {} if seconds is None else seconds
    clock = time.perf_counter()

    n, dim = unit.shape
    candidates = min(max(candidates or 4 * k, k) + 1, n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, FAISS_TRAIN_ROWS), replace=False))
    dims = min(dims, dim - 1, len(sample) - 1)
    # Uncentred (TruncatedSVD, randomized): the projection that best keeps inner products,
    # which is what cosine on unit rows is. (faiss.PCAMatrix trains the same in minutes
    # on 4096 dimensions; scikit-learn's randomized SVD takes seconds.)
    svd = TruncatedSVD(dims, algorithm="randomized", random_state=seed).fit(unit[sample])
    seconds["train"] = time.perf_counter() - clock
    basis = svd.components_.T.astype(np.float32)  # (dim, dims)
    reduced = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, 8192):
        reduced[start:start + 8192] = unit[start:start + 8192] @ basis
    faiss.normalize_L2(reduced)
    lists = int(np.clip(4 * np.sqrt(n), 1, max(1, len(sample) // 39)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, lists, faiss.METRIC_INNER_PRODUCT)
    index.train(reduced[sample])
    index.add(reduced)
    seconds["index"] = time.perf_counter() - clock - seconds["train"]
    index.nprobe = min(nprobe, lists)
    best_idx, best_cos = _rescored(index, reduced, unit, np.arange(n), candidates, k,
                                   progress=progress)
    seconds["search"] = time.perf_counter() - clock - seconds["train"] - seconds["index"]
    method = (f"faiss IVF ({lists} lists, nprobe {index.nprobe}) over SVD to {dims} "
              f"dimensions, {candidates - 1} candidates re-scored exactly")

    def among(rows: np.ndarray, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # faiss keeps raw pointers: both selectors stay referenced here until the search ends.
        excluded = faiss.IDSelectorBatch(np.flatnonzero(~allowed).astype(np.int64))
        selector = faiss.IDSelectorNot(excluded)
        params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
        indices, cosine = _rescored(index, reduced, unit, rows, candidates, k, params=params)
        # The probed lists may hold fewer than k allowed rows (a large atypical group fills
        # its own lists): those few rows are searched exactly.
        short = np.flatnonzero((indices < 0).any(axis=1))
        if len(short) and int(allowed.sum()) > k:
            indices[short], cosine[short] = exact_among(unit, rows[short], allowed, k)
        return indices, cosine

    return Neighbours(best_idx, best_cos, method, among)


def _rescored(index, reduced: np.ndarray, unit: np.ndarray, rows: np.ndarray, candidates: int,
              k: int, params=None, progress: Callable[[int], None] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """faiss candidates of `rows`, re-scored on the full unit rows: (indices, cosine), (m, k)."""
    best_cos = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_idx = np.full((len(rows), k), -1, dtype=np.int64)
    step = 256
    for start in range(0, len(rows), step):
        part = rows[start:start + step]
        _, found = index.search(reduced[part], candidates, params=params)
        found[found == part[:, None]] = -1  # not its own neighbour
        safe = np.where(found >= 0, found, 0)
        cos = np.einsum("bd,bcd->bc", unit[part], unit[safe])
        cos = np.where(found >= 0, np.clip(cos, -1.0, 1.0), -np.inf).astype(np.float32)
        order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
        width = order.shape[1]
        best_cos[start:start + len(part), :width] = np.take_along_axis(cos, order, axis=1)
        best_idx[start:start + len(part), :width] = np.take_along_axis(found, order, axis=1)
        if progress:
            progress(len(part))
    best_idx[~np.isfinite(best_cos)] = -1
    return best_idx, best_cos


def find_neighbours(unit: np.ndarray, k: int = 10, method: str = "auto",
                    progress: Callable[[int], None] | None = None) -> Neighbours:
    """The k nearest neighbours of every row: "exact", "faiss", or "auto".

    "auto" is exact up to EXACT_LIMIT rows and faiss above; with faiss missing there,
    MissingExtraError names the install (and --neighbours exact still works).
    """
    k = min(k, max(len(unit) - 1, 1))
    if method == "faiss" or (method == "auto" and len(unit) > EXACT_LIMIT):
        if method == "auto":
            _import_faiss(f"Auditing {len(unit):,} rows (exact neighbours above "
                          f"{EXACT_LIMIT:,} rows take hours; --neighbours exact forces them)")
        return faiss_neighbours(unit, k, progress=progress)
    return exact_neighbours(unit, k, progress=progress)
