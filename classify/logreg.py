"""Multinomial logistic regression on standardised features (scikit-learn; no TensorFlow).

The regularisation strength C is chosen on the validation split: one fit per value of
the grid, from strong to weak regularisation, and the one with the lowest validation
log loss wins (ties go to the smaller C). Validation loss is in practice unimodal in C,
so the walk stops once it has risen `patience` times in a row: the weakly regularised
fits, which are the slowest, are skipped when they cannot win. The test split is never
seen here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from headstart.classify.head import Layer, forward
from headstart.classify.options import DEFAULT_CS, LOGREG_NULLABLE, LOGREG_OPTIONS
from headstart.classify.streamed import SUBSAMPLE_ROWS, RowSource, fit_logistic, streamed_scaler
from headstart.options import check_options


class LogRegHead(ClassifierMixin, BaseEstimator):
    """StandardScaler + LogisticRegression(lbfgs, multinomial), C chosen on validation data.

    Learned attributes: ``mean_``, ``scale_`` (float64, shape (dim,)), ``coef_`` (float64,
    shape (n_classes, dim), in softmax form also for two classes), ``intercept_``,
    ``C_``, ``selection_`` (one dict per C tried), ``n_iter_``, ``converged_``,
    ``n_parameters_`` (coefficients scikit-learn fitted: dim + 1 for two classes).
    """

    # Allowed values, checked when fit starts; fit-head's parser reads the same declaration.
    OPTIONS = LOGREG_OPTIONS
    NULLABLE = LOGREG_NULLABLE

    def __init__(self, C: float | None = None, Cs: tuple[float, ...] = DEFAULT_CS,
                 class_weight: str | None = None, max_iter: int = 1000, tol: float = 1e-4,
                 patience: int = 2):
        self.C = C
        self.Cs = Cs
        self.patience = patience
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: np.ndarray, *,
            validation_data: tuple[np.ndarray, np.ndarray] | None = None) -> LogRegHead:
        """X: float, shape (n, dim); y: int labels 0..n_classes-1, every class present.

        Raises UsageError for an option out of range, before any work.
        """
        self.check_params()
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if self.C is None and validation_data is None:
            raise ValueError("LogRegHead needs validation_data to choose C, or a fixed C.")
        scaler = StandardScaler().fit(X)
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        train = self._standardise(X)
        validation = None
        if validation_data is not None:
            X_val, y_val = validation_data
            weight = (compute_sample_weight("balanced", y_val)
                      if self.class_weight == "balanced" else None)
            validation = (self._standardise(X_val), np.asarray(y_val), weight)
        model = self._walk(lambda C: self._fit_one(C, train, y, validation))
        self.n_parameters_ = int(model.coef_.size + model.intercept_.size)
        self.coef_, self.intercept_ = softmax_form(model.coef_, model.intercept_)
        return self

    def fit_streamed(self, source, train: np.ndarray, y: np.ndarray, validation: np.ndarray,
                     y_val: np.ndarray, *, subsample_rows: int = SUBSAMPLE_ROWS,
                     seed: int = 0) -> LogRegHead:
        """The same fit on rows read in blocks (`headstart.classify.streamed`), one block in
        memory at a time: scikit-learn's objective and L-BFGS settings, the same walk over
        C on validation log loss, each C warm-started from the previous one's solution.

        source: a streamed.RowSource; train, validation: sorted row indices into it;
        y, y_val: their int labels. subsample_rows: when C is to be chosen and the train
        split has more rows than this, the walk over C runs on that many train rows drawn
        with `seed` and held in memory (float32); the walk then resumes on every train row
        from the C it chose (see _resume_on_every_row; recorded in ``subsample_`` and
        ``every_row_``): the sweep costs a fraction of a pass over the store per C, and the
        fits on every row are warm-started. 0: the walk reads every train row.
        Raises UsageError for an option out of range.
        """
        self.check_params()
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        scaler = streamed_scaler(rows for _, rows in source.blocks(train))
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        codes = np.searchsorted(self.classes_, y)
        weight, val_weight = self._sample_weight(y), self._sample_weight(y_val)
        dim, k = len(self.mean_), len(self.classes_)

        def blocks_of(rows_source, rows: np.ndarray, labels: np.ndarray,
                      weights: np.ndarray) -> Callable[[], Iterator]:
            def blocks():
                for part, block in rows_source.blocks(rows):
                    yield block, labels[part], weights[part]
            return blocks

        def fit(blocks, weight_sum: float, n_rows: int, C: float, start):
            result = fit_logistic(blocks, k, dim, C=C, mean=self.mean_, scale=self.scale_,
                                  weight_sum=weight_sum, max_iter=self.max_iter, tol=self.tol,
                                  warm_start=start)
            record = {"C": C, "n_iter": result.n_iter, "passes": result.passes,
                      "converged": result.n_iter < self.max_iter, "rows": n_rows}
            record.update(self._streamed_validation(source, result.w, validation, y_val,
                                                    val_weight))
            return result.w, record

        limit = int(subsample_rows)
        self.subsample_ = self.every_row_ = None
        everything = blocks_of(source, train, codes, weight)
        walk_blocks, walk_weight = everything, weight
        if self.C is None and 0 < limit < len(train):
            picked = np.sort(np.random.default_rng(seed).choice(len(train), limit,
                                                                replace=False))
            held = np.empty((limit, dim), dtype=np.float32)
            for part, block in source.blocks(train[picked]):
                held[part] = block
            walk_weight = weight[picked]
            walk_blocks = blocks_of(RowSource(held, source.block_rows), np.arange(limit),
                                    codes[picked], walk_weight)
            self.subsample_ = {"rows": limit, "of": len(train), "seed": seed}
        previous = None

        def fit_one(C: float):
            nonlocal previous
            previous, record = fit(walk_blocks, float(walk_weight.sum()), len(walk_weight), C,
                                   previous)
            return previous, record

        w = self._walk(fit_one)
        walk_blocks = held = None  # the subsample is not needed on every row: free it
        if self.subsample_ is not None:
            w = self._resume_on_every_row(
                lambda C, start: fit(everything, float(weight.sum()), len(train), C, start), w)
        self.n_parameters_ = int(w.size)
        self.coef_, self.intercept_ = split_coefficients(w)
        return self

    def _walk(self, fit_one):
        """Fit each C of the grid from strong to weak regularisation (or the fixed C),
        stopping once validation loss rose `patience` times in a row; keep the lowest.
        fit_one(C) -> (model, record). Sets C_, n_iter_, converged_, selection_."""
        grid = (self.C,) if self.C is not None else tuple(sorted(self.Cs))
        self.selection_, rises, best, best_record = [], 0, None, None
        for C in grid:
            model, record = fit_one(C)
            loss = record.get("val_loss", 0)
            rises = rises + 1 if self.selection_ and loss > self.selection_[-1]["val_loss"] else 0
            self.selection_.append(record)
            if best_record is None or loss < best_record.get("val_loss", 0):
                best, best_record = model, record  # only the best model is kept
            if rises >= self.patience:
                break
        self.C_, self.n_iter_, self.converged_ = (best_record["C"], best_record["n_iter"],
                                                  best_record["converged"])
        return best

    def _resume_on_every_row(self, fit_all, start: np.ndarray) -> np.ndarray:
        """After the walk on a subsample: fit its C on every row (warm-started from the
        subsample's solution), then step along the grid towards the neighbour that had the
        lower validation loss on the subsample, each fit warm-started from the previous
        one's, while validation loss falls. The subsample's C is often the best but not
        always (fewer rows can want more regularisation; bench/streamed.py measures it);
        validation loss being unimodal in C, the better neighbour on the subsample says on
        which side a better C on every row would be. Two fits on every row when the
        subsample's C stays best. fit_all(C, start) -> (w, record). Sets C_, n_iter_,
        converged_, ``every_row_`` (the records on every row, by C); returns the best w."""
        grid = sorted(set(self.Cs) | {self.C_})
        at = grid.index(self.C_)
        on_subsample = {r["C"]: r["val_loss"] for r in self.selection_}
        sides = [i for i in (at - 1, at + 1) if 0 <= i < len(grid)]
        step = min(sides, key=lambda i: on_subsample.get(grid[i], np.inf)) - at if sides else 0
        tried = {at: fit_all(self.C_, start)}
        i = at
        while step and 0 <= i + step < len(grid):
            tried[i + step] = fit_all(grid[i + step], tried[i][0])
            if tried[i + step][1]["val_loss"] >= tried[i][1]["val_loss"]:
                break
            i += step
        best = min(sorted(tried), key=lambda i: tried[i][1]["val_loss"])
        self.every_row_ = [tried[i][1] for i in sorted(tried)]
        record = tried[best][1]
        self.C_, self.n_iter_, self.converged_ = record["C"], record["n_iter"], record["converged"]
        return tried[best][0]

    def _streamed_validation(self, source, w, validation, y_val, weight) -> dict:
        """Validation log loss (scikit-learn's, weighted) and accuracy, block by block."""
        from headstart.classify.report import Scores, true_class_losses

        layers = softmax_layers(*split_coefficients(w))
        loss = correct = 0.0
        for part, rows in source.blocks(validation):
            codes = np.searchsorted(self.classes_, y_val[part])
            scores = Scores.of(codes, forward(rows, self.mean_, self.scale_, layers))
            loss += float(weight[part] @ true_class_losses(scores.p_true))
            correct += float(np.sum(scores.predicted == codes))
        return {"val_loss": loss / float(weight.sum()), "val_accuracy": correct / len(y_val)}

    def _sample_weight(self, y: np.ndarray) -> np.ndarray:
        """Each image's weight: 1, or the share that gives every class the same total
        weight (class_weight='balanced')."""
        return (compute_sample_weight("balanced", y) if self.class_weight == "balanced"
                else np.ones(len(y)))

    def check_params(self) -> None:
        """UsageError naming the first option outside its declared range."""
        check_options(self.get_params(), self.OPTIONS, nullable=self.NULLABLE)

    def _fit_one(self, C: float, train: np.ndarray, y: np.ndarray, validation) -> tuple:
        model = LogisticRegression(C=C, max_iter=self.max_iter, tol=self.tol,
                                   class_weight=self.class_weight)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as "converged"
            model.fit(train, y)
        n_iter = int(np.max(model.n_iter_))
        record = {"C": C, "n_iter": n_iter, "converged": n_iter < self.max_iter}
        if validation is not None:
            X_val, y_val, weight = validation
            proba = model.predict_proba(X_val)
            record["val_loss"] = float(log_loss(y_val, proba, labels=self.classes_,
                                                sample_weight=weight))
            record["val_accuracy"] = float(np.mean(self.classes_[proba.argmax(axis=1)] == y_val))
        return model, record

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    @property
    def layers_(self) -> list[Layer]:
        return softmax_layers(self.coef_, self.intercept_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """float64, shape (n, n_classes)."""
        return forward(X, self.mean_, self.scale_, self.layers_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def split_coefficients(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A streamed.fit_logistic result, shape (rows, dim + 1), as softmax-form (coef_,
    intercept_): (K, dim) and (K,)."""
    return softmax_form(w[:, :-1], w[:, -1])


def softmax_layers(coef: np.ndarray, intercept: np.ndarray) -> list[Layer]:
    """Softmax-form coefficients (K, dim) and intercepts (K,) as a head's one layer (what
    `forward` takes)."""
    return [Layer(coef.T.copy(), intercept.copy(), "softmax")]


def softmax_form(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's binary (1, dim) coefficients as two symmetric softmax rows; others unchanged.

    sigmoid(z) == softmax([-z/2, z/2])[1], so the probabilities are the same.
    """
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef.copy(), intercept.copy()
