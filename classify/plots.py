"""PNG plots a user looks at: confusion matrix, training curves, validation curve of C.

Drawn on `matplotlib.figure.Figure` objects, never through pyplot, so nothing here changes
the backend of a notebook or GUI session that imports headstart; matplotlib is imported
only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_confusion(counts: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   title: str) -> Path:
    """Counts, shaded by the share of each true class (row), class names on both axes
    (up to 60 classes; with more, class numbers in the order of `classes`)."""
    counts = np.asarray(counts)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(3 + 0.6 * len(classes), 14)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    named = len(classes) <= 60
    if named:
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, classes, rotation=45, ha="right")
        ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted class" + ("" if named else " (number)"))
    ax.set_ylabel("true class" + ("" if named else " (number)"))
    ax.set_title(title)
    if len(classes) <= 30:
        for i, j in np.ndindex(counts.shape):
            ax.text(j, i, f"{counts[i, j]:,}", ha="center", va="center",
                    color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_history(history: dict[str, list[float]], best_epoch: int, path: str | Path,
                 title: str) -> Path:
    """Loss and accuracy per epoch, train vs validation, with the restored epoch marked."""
    fig = _figure(10, 4)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[key], marker=".", label="train")
        ax.plot(epochs, history[f"val_{key}"], marker=".", label="validation")
        ax.axvline(best_epoch, color="gray", linestyle="--", label=f"restored (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return Path(path)


LABELS = {"val_loss": "validation log loss", "val_accuracy": "validation accuracy"}


def plot_selection(selection: Sequence[dict], chosen: float, path: str | Path, title: str) -> Path:
    """Validation log loss and accuracy for each regularisation strength C tried."""
    fig = _figure(10, 4)
    Cs = [r["C"] for r in selection]
    for ax, key in zip(fig.subplots(1, 2), ("val_loss", "val_accuracy"), strict=True):
        ax.semilogx(Cs, [r[key] for r in selection], marker="o")
        ax.axvline(chosen, color="gray", linestyle="--", label=f"chosen C={chosen:g}")
        ax.set_xlabel("C (inverse regularisation strength)")
        ax.set_ylabel(LABELS[key])
        ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return Path(path)
