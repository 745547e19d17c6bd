"""Save and load heads as JSON + plain arrays: loading never runs code from the file.

A head directory holds

    head.json      format, kind, classes, layer names and activations, the feature
                   identity (model, layer, weights, resize, preprocessing), options,
                   split rule, library versions, and the sha256 of every other file
                   of the folder ("files")
    weights.npz    mean, scale, kernel_0, bias_0[, kernel_1, bias_1]: float arrays

and, from fit-head, metrics.json, split.csv, test_predictions.csv, model.keras and plots.
The folder is written aside and swapped in whole (headstart.outputs), so its files always
come from one fit; a file whose sha256 differs from head.json's is refused on load (heads
written before "files" was recorded load as they are).

`np.load(..., allow_pickle=False)` refuses object arrays, so a tampered file cannot
execute anything, and plain arrays do not depend on the scikit-learn or Keras version
that made them (a pickled estimator would). No pickle or joblib is used.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from headstart.classify.head import ACTIVATIONS, Head, Layer
from headstart.errors import HeadError
from headstart.features import Identity, sha256_file
from headstart.outputs import FolderKind, recover, replace_folder

FORMAT = "headstart-head"
FORMAT_VERSION = 1
HEAD_JSON = "head.json"
WEIGHTS = "weights.npz"
HEAD_JSON_MAX_BYTES = 16 << 20  # a head.json is a few KB; more is not a head
HEAD_FOLDER = FolderKind(
    "head", HEAD_JSON, formats=(FORMAT,),
    names=r"head\.json|weights\.npz|metrics\.json|split\.csv|test_predictions\.csv|"
          r"model\.keras|confusion_matrix\.png|training_curves\.png|validation_curve\.png")


def save_head(head: Head, directory: str | Path,
              write_more: Callable[[Path], None] | None = None) -> Path:
    """Write a head folder at `directory`, replacing an earlier head there whole.

    write_more(folder): writes further files (metrics.json, split.csv, ...) into the new
    folder before head.json, which records their sha256. Returns head.json's path.
    Raises OutputError when `directory` holds anything but an earlier head.
    """
    def write(folder: Path) -> None:
        if write_more is not None:
            write_more(folder)
        write_head(head, folder)

    replace_folder(directory, HEAD_FOLDER, write, parents=True)
    return Path(directory) / HEAD_JSON


def write_head(head: Head, directory: Path) -> Path:
    """Write weights.npz, then head.json with the sha256 of every file in `directory`."""
    arrays = {"mean": head.mean, "scale": head.scale}
    layers = []
    for i, layer in enumerate(head.layers):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = layer.kernel, layer.bias
        layers.append({"kernel": f"kernel_{i}", "bias": f"bias_{i}",
                       "activation": layer.activation})
    with open(directory / WEIGHTS, "wb") as handle:
        np.savez(handle, **arrays)
    files = {path.name: sha256_file(path) for path in sorted(directory.iterdir())
             if path.is_file() and path.name != HEAD_JSON}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": head.kind,
            "classes": list(head.classes), "n_features": head.n_features, "weights": WEIGHTS,
            "layers": layers, "identity": asdict(head.identity), **head.meta, "files": files}
    path = directory / HEAD_JSON
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def check_member(directory: Path, name: str, meta: dict | None = None) -> Path:
    """The path of file `name` of a head folder; HeadError if head.json records another sha256.

    meta: head.json's content (read from `directory` when None). Heads written before
    head.json recorded "files" pass unchecked.
    """
    path = directory / name
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise HeadError(f"'{path}' is a link or not a regular file; a head's files are read "
                        "only from its own folder, so it is refused (fit the head again).")
    if meta is None:
        try:
            meta = json.loads(read_regular(directory / HEAD_JSON, HEAD_JSON_MAX_BYTES))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            meta = {}
    files = meta.get("files") if isinstance(meta, dict) else None
    if isinstance(files, dict) and name in files and path.is_file() \
            and sha256_file(path) != files[name]:
        raise HeadError(
            f"'{path}' does not belong to the head in '{directory / HEAD_JSON}' (another fit "
            "wrote it); fit the head again.")
    return path


def load_head(path: str | Path) -> Head:
    """A head from its directory (or its head.json); HeadError in one sentence if unusable."""
    path = Path(path)
    if not path.exists() and path.name != HEAD_JSON:
        recover(path, HEAD_FOLDER)  # a fit killed in the middle of its swap
    json_path = path / HEAD_JSON if path.is_dir() else path
    if not (json_path.exists() or json_path.is_symlink()) or json_path.is_dir():
        raise HeadError(
            f"No head at '{path}' (expected a directory with {HEAD_JSON}); fit one with "
            "`fit-head --model logreg`, which writes heads/logreg/."
        )
    try:
        meta = json.loads(read_regular(json_path, HEAD_JSON_MAX_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as error:
        raise HeadError(
            f"'{json_path}' is not a head file ({str(error)[:200]}); fit the head again."
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise HeadError(f"'{json_path}' is not a headstart head file; fit the head again.")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise HeadError(f"'{json_path}' has no valid format_version ({str(version)[:40]!r}); "
                        "fit the head again.")
    if version > FORMAT_VERSION:
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


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a regular file (not a link, FIFO or device) of at most max_bytes.

    Raises ValueError otherwise (the callers turn it into one sentence).
    """
    if path.is_symlink():
        raise ValueError(f"'{path.name}' is a symbolic link; a head's files are read only "
                         "from its own folder")
    with open(path, "rb", opener=_no_follow) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"'{path.name}' is not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"'{path.name}' is {info.st_size:,} bytes, more than the "
                             f"{max_bytes:,} a head file may hold")
        return handle.read(max_bytes + 1)[:max_bytes]


