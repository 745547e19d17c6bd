"""fit-head and predict from the command line: outputs, exit status, one-sentence errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import IDENTITY, make_store, random_labels, separable

import headstart.extract
from headstart.classify.cli import fit_head_main, predict_main
from headstart.features import write_store

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    X, y = separable(n=300, dim=16)
    return make_store(tmp_path_factory.mktemp("cli") / "features.h5", X, y, classes=["Cat", "Dog"])


@pytest.fixture(scope="module")
def heads(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads")
    assert fit_head_main(["--features", str(store), "--model", "both", "-o", str(out),
                          "--epochs", "20", "-q"]) == 0
    return out


def one_sentence(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].endswith("."), err
    return lines[0]


def test_fit_head_writes_the_head_the_report_and_the_plots(store, tmp_path, capsys):
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    for text in ("test accuracy", "test balanced accuracy", "chance: majority class",
                 "chance: uniform 1/2", "parameters: trainable", "time to fit", "precision",
                 "true \\ predicted", "C="):
        assert text in out
    head = tmp_path / "logreg"
    assert {p.name for p in head.iterdir()} >= {
        "head.json", "weights.npz", "metrics.json", "split.csv", "test_predictions.csv",
        "confusion_matrix.png", "validation_curve.png"}
    assert (head / "confusion_matrix.png").read_bytes().startswith(PNG)
    metrics = json.loads((head / "metrics.json").read_text())
    assert set(metrics) >= {"train", "validation", "test", "chance", "fit_seconds", "split",
                            "selection", "parameters", "store", "versions"}
    assert metrics["test"]["confusion_matrix"]["classes"] == ["Cat", "Dog"]
    assert set(metrics["test"]["per_class"]) == {"Cat", "Dog"}
    assert metrics["split"]["seed"] == 0 and metrics["split"]["fractions"]["train"] == 0.7
    counts = metrics["split"]["counts"]
    assert sum(sum(c.values()) for c in counts.values()) == 300


def test_both_heads_side_by_side(heads, capsys):
    assert (heads / "softmax" / "training_curves.png").read_bytes().startswith(PNG)
    assert (heads / "softmax" / "model.keras").is_file()
    metrics = json.loads((heads / "softmax" / "metrics.json").read_text())
    assert metrics["parameters"] == {"trainable": 16 * 2 + 2, "non_trainable": 0}
    assert len(metrics["selection"]["history"]["val_loss"]) == metrics["selection"]["epochs_run"]


def test_both_prints_one_table_with_two_columns(store, tmp_path, capsys):
    assert fit_head_main(["--features", str(store), "--model", "both", "-o", str(tmp_path),
                          "--epochs", "5", "--no-plots", "-q"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+logreg\s+softmax$", out, re.M)
    assert re.search(r"^test accuracy \(\d+ images\)\s+\d+\.\d\d%\s+\d+\.\d\d%$", out, re.M)
    assert not list(tmp_path.rglob("*.png"))


def test_assert_min_accuracy(store, tmp_path, capsys):
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path), "-q", "--no-plots",
                          "--assert-min-accuracy", "0.9"]) == 0
    random_store = make_store(tmp_path / "random.h5", *random_labels(n=400))
    assert fit_head_main(["--features", str(random_store), "-o", str(tmp_path), "-q",
                          "--no-plots", "--assert-min-accuracy", "0.9"]) == 1
    assert "is below --assert-min-accuracy 90.00%" in one_sentence(capsys.readouterr().err)


def write_bad_store(path: Path, kind: str) -> Path:
    X, y = separable(n=120, dim=8)
    if kind == "unfinished":
        return make_store(path, X, y, attrs={"complete": False,
                                             "command": f"extract-features pets -o {path}"})
    if kind == "one class":
        return make_store(path, X[y == 0], y[y == 0] * 0, classes=["Cat"])
    if kind == "too few":
        keep = (y == 0) | (np.arange(len(y)) < 8)
        return make_store(path, X[keep], y[keep], classes=["Cat", "Dog"])
    if kind == "nan":
        X[5, 3] = np.nan
        X[9, 0] = np.inf
        return make_store(path, X, y)
    if kind == "empty class":
        return make_store(path, X, y, classes=["Cat", "Dog", "Fox"])
    if kind == "not hdf5":
        path.write_text("hello")
        return path
    return path  # "missing"


@pytest.mark.parametrize("kind, message", [
    ("missing", "No feature store at '.*features.h5': run `extract-features DIR -o"),
    ("unfinished", "is unfinished.*run `extract-features pets -o .*` again to finish it"),
    ("one class", "has images of one class only \\('Cat'\\)"),
    ("too few", "Class 'Dog' has only \\d images .* puts none in"),
    ("nan", "has 2 feature rows with NaN or infinite values \\(first: 'class\\d/00005.jpg'\\)"),
    ("empty class", "Class 'Fox' has no images in .*add images to it or remove the folder"),
    ("not hdf5", "is not a readable HDF5 file"),
])
def test_bad_stores_get_one_sentence_and_status_2(tmp_path, capsys, kind, message):
    path = write_bad_store(tmp_path / "features.h5", kind)
    assert fit_head_main(["--features", str(path), "-o", str(tmp_path / "heads"), "-q"]) == 2
    assert re.search(message, one_sentence(capsys.readouterr().err))
    assert not (tmp_path / "heads").exists()


@pytest.mark.parametrize("args, message", [
    (["--split", "80/20"], "three positive numbers"),
    (["--model", "svm"], "invalid choice: 'svm'"),
    (["--dropout", "1.5"], "must be >= 0 and <= 0.95"),
    (["--assert-min-accuracy", "90"], "must be >= 0 and <= 1"),
])
def test_bad_options_are_refused(store, tmp_path, capsys, args, message):
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path), "-q", *args]) == 2
    assert message in capsys.readouterr().err


def test_fit_head_logreg_never_imports_tensorflow(store, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from headstart.classify.cli import fit_head_main
        status = fit_head_main(["--features", {str(store)!r}, "-o", {str(tmp_path)!r}, "-q"])
        loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        sys.exit(f"imported {{loaded}}" if loaded else status)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------- predict


def test_predict_features_of_a_store(heads, store, tmp_path, capsys):
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    assert predict_main(["--head", str(heads / "logreg"), "--features", str(store),
                         "--output", str(csv_path)]) == 0
    captured = capsys.readouterr()
    assert "accuracy against the store's labels" in captured.err
    assert len(captured.out.splitlines()) == 300 and "Cat/00000.jpg" in captured.out
    header = csv_path.read_text().splitlines()[0]
    assert header == "path,class,probability,error,p(Cat),p(Dog)"
    assert predict_main(["--head", str(heads / "softmax"), "--features", str(store),
                         "--output", str(json_path), "--top-k", "1"]) == 0
    data = json.loads(json_path.read_text())
    assert data["classes"] == ["Cat", "Dog"] and len(data["predictions"]) == 300
    first = data["predictions"][0]
    assert len(first["top_k"]) == 1 and first["class"] == first["top_k"][0]["class"]
    assert sum(first["probabilities"].values()) == pytest.approx(1.0)


def test_predict_refuses_a_store_that_does_not_match_the_head(heads, tmp_path, capsys):
    X, y = separable(n=60, dim=16)
    other = IDENTITY.__class__(**{**IDENTITY.as_attrs(), "layer": "fc1"})
    path = make_store(tmp_path / "fc1.h5", X, y, identity=other)
    assert predict_main(["--head", str(heads / "logreg"), "--features", str(path)]) == 2
    assert re.search(r"The logreg head was fitted on VGG16 fc2 features; '.*fc1.h5' holds "
                     r"VGG16 fc1 features; fit a head on this store instead\.",
                     one_sentence(capsys.readouterr().err))
    path = make_store(tmp_path / "wide.h5", np.zeros((60, 20), np.float32), y)
    assert predict_main(["--head", str(heads / "logreg"), "--features", str(path)]) == 2
    assert "expects 16 features per image but" in one_sentence(capsys.readouterr().err)


@pytest.mark.parametrize("args, message", [
    (["--head", "nowhere", "x.jpg"], "No head at 'nowhere'"),
    (["--head", "HEAD"], "Give images or folders to predict, or --features STORE"),
    (["--head", "HEAD", "EMPTY"], "No images found in '.*empty'; give image files or folders"),
])
def test_predict_usage_errors(heads, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    names = {"HEAD": str(heads / "logreg"), "EMPTY": str(tmp_path / "empty")}
    args = [names.get(a, a) for a in args]
    assert predict_main(args) == 2
    assert re.search(message, one_sentence(capsys.readouterr().err))


class FakeBackbone:
    """Stands in for VGG16: rows are looked up by file name."""

    def __init__(self, identity, weights_path=None):
        self.identity, self.weights_path = identity, weights_path


def fake_extract(monkeypatch, rows: dict[str, np.ndarray], calls: list):
    def backbone_for_identity(identity, weights_path=None, devices=None):
        calls.append((identity, weights_path))
        if weights_path == "wrong.h5":
            raise headstart.extract.WeightsError("Weights file 'wrong.h5' has sha256:0000..., but "
                                                 "the features were made with sha256:1111....")
        return FakeBackbone(identity, weights_path)

    def embed_files(files, backbone, batch_size=32, advance=lambda n: None):
        advance(len(files))
        good = [str(f) for f in files if Path(f).name in rows]
        bad = [(str(f), "cannot identify image file") for f in files if Path(f).name not in rows]
        matrix = np.array([rows[Path(f).name] for f in good] or np.zeros((0, 16)), np.float32)
        return headstart.extract.Embedded(good, matrix, bad)

    monkeypatch.setattr(headstart.extract, "backbone_for_identity", backbone_for_identity)
    monkeypatch.setattr(headstart.extract, "embed_files", embed_files)


def test_predict_images_skips_unreadable_ones(heads, store, tmp_path, monkeypatch, capsys):
    from headstart.features import open_store

    with open_store(store) as s:
        X, y = s.load_features(), s.labels
    cat, dog = X[np.flatnonzero(y == 0)[0]], X[np.flatnonzero(y == 1)[0]]
    folder = tmp_path / "new"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "broken.jpg"):
        (folder / name).write_bytes(b"not really")
    (folder / "notes.txt").write_text("not an image")  # left out, and counted
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "a.jpg").write_bytes(b"hidden")
    calls = []
    fake_extract(monkeypatch, {"a.jpg": cat, "b.jpg": dog}, calls)
    out_csv = tmp_path / "predictions.csv"
    assert predict_main(["--head", str(heads / "logreg"), str(folder),
                         "--output", str(out_csv)]) == 0
    captured = capsys.readouterr()
    assert "\rpredicting:" in captured.err  # the progress bar
    assert captured.err.rstrip().endswith(
        "predict: 2 predicted, 1 skipped; left out 2 files that are not images: .txt 1, "
        f"hidden 1; written to {out_csv}.")
    assert calls == [(IDENTITY, None)]  # the head's recorded identity; no weights file needed
    assert "skipped '" in captured.err and "broken.jpg': cannot identify image file" in captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 2 and lines[0].split()[1] == "Cat" and lines[1].split()[1] == "Dog"
    rows = out_csv.read_text().splitlines()
    assert len(rows) == 4 and rows[-1].endswith("broken.jpg,,,cannot identify image file,,")


def test_predict_passes_weights_and_reports_refusals(heads, tmp_path, monkeypatch, capsys):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    calls = []
    fake_extract(monkeypatch, {}, calls)
    assert predict_main(["--head", str(heads / "logreg"), str(image), "--weights", "wrong.h5"]) == 2
    assert calls[0][1] == "wrong.h5"
    assert "Weights file 'wrong.h5' has sha256" in one_sentence(capsys.readouterr().err)
    assert predict_main(["--head", str(heads / "logreg"), str(image)]) == 2
    assert "None of the given images could be read" in capsys.readouterr().err


def test_write_store_helper_is_in_sync_with_the_store(tmp_path):
    """The synthetic stores these tests use are valid stores (guards the helper itself)."""
    path = write_store(tmp_path / "s.h5", features=np.zeros((2, 3)), paths=["a/1.jpg", "b/2.jpg"],
                       hashes=["0" * 64, "1" * 64], classes=["a", "b"], identity=IDENTITY,
                       attrs={"complete": True})
    from headstart.features import open_store

    with open_store(path) as s:
        assert s.labels.tolist() == [0, 1]


def test_predict_finds_the_recorded_weights_file_unless_told(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    X, y = separable(n=200, dim=16)
    identity = replace(IDENTITY, weights="sha256:" + "ab" * 32)
    store = make_store(tmp_path / "f.h5", X, y, identity=identity,
                       attrs={"weights_path": "/models/vgg16.weights.h5"})
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path / "heads"), "-q",
                          "--no-plots"]) == 0
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    calls = []
    fake_extract(monkeypatch, {"a.jpg": X[0]}, calls)
    head = str(tmp_path / "heads" / "logreg")
    assert predict_main(["--head", head, str(image)]) == 0
    assert predict_main(["--head", head, str(image), "--weights", "moved.weights.h5"]) == 0
    assert calls == [(identity, "/models/vgg16.weights.h5"), (identity, "moved.weights.h5")]
