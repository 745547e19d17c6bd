"""What audit-features accepts, declared as data: its parser, `audit_store` and the checks
read these, so the command answers --help and refuses a bad value before scikit-learn is
imported. Nothing here imports more than `headstart.options`."""

from __future__ import annotations

from headstart.options import Choice, Range

NEIGHBOUR_METHODS = ("auto", "exact", "faiss")
# C of the logreg head in every fold: one value, chosen once, never tuned on the audited
# store: the middle of 1e-4..1e-2, where fit-head's validation choice on 4096 standardised
# fc2 features usually falls (headstart.classify.logreg).
AUDIT_C = 1e-3
FOLDS = 5
OPTIONS = {
    "k": Range(int, 2, 100), "folds": Range(int, 2, 20), "C": Range(float, 0, open_low=True),
    "neighbours": Choice(NEIGHBOUR_METHODS), "max_shown": Range(int, 1),
}
FLAGS = {"k": "-k", "max_shown": "--max-shown"}
# audit_store's defaults (and audit-features').
DEFAULTS = {"features": "features.h5", "seed": 0, "split": "auto", "k": 10, "folds": FOLDS,
            "C": AUDIT_C, "neighbours_method": "auto", "max_shown": 50}
