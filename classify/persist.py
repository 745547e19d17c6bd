"""Save and load heads as JSON + plain arrays: loading never runs code from the file.

A head directory holds

    head.json      format, kind, classes, layer names and activations, the feature
                   identity (model, layer, weights, resize, preprocessing), options,
                   split rule, library versions
    weights.npz    mean, scale, kernel_0, bias_0[, kernel_1, bias_1]: float arrays

`np.load(..., allow_pickle=False)` refuses object arrays, so a tampered file cannot
execute anything, and plain arrays do not depend on the scikit-learn or Keras version
that made them (a pickled estimator would). No pickle or joblib is used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from headstart.classify.head import ACTIVATIONS, Head, Layer
from headstart.errors import HeadError
from headstart.features import Identity

FORMAT = "headstart-head"
FORMAT_VERSION = 1
HEAD_JSON = "head.json"
WEIGHTS = "weights.npz"


def save_head(head: Head, directory: str | Path) -> Path:
    """Write head.json and weights.npz into `directory` (created); returns head.json's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"mean": head.mean, "scale": head.scale}
    layers = []
    for i, layer in enumerate(head.layers):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.kernel, layer.bias
        layers.append({"kernel": f"kernel_{i}", "bias": f"bias_{i}",
                       "activation": layer.activation})
    weights = directory / WEIGHTS
    tmp = directory / f".{WEIGHTS}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, weights)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": head.kind,
            "classes": list(head.classes), "n_features": head.n_features, "weights": WEIGHTS,
            "layers": layers, "identity": asdict(head.identity), **head.meta}
    path = directory / HEAD_JSON
    tmp = directory / f".{HEAD_JSON}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # written last: a directory with head.json holds a whole head
    return path


def load_head(path: str | Path) -> Head:
    """A head from its directory (or its head.json); HeadError in one sentence if unusable."""
    path = Path(path)
    json_path = path / HEAD_JSON if path.is_dir() else path
    if not json_path.is_file():
        raise HeadError(
            f"No head at '{path}' (expected a directory with {HEAD_JSON}); fit one with "
            "`fit-head --model logreg`, which writes heads/logreg/."
        )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HeadError(
            f"'{json_path}' is not a head file ({error}); fit the head again."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HeadError(f"'{json_path}' is not a headstart head file; fit the head again.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise HeadError(
            f"'{json_path}' was written by a newer headstart (head format "
            f"{meta['format_version']}); upgrade with `pip install -U headstart`."
        )
    try:
        return _head_from(meta, json_path.parent)
    except (KeyError, TypeError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise HeadError(
            f"'{json_path.parent}' holds a damaged head ({error}); fit it again."
        ) from None


def _head_from(meta: dict, directory: Path) -> Head:
    with np.load(directory / WEIGHTS, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    mean, scale = arrays["mean"], arrays["scale"]
    layers = [Layer(arrays[spec["kernel"]], arrays[spec["bias"]], spec["activation"])
              for spec in meta["layers"]]
    classes = [str(c) for c in meta["classes"]]
    _check_arrays(mean, scale, layers, len(classes))
    structural = {"format", "format_version", "kind", "classes", "n_features", "weights",
                  "layers", "identity"}
    return Head(kind=meta["kind"], classes=classes, mean=mean, scale=scale, layers=layers,
                identity=Identity(**meta["identity"]),
                meta={k: v for k, v in meta.items() if k not in structural})


def _check_arrays(mean: np.ndarray, scale: np.ndarray, layers: list[Layer], n_classes: int) -> None:
    if mean.ndim != 1 or scale.shape != mean.shape:
        raise ValueError(f"mean {mean.shape} and scale {scale.shape} must be equal 1-d shapes")
    if not layers or layers[-1].activation != "softmax":
        raise ValueError("the last layer must be a softmax")
    width = mean.shape[0]
    for layer in layers:
        if layer.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {layer.activation!r}")
        kernel, bias = layer.kernel, layer.bias
        if kernel.ndim != 2 or kernel.shape[0] != width or bias.shape != kernel.shape[1:]:
            raise ValueError(f"layer shapes {layer.kernel.shape} / {layer.bias.shape} do not chain")
        width = layer.kernel.shape[1]
    if width != n_classes:
        raise ValueError(f"{width} outputs for {n_classes} classes")
    for array in (mean, scale, *(a for layer in layers for a in (layer.kernel, layer.bias))):
        if array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ValueError("weights must be finite floats")
    if np.any(scale <= 0):
        raise ValueError("scale must be positive")