def _no_follow(path: str, flags: int) -> int:
    """os.open that never blocks on a FIFO and never follows a final symbolic link."""
    return os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))


def read_arrays(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The float arrays `names` of an .npz file, and nothing else of it, within bounds.

    Each member's npy header is read first: only float dtypes are accepted, and the data
    it declares must be in the archive (a header declaring 10^12 elements is refused, not
    allocated). Members not named are never read. Raises ValueError, KeyError.
    """
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"'{path.name}' is not a regular file in the head's folder")
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for name in dict.fromkeys(names):
            if not isinstance(name, str):
                raise ValueError(f"array name {name!r} is not a string")
            info = archive.getinfo(name + ".npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = header(member)
                if dtype.kind != "f" or dtype.hasobject:
                    raise ValueError(f"'{name}' holds {dtype}, not floats")
                count = math.prod(shape)
                if count * dtype.itemsize > info.file_size:
                    raise ValueError(f"'{name}' declares shape {shape}, more data than the "
                                     "file holds")
                data = member.read(count * dtype.itemsize)
                if len(data) != count * dtype.itemsize:
                    raise ValueError(f"'{name}' is truncated")
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(
                shape, order="F" if fortran else "C").copy()
    return arrays


def _head_from(meta: dict, directory: Path) -> Head:
    specs = meta["layers"]
    if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
        raise ValueError("'layers' must be a list of objects")
    names = ["mean", "scale"] + [spec[key] for spec in specs for key in ("kernel", "bias")]
    arrays = read_arrays(check_member(directory, WEIGHTS, meta), names)
    mean, scale = arrays["mean"], arrays["scale"]
    layers = [Layer(arrays[spec["kernel"]], arrays[spec["bias"]], spec["activation"])
              for spec in meta["layers"]]
    classes = [str(c) for c in meta["classes"]]
    _check_arrays(mean, scale, layers, len(classes))
    structural = {"format", "format_version", "kind", "classes", "n_features", "weights",
                  "layers", "identity", "files"}
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
