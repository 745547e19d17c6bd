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

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from headstart.classify.head import Layer, forward
from headstart.options import Choice, Range, check_options

# Decades from strong to weak regularisation. With ~4096 standardised fc2 features the
# best C is usually 1e-4..1e-2; tiny stores (a few hundred images) prefer larger C.
DEFAULT_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


class LogRegHead(ClassifierMixin, BaseEstimator):
    """StandardScaler + LogisticRegression(lbfgs, multinomial), C chosen on validation data.

    Learned attributes: ``mean_``, ``scale_`` (float64, shape (dim,)), ``coef_`` (float64,
    shape (n_classes, dim), in softmax form also for two classes), ``intercept_``,
    ``C_``, ``selection_`` (one dict per C tried), ``n_iter_``, ``converged_``,
    ``n_parameters_`` (coefficients scikit-learn fitted: dim + 1 for two classes).
    """

    # Allowed values, checked when fit starts and used by fit-head's parser.
    OPTIONS = {"C": Range(float, 0, open_low=True), "max_iter": Range(int, 1),
               "tol": Range(float, 0, open_low=True), "patience": Range(int, 1),
               "class_weight": Choice(("balanced",))}
    NULLABLE = ("C", "class_weight")

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
                     y_val: np.ndarray) -> LogRegHead:
        """The same fit on rows read in blocks (`headstart.classify.streamed`), one block in
        memory at a time: scikit-learn's objective and L-BFGS settings, the same walk over
        C on validation log loss, each C warm-started from the previous one's solution.

        source: a streamed.RowSource; train, validation: sorted row indices into it;
        y, y_val: their int labels. Raises UsageError for an option out of range.
        """
        from headstart.classify.streamed import fit_logistic, streamed_scaler

        self.check_params()
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        scaler = streamed_scaler(rows for _, rows in source.blocks(train))
        self.mean_ = scaler.mean_.astype(np.float64)
        self.scale_ = scaler.scale_.astype(np.float64)
        codes = np.searchsorted(self.classes_, y)
        weight = (compute_sample_weight("balanced", y) if self.class_weight == "balanced"
                  else np.ones(len(y)))
        val_weight = (compute_sample_weight("balanced", y_val)
                      if self.class_weight == "balanced" else np.ones(len(y_val)))
        dim, k = len(self.mean_), len(self.classes_)

        def blocks():
            for part, rows in source.blocks(train):
                yield rows, codes[part], weight[part]

        previous = None

        def fit_one(C: float):
            nonlocal previous
            w, n_iter = fit_logistic(blocks, k, dim, C=C, mean=self.mean_, scale=self.scale_,
                                     weight_sum=float(weight.sum()), max_iter=self.max_iter,
                                     tol=self.tol, warm_start=previous)
            previous = w
            record = {"C": C, "n_iter": n_iter, "converged": n_iter < self.max_iter}
            record.update(self._streamed_validation(source, w, validation, y_val, val_weight))
            return w, record

        w = self._walk(fit_one)
        self.n_parameters_ = int(w.size)
        self.coef_, self.intercept_ = split_coefficients(w)
        return self

    def _walk(self, fit_one):
        """Fit each C of the grid from strong to weak regularisation (or the fixed C),
        stopping once validation loss rose `patience` times in a row; keep the lowest.
        fit_one(C) -> (model, record). Sets C_, n_iter_, converged_, selection_."""
        grid = (self.C,) if self.C is not None else tuple(sorted(self.Cs))
        fits, self.selection_, rises = [], [], 0
        for C in grid:
            model, record = fit_one(C)
            loss = record.get("val_loss", 0)
            rises = rises + 1 if self.selection_ and loss > self.selection_[-1]["val_loss"] else 0
            fits.append(model)
            self.selection_.append(record)
            if rises >= self.patience:
                break
        best = min(range(len(fits)), key=lambda i: self.selection_[i].get("val_loss", 0))
        record = self.selection_[best]
        self.C_, self.n_iter_, self.converged_ = record["C"], record["n_iter"], record["converged"]
        return fits[best]

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
