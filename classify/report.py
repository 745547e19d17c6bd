"""Metrics of a fitted head on each split, as a dict (metrics.json) and as text tables.

Everything is computed by sklearn.metrics from integer labels and the head's
probabilities, so "accuracy" is always the categorical accuracy: argmax over all classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from headstart.classify.split import SPLITS, format_fractions


@dataclass(frozen=True)
class Scores:
    """What the metrics need of a split's probabilities (n, n_classes), n values each:
    the predicted class (int64), and the probability of the true class and of the
    predicted one (float64). A head fitted on rows read in blocks keeps these instead of
    the (n, n_classes) probabilities, so memory does not grow with the classes."""

    predicted: np.ndarray
    p_true: np.ndarray
    p_max: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, proba: np.ndarray) -> Scores:
        predicted = proba.argmax(axis=1)
        rows = np.arange(len(y))
        return cls(predicted, proba[rows, np.asarray(y)].astype(np.float64),
                   proba[rows, predicted].astype(np.float64))

    @classmethod
    def joined(cls, parts: Sequence[Scores]) -> Scores:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("predicted", "p_true", "p_max")))


def true_class_losses(p_true: np.ndarray) -> np.ndarray:
    """Each row's log loss: -log of its true class's probability, clipped to [eps, 1 - eps]
    (float64 eps), as scikit-learn's log_loss computes it."""
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(p_true, eps, 1 - eps))


def split_metrics(y: np.ndarray, proba: np.ndarray | Scores) -> dict:
    """n, accuracy, balanced accuracy and log loss of probabilities `proba` (n, n_classes),
    or of their Scores (log loss as scikit-learn's: -log of the true class's probability
    clipped to [eps, 1 - eps], averaged)."""
    if isinstance(proba, Scores):
        predicted = proba.predicted
        loss = float(np.mean(true_class_losses(proba.p_true)))
    else:
        predicted = proba.argmax(axis=1)
        loss = float(log_loss(y, proba, labels=np.arange(proba.shape[1])))
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "log_loss": loss,
    }


def class_metrics(y: np.ndarray, proba: np.ndarray | Scores, classes: Sequence[str]) -> dict:
    """Per-class precision / recall / F1 / support and the confusion matrix (rows: true class)."""
    labels = np.arange(len(classes))
    predicted = proba.predicted if isinstance(proba, Scores) else proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    }
    matrix = confusion_matrix(y, predicted, labels=labels)
    return {"per_class": per_class,
            "confusion_matrix": {"classes": list(classes), "rows": "true class",
                                 "columns": "predicted class", "counts": matrix.tolist()}}


def chance_level(y_train: np.ndarray, y_test: np.ndarray, classes: Sequence[str]) -> dict:
    """What guessing scores on test: always the training majority class, or uniformly at random."""
    majority = int(np.bincount(y_train, minlength=len(classes)).argmax())
    return {"majority_class": classes[majority],
            "majority_accuracy": float(np.mean(y_test == majority)),
            "uniform_accuracy": 1.0 / len(classes)}


def build_metrics(*, model: str, classes: Sequence[str], labels: dict[str, np.ndarray],
                  probabilities: dict[str, np.ndarray | Scores], fit_seconds: float,
                  extra: dict) -> dict:
    """The content of metrics.json; `labels` and `probabilities` (or their Scores) are
    keyed by split name."""
    metrics = {"head": model, "classes": list(classes)}
    for split in SPLITS:
        metrics[split] = split_metrics(labels[split], probabilities[split])
    metrics["test"].update(class_metrics(labels["test"], probabilities["test"], classes))
    metrics["chance"] = chance_level(labels["train"], labels["test"], classes)
    metrics["fit_seconds"] = round(float(fit_seconds), 3)
    metrics.update(extra)
    return metrics


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def table(rows: list[list[str]], align: str) -> str:
    """Plain-text table; `align` has one 'l' or 'r' per column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) if a == "l" else cell.rjust(w)
                 for cell, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def selection_text(metrics: dict) -> str:
    """'C=0.001' or 'epoch 12 of 17': what was chosen on the validation split."""
    selection = metrics.get("selection", {})
    if "C" in selection:
        return f"C={selection['C']:g}"
    if "best_epoch" in selection:
        return f"epoch {selection['best_epoch']} of {selection['epochs_run']}"
    return "-"


def notes(metrics: dict) -> list[str]:
    """Warnings about the fit itself: no convergence, still improving at the last epoch."""
    selection, head = metrics.get("selection", {}), metrics["head"]
    found = []
    if selection.get("converged") is False:
        found.append(f"note: {head} stopped at its iteration limit before converging.")
    if selection.get("best_epoch") and selection["best_epoch"] == metrics["options"].get("epochs"):
        found.append(f"note: {head} was still improving at its last epoch; try a larger --epochs.")
    return found


def split_text(split: dict) -> str:
    """'split 70/15/15 by image content, seed 0', or how the folders' split was used."""
    if split.get("source") == "given by the folders":
        text = f"split given by the folders ({', '.join(split['given'])})"
        for name, how in split.get("carved", {}).items():
            text += f"; {name} carved {how.split(':')[0]}, seed {split['seed']}"
        return text
    fractions = format_fractions(list(split["fractions"].values()))
    return f"split {fractions} by image content, seed {split['seed']}"


