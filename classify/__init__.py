"""Heads on stored features: split, fit, evaluate, save, predict.

    from headstart.classify import fit_head, load_head
    result = fit_head("features.h5", model="logreg", seed=0)   # writes heads/logreg/
    head = load_head("heads/logreg")
    head.predict_proba(rows)          # rows: float, shape (n, 4096) -> (n, n_classes)

Importing this package does not import TensorFlow; only fitting a softmax head and
predicting images do.
"""

from headstart.classify.fit import FitResult, fit_head, fit_heads
from headstart.classify.head import Head
from headstart.classify.heads import HEADS
from headstart.classify.logreg import LogRegHead
from headstart.classify.persist import load_head, save_head
from headstart.classify.predict import Predictions, predict_images, predict_store
from headstart.classify.softmax import SoftmaxHead
from headstart.classify.split import SPLITS, assign_splits
from headstart.errors import ClassifyError, HeadError

__all__ = [
    "HEADS", "SPLITS", "ClassifyError", "FitResult", "Head", "HeadError", "LogRegHead",
    "Predictions", "SoftmaxHead", "assign_splits", "fit_head", "fit_heads", "load_head",
    "predict_images", "predict_store", "save_head",
]
