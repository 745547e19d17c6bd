"""Heads on stored features: split, fit, evaluate, save, predict.

    from headstart.classify import fit_head, load_head
    result = fit_head("features.h5", model="logreg", seed=0)   # writes heads/logreg/
    head = load_head("heads/logreg")
    head.predict_proba(rows)          # rows: float, shape (n, 4096) -> (n, n_classes)

Importing this package imports nothing heavy: each name below is imported when first
used (PEP 562), so the commands parse their arguments before scikit-learn loads, and
TensorFlow is imported only when a softmax head is fitted or images are predicted.
"""

from importlib import import_module

# Each public name and the module that defines it.
_HOMES = {
    "FitResult": "fit", "fit_head": "fit", "fit_heads": "fit", "Head": "head",
    "HEADS": "options", "LogRegHead": "logreg", "load_head": "persist", "save_head": "persist",
    "Predictions": "predict", "predict_images": "predict", "predict_store": "predict",
    "SoftmaxHead": "softmax", "SPLITS": "split", "assign_splits": "split",
}
_ERRORS = ("ClassifyError", "HeadError")

__all__ = sorted([*_HOMES, *_ERRORS])


def __getattr__(name: str):
    if name in _ERRORS:
        return getattr(import_module("headstart.errors"), name)
    if name in _HOMES:
        return getattr(import_module(f"headstart.classify.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'headstart.classify' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
