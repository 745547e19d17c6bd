"""Fit heads on a feature store: load, split, fit on train, choose on validation, test once.

    from headstart.classify import fit_head
    result = fit_head("features.h5", model="logreg", seed=0, out_dir="heads")
    result.metrics["test"]["accuracy"]

Each head gets its own directory `out_dir/<model>/` holding the head (head.json,
weights.npz), metrics.json, split.csv, test_predictions.csv and the plots.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from headstart.classify import report
from headstart.classify.dataset import Dataset, load_dataset
from headstart.classify.exclude import check_exclude_file, excluded_rows, parse_kinds
from headstart.classify.head import Head
from headstart.classify.heads import HEADS, make_estimator, options_of
from headstart.classify.options import FIT_DEFAULTS
from headstart.classify.persist import HEAD_FOLDER, save_head
from headstart.classify.plots import plot_confusion, plot_history, plot_selection
from headstart.classify.softmax import save_keras
from headstart.classify.split import SPLITS, check_split_option, resolve_split, write_split_csv
from headstart.classify.streamed import (
    RowSource,
    block_rows_for,
    default_budget,
    fits_in_memory,
    parse_memory,
    peak_rss_mb,
    subsample_rows_for,
)
from headstart.errors import ClassifyError
from headstart.outputs import check_replaceable
from headstart.words import printable_path


@dataclass
class FitResult:
    model: str
    head: Head
    metrics: dict  # the content of metrics.json
    estimator: object  # the fitted LogRegHead or SoftmaxHead
    out_dir: Path | None

    @property
    def test_accuracy(self) -> float:
        return self.metrics["test"]["accuracy"]


def fit_head(features: str | Path = FIT_DEFAULTS["features"],
             model: str = FIT_DEFAULTS["models"][0], **options) -> FitResult:
    """Fit one head; see fit_heads for the options."""
    return fit_heads(features, models=(model,), **options)[0]


def fit_heads(
    features: str | Path = FIT_DEFAULTS["features"],
    models: Sequence[str] = FIT_DEFAULTS["models"],
    *,
    out_dir: str | Path | None = FIT_DEFAULTS["out_dir"],
    seed: int = FIT_DEFAULTS["seed"],
    split: str | Sequence[float] = FIT_DEFAULTS["split"],
    class_weight: str = FIT_DEFAULTS["class_weight"],
    plots: bool = True,
    log: Callable[[str], None] | None = None,
    exclude: str | Path | None = None,
    exclude_kinds: str | Sequence[str] | None = None,
    memory: str | int | None = None,
    **head_options,
) -> list[FitResult]:
    """Fit each head in `models` on the same split of the store `features`.

    seed: decides the split and the softmax initialisation and shuffling.
    split: "auto" (the folders' split if the store has one, else the hash rule 70/15/15),
        "given", "hash", or hash-rule fractions, e.g. "80/10/10"; see resolve_split.
    out_dir: heads are written to out_dir/<model>/; None writes nothing.
    plots: draw the PNG plots (matplotlib) into each head's directory.
    log: called with one line of progress at a time (e.g. print to stderr).
    exclude: an issues.csv from audit-features; the rows it flags with one of
        `exclude_kinds` (default: every kind) leave train and validation, the test split
        stays as it is (see headstart.classify.exclude); recorded in metrics["excluded"].
    memory: what the rows, their statistics and the model may take, in bytes or as
        "1500M", "4G" (default: half of the memory available). A store whose in-memory
        fit would need more is read in blocks (headstart.classify.streamed) by either
        head; recorded in metrics["memory"] with the peak resident memory.
    head_options: C (logreg); hidden_units, dropout, epochs, patience, batch_size,
        learning_rate, verbose (softmax). None keeps a head's default.
    """
    log = log or (lambda message: None)
    unknown = [m for m in models if m not in HEADS]
    if unknown or not models:
        raise ClassifyError(f"Unknown head {unknown or models!r}; choose from {', '.join(HEADS)}.")
    estimators = {model: make_estimator(model, seed=seed, class_weight=class_weight,
                                        **head_options) for model in models}
    check_split_option(split)
    if out_dir is not None:
        for model in models:
            check_replaceable(Path(out_dir) / model, HEAD_FOLDER, parents=True)
    if exclude is not None:
        exclude_kinds = parse_kinds(exclude_kinds)
        check_exclude_file(exclude)
    budget = (memory if isinstance(memory, int) else parse_memory(memory) if memory
              else default_budget())
    memory_record = {"budget_mb": round(budget / (1 << 20)), "streamed": False}

    def in_memory(n_rows: int, dim: int, n_classes: int) -> bool:
        """Decided before any row is read; refuses what cannot be fitted in the budget."""
        if fits_in_memory(n_rows, dim, budget):
            return True
        memory_record.update(streamed=True, block_rows=block_rows_for(budget, dim, n_classes),
                             subsample_rows=subsample_rows_for(budget, dim, n_classes))
        return False

    data = load_dataset(features, in_memory=in_memory)
    try:
        return _fit_all(data, models, estimators, out_dir=out_dir, seed=seed, split=split,
                        plots=plots, log=log, exclude=exclude, exclude_kinds=exclude_kinds,
                        memory=memory_record)
    finally:
        if memory_record["streamed"]:
            data.features.close()


def _fit_all(data: Dataset, models: Sequence[str], estimators: dict, *, out_dir, seed: int,
             split, plots: bool, log: Callable[[str], None], exclude, exclude_kinds,
             memory: dict) -> list[FitResult]:
    features = data.source
    chosen = resolve_split(hashes=data.hashes, labels=data.labels, classes=data.classes,
                           seed=seed, split=split, given=data.given_splits, source=features)
    assignment, split_info = chosen.assignment, chosen.info
    rows = {name: chosen.rows(name) for name in SPLITS}
    excluded, mask = None, None
    if exclude is not None:
        mask, excluded = excluded_rows(exclude, exclude_kinds, store_paths=data.paths,
                                       assignment=assignment, store=features)
        rows = {name: r[~mask[r]] for name, r in rows.items()}
        _check_left(data, rows, exclude)
        log(f"excluded {excluded['images']:,} images flagged in {exclude} from train and "
            "validation")
    log(f"{data.source}: {len(data.labels):,} images of {len(data.classes)} classes, "
        f"{data.dim} features; {report.split_text(split_info)}: "
        + ", ".join(f"{name} {len(r):,}" for name, r in rows.items())
        + (f"; read {memory['block_rows']:,} rows at a time to stay within --memory "
           f"{memory['budget_mb']:,}M" if memory["streamed"] else ""))
    results = []
    for model in models:
        estimator = estimators[model]
        log(f"fitting {model} on {len(rows['train']):,} images...")
        start = time.perf_counter()
        if memory["streamed"]:
            source = RowSource(data.features, memory["block_rows"])
            walk = ({"subsample_rows": memory["subsample_rows"], "seed": seed}
                    if model == "logreg" else {})
            estimator.fit_streamed(source, rows["train"], data.labels[rows["train"]],
                                   rows["validation"], data.labels[rows["validation"]], **walk)
            if getattr(estimator, "subsample_", None):
                log(f"walked over C on {estimator.subsample_['rows']:,} train images drawn "
                    f"with seed {seed}, then on all {len(rows['train']):,} from its choice: "
                    f"C={estimator.C_:g}")
        else:
            estimator.fit(data.features[rows["train"]], data.labels[rows["train"]],
                          validation_data=(data.features[rows["validation"]],
                                           data.labels[rows["validation"]]))
        seconds = time.perf_counter() - start
        head = _head(model, estimator, data, split_info)
        if memory["streamed"]:
            probabilities = {name: report.Scores.joined([
                report.Scores.of(data.labels[r][part], head.predict_proba(block))
                for part, block in source.blocks(r)]) for name, r in rows.items()}
        else:
            probabilities = {name: head.predict_proba(data.features[r])
                             for name, r in rows.items()}
        metrics = report.build_metrics(
            model=model, classes=data.classes,
            labels={name: data.labels[r] for name, r in rows.items()},
            probabilities=probabilities, fit_seconds=seconds,
            extra={"selection": _selection(estimator), "parameters": _parameters(estimator),
                   "options": head.meta["options"], "store": head.meta["store"],
                   "split": split_info, "versions": head.meta["versions"],
                   "memory": {**memory, "peak_rss_mb": round(peak_rss_mb(), 1)},
                   **({"excluded": excluded} if excluded else {})})
        directory = None
        if out_dir is not None:
            directory = Path(out_dir) / model
            _write_outputs(directory, head, estimator, metrics, data, assignment, rows,
                           probabilities["test"], plots, excluded=mask)
        results.append(FitResult(model, head, metrics, estimator, directory))
    return results


def _check_left(data: Dataset, rows: dict, exclude: str | Path) -> None:
    """Refuse an exclusion that leaves some class without train or validation images."""
    for name in ("train", "validation"):
        present = set(np.unique(data.labels[rows[name]]).tolist())
        gone = [c for i, c in enumerate(data.classes)
                if i not in present and (data.labels == i).any()]
        if gone:
            raise ClassifyError(
                f"Excluding the rows flagged in '{exclude}' leaves class '{gone[0]}' without "
                f"{name} images; delete some of its lines from that file or choose fewer "
                "--exclude-kinds.")


def _head(model: str, estimator, data: Dataset, split_info: dict) -> Head:
    store = {"path": str(data.source.resolve()), "n_images": len(data.labels),
             "dtype": data.identity.dtype, "weights_path": data.attrs.get("weights_path"),
             "extraction_seed": data.attrs.get("seed")}
    meta = {"options": options_of(estimator), "store": store,
            "split": {k: v for k, v in split_info.items() if k != "counts"},
            "versions": _versions(model)}
    return Head(model, list(data.classes), estimator.mean_, estimator.scale_, estimator.layers_,
                data.identity, meta)


def _selection(estimator) -> dict:
    if hasattr(estimator, "C_"):
        streamed = getattr(estimator, "subsample_", None)
        return {"criterion": "lowest validation log loss", "C": estimator.C_,
                "converged": estimator.converged_, "n_iter": estimator.n_iter_,
                "grid": estimator.selection_,
                **({"subsample": streamed, "every_row": estimator.every_row_} if streamed
                   else {})}
    return {"criterion": "early stopping on validation loss, best weights restored",
            "best_epoch": estimator.best_epoch_, "epochs_run": estimator.epochs_run_,
            "history": estimator.history_}


def _parameters(estimator) -> dict:
    if hasattr(estimator, "n_trainable_"):
        return {"trainable": estimator.n_trainable_, "non_trainable": estimator.n_non_trainable_}
    return {"trainable": estimator.n_parameters_, "non_trainable": 0}


def _versions(model: str) -> dict:
    names = ["headstart", "numpy", "scikit-learn"]
    names += ["keras", "tensorflow"] if model == "softmax" else []
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _write_outputs(directory: Path, head: Head, estimator, metrics: dict, data: Dataset,
                   assignment: np.ndarray, rows: dict, test_proba: np.ndarray, draw: bool,
                   excluded: np.ndarray | None = None) -> None:
    """Write the head folder aside and swap it in whole (head.json records every file)."""
    save_head(head, directory, lambda staging: _write_files(
        staging, head, estimator, metrics, data, assignment, rows, test_proba, draw, excluded))


def _write_files(directory: Path, head: Head, estimator, metrics: dict, data: Dataset,
                 assignment: np.ndarray, rows: dict, test_proba: np.ndarray, draw: bool,
                 excluded: np.ndarray | None) -> None:
    report.write_json(metrics, directory / "metrics.json")
    write_split_csv(directory / "split.csv", paths=data.paths, hashes=data.hashes,
                    labels=data.labels, classes=data.classes, assignment=assignment,
                    excluded=excluded)
    with open(directory / "test_predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class", "predicted", "probability"])
        scores = (test_proba if isinstance(test_proba, report.Scores)
                  else report.Scores.of(data.labels[rows["test"]], test_proba))
        for row, predicted, p_max in zip(rows["test"], scores.predicted, scores.p_max,
                                         strict=True):
            writer.writerow([printable_path(data.paths[row]), data.classes[data.labels[row]],
                             data.classes[int(predicted)], f"{p_max:.6f}"])
    if head.kind == "softmax":
        save_keras(estimator.model_, directory / "model.keras")
    if draw:
        title = f"{head.kind} on {data.source.name}"
        matrix = metrics["test"]["confusion_matrix"]
        accuracy = report.percent(metrics["test"]["accuracy"])
        plot_confusion(matrix["counts"], matrix["classes"], directory / "confusion_matrix.png",
                       f"{title}: test split, accuracy {accuracy}")
        if head.kind == "softmax":
            plot_history(estimator.history_, estimator.best_epoch_,
                         directory / "training_curves.png", title)
        elif len(estimator.selection_) > 1:
            plot_selection(estimator.selection_, estimator.C_,
                           directory / "validation_curve.png", title)
