"""Predict classes of new images (through the extraction pipeline recorded with the head)
or of the rows of another feature store.

The backbone is rebuilt from the head's recorded identity (model, layer, weights,
input size, resize, preprocessing), so a new image is treated exactly like the training
images; weights whose sha256 differs from the recorded one are refused by
`headstart.extract.backbone_for_identity`. TensorFlow is imported only for images.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from headstart.classify.head import Head
from headstart.errors import ClassifyError, OutputError, UsageError
from headstart.features import open_store
from headstart.outputs import replace_file
from headstart.words import printable_path, shown

OUTPUT_SUFFIXES = (".csv", ".json")


@dataclass
class Predictions:
    paths: list[str]
    probabilities: np.ndarray  # float64, shape (len(paths), n_classes)
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    true_classes: list[str] | None = None  # known when predicting a store's rows
    left_out: dict[str, int] = field(default_factory=dict)  # non-image files, by kind

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def top_k(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per image, the k most probable (class, probability), most probable first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row]
                for row, p in zip(order, self.probabilities, strict=True)]

    @property
    def accuracy(self) -> float | None:
        if self.true_classes is None or not self.paths:
            return None
        pairs = zip(self.true_classes, self.predicted, strict=True)
        return float(np.mean([truth == guess for truth, guess in pairs]))


def predict_images(head: Head, inputs: Sequence[str | Path], *, batch_size: int = 32,
                   weights_path: str | Path | None = None,
                   preset: str | Path | None = None, progress: bool = False) -> Predictions:
    """Find images in `inputs` (files or folders), embed them as the head's store did, predict.

    weights_path: the weights file, when the head's features came from one (sha256 is checked);
        default: where the store recorded it.
    preset: the KerasHub preset folder, when the features came from one that moved.
    progress: a progress bar on stderr while the images are embedded.
    Files in the folders that are not images are counted in `left_out`, by kind.
    """
    from headstart.extract import embed_files, find_images

    left_out = Counter()
    files = find_images([str(p) for p in inputs], left_out)
    if not files:
        raise ClassifyError(
            f"No images found in {', '.join(repr(str(p)) for p in inputs)}; give image files "
            "or folders that contain some."
        )
    backbone = backbone_for_head(head, weights_path, preset)
    with tqdm(total=len(files), unit="img", desc="predicting", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        embedded = embed_files(files, backbone, batch_size=batch_size, advance=bar.update)
    skipped = [(str(path), str(reason)) for path, reason in embedded.skipped]
    left = dict(left_out.most_common())
    if not len(embedded.paths):
        return Predictions([], np.zeros((0, len(head.classes))), head.classes, skipped,
                           left_out=left)
    return Predictions([str(p) for p in embedded.paths], head.predict_proba(embedded.rows),
                       head.classes, skipped, left_out=left)


def backbone_for_head(head: Head, weights_path: str | Path | None = None,
                      preset: str | Path | None = None, devices: list[str] | None = None):
    """The extraction backbone that made the head's features (a headstart.extract.Backbone).

    weights_path: the weights file, when the features came from one; default: where the
    store recorded it. preset: the KerasHub preset (folder or handle), when the features
    came from one; default: the one the store recorded. devices: as for Backbone.
    Raises WeightsError when either is missing or its sha256 differs, UsageError when one
    is given for the other kind.
    """
    from headstart.extract import backbone_for_identity

    source = _preset_of(head, weights_path, preset)
    if source is not None:
        return backbone_for_identity(head.identity, weights_path=source, devices=devices)
    return backbone_for_identity(head.identity, weights_path=weights_file(head, weights_path),
                                 devices=devices)


def head_backbone_info(head: Head, weights_path: str | Path | None = None,
                       preset: str | Path | None = None):
    """The BackboneInfo of the backbone that made the head's features, from its files only
    (a KerasHub preset's JSON; nothing built), with backbone_for_head's checks of
    `weights_path` and `preset`, so that a wrong one is refused before any work."""
    from headstart.extract import backbone_info

    source = _preset_of(head, weights_path, preset)
    return backbone_info(head.identity.model if source is None else source)


def _preset_of(head: Head, weights_path: str | Path | None,
               preset: str | Path | None) -> str | None:
    """The KerasHub preset to rebuild a head's backbone from: `preset` (it moved), else
    the folder or handle the store recorded; None for a keras.applications head.
    UsageError when --weights is given for a preset or --backbone for the others."""
    model = head.identity.model
    if model.startswith("keras_hub:"):
        if weights_path:
            raise UsageError(f"These features came from the KerasHub preset {model}, which "
                             "takes no --weights; pass --backbone PATH if its folder moved.")
        return str(preset or head.weights_path or "")
    if preset:
        raise UsageError(f"--backbone is for features made with a KerasHub preset; these came "
                         f"from {model} (pass --weights PATH if its weights file moved).")
    return None


def weights_file(head: Head, weights_path: str | Path | None = None) -> str | None:
    """The weights file to rebuild the head's backbone from: `weights_path` if given, else
    the one the store recorded when its weights identity is a file's sha256, else None."""
    if weights_path:
        return str(weights_path)
    return head.weights_path if head.identity.weights.startswith("sha256:") else None


def predict_store(head: Head, store_path: str | Path) -> Predictions:
    """Predict every row of a feature store made the same way as the head's training store."""
    with open_store(store_path) as store:
        head.check_matches(store.identity, store.dim, str(store_path))
        probabilities = head.predict_proba(store.load_features())
        truth = [store.classes[label] for label in store.labels] if store.labelled else None
        return Predictions(list(store.paths), probabilities, head.classes, list(store.skipped),
                           truth)


def format_predictions(predictions: Predictions, top_k: int = 3) -> str:
    """One line per image: path, class, probability, and the top k when there are more classes."""
    k = min(top_k, len(predictions.classes))
    paths = [shown(p) for p in predictions.paths]  # names as a terminal may print them
    width = max((len(p) for p in paths), default=4)
    lines = []
    for path, best in zip(paths, predictions.top_k(k), strict=True):
        line = f"{path.ljust(width)}  {shown(best[0][0])}  {100 * best[0][1]:6.2f}%"
        if k > 1:
            line += "   top-" + str(k) + ": " + ", ".join(f"{shown(c)} {100 * p:.2f}%"
                                                          for c, p in best)
        lines.append(line)
    return "\n".join(lines)


def check_output(path: str | Path) -> Path:
    """--output as a Path; ClassifyError/OutputError before any work if it cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ClassifyError(f"--output must end in .csv or .json, got '{path}'.")
    if path.is_dir():
        raise OutputError(f"--output '{path}' is a folder; give a file name ending in .csv "
                          "or .json.")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"The folder '{path.absolute().parent}' for --output '{path}' does "
                          "not exist; create it first.")
    return path


def write_predictions(predictions: Predictions, path: str | Path, top_k: int = 3) -> Path:
    """predictions.csv (one column per class probability) or predictions.json, by suffix.

    The file is written aside and renamed over `path` whole (an earlier file stays until
    then); path bytes that are not UTF-8 are written as \\xNN escapes.
    Raises ClassifyError (suffix) or OutputError (folder) before writing.
    """
    path = check_output(path)
    k = min(top_k, len(predictions.classes))
    paths = [printable_path(p) for p in predictions.paths]
    skipped = [(printable_path(p), r) for p, r in predictions.skipped]
    if path.suffix.lower() == ".json":
        data = {
            "classes": predictions.classes,
            "predictions": [
                {"path": p, "class": best[0][0], "probability": best[0][1],
                 "top_k": [{"class": c, "probability": q} for c, q in best],
                 "probabilities": dict(zip(predictions.classes, row.tolist(), strict=True))}
                for p, best, row in zip(paths, predictions.top_k(k),
                                        predictions.probabilities, strict=True)
            ],
            "skipped": [{"path": p, "reason": r} for p, r in skipped],
        }
        return replace_file(path, lambda tmp: tmp.write_text(
            json.dumps(data, indent=2) + "\n", encoding="utf-8"))

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "probability", "error"]
                            + [f"p({c})" for c in predictions.classes])
            for p, name, row in zip(paths, predictions.predicted, predictions.probabilities,
                                    strict=True):
                writer.writerow([p, name, f"{row.max():.6f}", ""] + [f"{q:.6f}" for q in row])
            for p, reason in skipped:
                writer.writerow([p, "", "", reason] + [""] * len(predictions.classes))

    return replace_file(path, write_csv)