# Classes a terminal summary lists one by one; with more, it names the weakest and the
# most frequent confusions (every class stays in metrics.json and the plots).
PRINTED_CLASSES = 20


def format_header(metrics: dict) -> str:
    """Which store, how many images per class, how it was split."""
    split = metrics["split"]
    sizes = {name: sum(n.values()) for name, n in split["counts"].items()}
    per_class = (", ".join(f"{name} {n:,}" for name, n in sizes.items())
                 if len(sizes) <= PRINTED_CLASSES else
                 f"{len(sizes):,} classes of {min(sizes.values()):,} to "
                 f"{max(sizes.values()):,} images each")
    total = sum(sizes.values())
    header = f"{metrics['store']['path']}: {total:,} images ({per_class}); {split_text(split)}"
    return header + (f"\n{excluded_text(metrics['excluded'])}" if "excluded" in metrics else "")


def excluded_text(excluded: dict) -> str:
    """'excluded 12 images flagged in audit/issues.csv (sha256 ...): train label 5, ...'."""
    parts = [f"{split} {kind} {n:,}" for split, kinds in excluded["counts"].items()
             for kind, n in kinds.items() if n]
    kept = sum(excluded["flagged_in_test_kept"].values())
    return (f"excluded {excluded['images']:,} images flagged in {excluded['file']} (sha256 "
            f"{excluded['sha256'][:12]}, kinds {', '.join(excluded['kinds'])}) from train and "
            f"validation: {', '.join(parts) or 'none'}; test split unchanged"
            + (f" ({kept:,} flags in test kept)" if kept else ""))


def format_summary(results: Sequence[dict]) -> str:
    """Heads side by side: accuracy on every split, balanced accuracy, chance, fit time."""
    chance = results[0]["chance"]
    rows = [[""] + [m["head"] for m in results]]
    for split in SPLITS:
        rows.append([f"{split} accuracy ({results[0][split]['n']:,} images)"]
                    + [percent(m[split]["accuracy"]) for m in results])
    rows.append(["test balanced accuracy"]
                + [percent(m["test"]["balanced_accuracy"]) for m in results])
    rows.append(["test log loss"] + [f"{m['test']['log_loss']:.4f}" for m in results])
    rows.append([f"chance: majority class '{chance['majority_class']}'"]
                + [percent(m["chance"]["majority_accuracy"]) for m in results])
    rows.append([f"chance: uniform 1/{len(results[0]['classes'])}"]
                + [percent(m["chance"]["uniform_accuracy"]) for m in results])
    rows.append(["chosen on validation"] + [selection_text(m) for m in results])
    rows.append(["parameters: trainable"] + [f"{m['parameters']['trainable']:,}" for m in results])
    rows.append(["parameters: non-trainable"]
                + [f"{m['parameters']['non_trainable']:,}" for m in results])
    rows.append(["time to fit"] + [f"{m['fit_seconds']:.1f} s" for m in results])
    if all("memory" in m for m in results):
        rows.append(["peak memory (resident)"] + [
            f"{m['memory']['peak_rss_mb']:,.0f} MB"
            + (" (rows read in blocks)" if m["memory"]["streamed"] else "") for m in results])
    remarks = [line for m in results for line in notes(m)]
    return table(rows, "l" + "r" * len(results)) + "".join("\n" + line for line in remarks)


def format_details(metrics: dict) -> str:
    """Per-class precision / recall / F1 and the confusion matrix on the test split; with
    more than PRINTED_CLASSES classes, the PRINTED_CLASSES // 2 classes of lowest F1 and
    the most frequent confusions instead."""
    test, head = metrics["test"], metrics["head"]
    matrix = test["confusion_matrix"]
    names = matrix["classes"]
    shown = list(test["per_class"].items())
    many = len(names) > PRINTED_CLASSES
    if many:
        shown = sorted(shown, key=lambda item: (item[1]["f1"], item[0]))[:PRINTED_CLASSES // 2]
    rows = [["class", "precision", "recall", "F1", "support"]]
    for name, m in shown:
        rows.append([name, percent(m["precision"]), percent(m["recall"]), percent(m["f1"]),
                     f"{m['support']:,}"])
    title = (f"{head}, test split, the {len(shown)} classes of lowest F1 (all {len(names):,} "
             "in metrics.json):\n" if many else f"{head}, test split, per class:\n")
    if not many:
        grid = [["true \\ predicted"] + names]
        grid += [[name] + [f"{n:,}" for n in counts]
                 for name, counts in zip(names, matrix["counts"], strict=True)]
        return (title + table(rows, "lrrrr")
                + f"\n\n{head}, test split, confusion matrix (rows: true class):\n"
                + table(grid, "l" + "r" * len(names)))
    counts = np.asarray(matrix["counts"])
    np.fill_diagonal(counts, 0)
    flat = np.argsort(-counts, axis=None, kind="stable")[:PRINTED_CLASSES // 2]
    pairs = [["true class", "predicted", "images"]] + [
        [names[i], names[j], f"{counts[i, j]:,}"]
        for i, j in zip(*np.unravel_index(flat, counts.shape), strict=True) if counts[i, j]]
    return (title + table(rows, "lrrrr")
            + f"\n\n{head}, test split, the most frequent confusions:\n"
            + table(pairs, "llr"))
