"""Build the heads one can fit from their declared options (headstart.classify.options)."""

from __future__ import annotations

from headstart.classify.logreg import LogRegHead
from headstart.classify.options import CLASS_WEIGHTS, HEADS
from headstart.classify.options import HEAD_OPTIONS as OPTIONS
from headstart.classify.softmax import SoftmaxHead
from headstart.errors import UsageError

__all__ = ["CLASS_WEIGHTS", "HEADS", "OPTIONS", "make_estimator", "options_of"]


def make_estimator(name: str, *, seed: int = 0, class_weight: str = "none",
                   **options) -> LogRegHead | SoftmaxHead:
    """An unfitted head. `options` may mix both heads' options; each head takes its own.

    A value of None means "the head's default".
    """
    if name not in HEADS:
        raise UsageError(f"Unknown head {name!r}; choose one of {', '.join(HEADS)}.")
    if class_weight not in CLASS_WEIGHTS:
        raise UsageError(
            f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}."
        )
    unknown = sorted(set(options) - {key for keys in OPTIONS.values() for key in keys})
    if unknown:
        raise TypeError(f"Unknown head options: {', '.join(unknown)}.")
    mine = {k: v for k, v in options.items() if k in OPTIONS[name] and v is not None}
    weight = None if class_weight == "none" else class_weight
    if name == "logreg":
        estimator = LogRegHead(class_weight=weight, **mine)
    else:
        estimator = SoftmaxHead(class_weight=weight, seed=seed, **mine)
    estimator.check_params()
    return estimator


def options_of(estimator: LogRegHead | SoftmaxHead) -> dict:
    """The estimator's hyper-parameters as plain JSON values (`verbose` left out)."""
    params = estimator.get_params()
    params.pop("verbose", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
