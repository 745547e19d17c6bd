"""One contract for every command: options checked before work, one sentence, one status."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FakeBackbone, make_store, many_images, separable

from headstart.classify import LogRegHead, SoftmaxHead, fit_heads
from headstart.classify.cli import fit_head_main, predict_main
from headstart.errors import EXIT_BAD_INPUT, UsageError
from headstart.extract import extract_features
from headstart.extract.cli import main as extract_main
from headstart.features.cli import main as info_main
from headstart.features.cli import merge_main


class CountingBackbone(FakeBackbone):
    calls = 0

    def embed(self, pixels):
        CountingBackbone.calls += 1
        return super().embed(pixels)


@pytest.mark.parametrize("option, value, message", [
    ("compression", "zip", "--compression must be one of none, gzip, lzf, got 'zip'"),
    ("precision", "float8", "--precision must be one of"),
    ("workers", 0, "--workers must be >= 1"),
    ("flush_rows", 0, "--flush-every must be >= 1"),
    ("batch_size", 2.5, "--batch-size must be a whole number"),
    ("dtype", "float64", "--dtype must be one of float32, float16"),
    ("backbone", "ResNet5O", "Unknown backbone 'ResNet5O' .*did you mean ResNet50"),
])
def test_extraction_options_are_refused_before_any_image_is_read(tmp_path, option, value,
                                                                 message):
    folder = many_images(tmp_path / "pets", 4)
    CountingBackbone.calls = 0
    with pytest.raises(UsageError, match=message):
        extract_features(folder, tmp_path / "f.h5", weights="none", model=CountingBackbone(),
                         progress=False, **{option: value})
    assert CountingBackbone.calls == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"]  # nothing written


@pytest.mark.parametrize("head, message", [
    (LogRegHead(C=-1.0), "--C must be > 0, got -1.0"),
    (LogRegHead(max_iter=0), "--max-iter must be >= 1"),
    (SoftmaxHead(dropout=1.5), "--dropout must be >= 0 and <= 0.95, got 1.5"),
    (SoftmaxHead(epochs=0), "--epochs must be >= 1"),
    (SoftmaxHead(learning_rate=0.0), "--learning-rate must be > 0"),
])
def test_head_options_are_checked_by_the_library_too(head, message):
    X, y = separable(n=40, dim=4)
    with pytest.raises(UsageError, match=message):
        head.fit(X, y, validation_data=(X, y))


def test_fit_heads_checks_options_before_reading_the_store(tmp_path):
    with pytest.raises(UsageError, match="--dropout must be"):
        fit_heads(tmp_path / "does-not-exist.h5", models=("softmax",), dropout=3.0)
    with pytest.raises(Exception, match="three positive numbers"):
        fit_heads(tmp_path / "does-not-exist.h5", split="80/20")


@pytest.mark.parametrize("command", [
    lambda p, o: info_main([p]),
    lambda p, o: fit_head_main(["--features", p, "-o", o, "-q"]),
    lambda p, o: predict_main(["--head", o, "--features", p]),
    lambda p, o: merge_main([p]),
], ids=["features-info", "fit-head", "predict", "merge-features"])
def test_the_same_bad_input_gets_the_same_status_in_every_command(tmp_path, capsys, command):
    store = make_store(tmp_path / "good.h5", *separable(n=200, dim=4), classes=["a", "b"])
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path / "h"), "-q",
                          "--no-plots"]) == 0
    capsys.readouterr()
    status = command(str(tmp_path / "missing.h5"), str(tmp_path / "h" / "logreg"))
    assert status == EXIT_BAD_INPUT
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "missing.h5" in err[0] and "Traceback" not in err[0]


def test_a_bug_is_a_traceback_not_a_user_error(tmp_path, monkeypatch):
    """Only HeadstartError means 'bad input'; a ValueError from a bug must not be hidden."""
    import headstart.classify.fit as fit

    store = make_store(tmp_path / "s.h5", *separable(n=200, dim=4))

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(fit, "load_dataset", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        fit_head_main(["--features", str(store), "-o", str(tmp_path / "h"), "-q"])


def test_extract_cli_lists_backbones_and_refuses_a_missing_folder_argument(capsys):
    assert extract_main(["--list-backbones"]) == 0
    table = capsys.readouterr().out
    for name in ("VGG16", "ResNet50", "EfficientNetV2S", "ConvNeXtTiny", "InceptionV3"):
        assert name in table
    assert extract_main(["-q"]) == EXIT_BAD_INPUT
    assert "Give the image folder" in capsys.readouterr().err


def test_a_class_too_small_names_every_such_class(tmp_path, capsys):
    X, y = separable(n=300, dim=4)
    X = np.vstack([X, np.zeros((3, 4), np.float32)])
    y = np.concatenate([y, [2, 2, 3]])
    store = make_store(tmp_path / "s.h5", X, y, classes=["Cat", "Dog", "Hamster", "Rabbit"])
    assert fit_head_main(["--features", str(store), "-o", str(tmp_path / "h"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "Classes 'Hamster' (2 images, none in" in err and "'Rabbit' (1 image, none in" in err


COMMANDS = {  # console script: its entry point (pyproject.toml) and a flag it refuses
    "extract-features": ("headstart.extract.cli", "main", ["PetImages", "--workers", "0"]),
    "features-info": ("headstart.features.cli", "main", ["--bogus"]),
    "merge-features": ("headstart.features.cli", "merge_main", ["--bogus"]),
    "fit-head": ("headstart.classify.cli", "fit_head_main", ["--model", "logistic"]),
    "predict": ("headstart.classify.cli", "predict_main", ["--head", "h", "--top-k", "0"]),
    "audit-features": ("headstart.audit.cli", "main", ["-k", "1"]),
    "export-head": ("headstart.classify.deploy_cli", "export_head_main",
                    ["--head", "h", "--formats", "onnx"]),
    "fine-tune": ("headstart.classify.deploy_cli", "fine_tune_main", ["--epochs", "0"]),
}
HEAVY = ("tensorflow", "keras", "sklearn", "scipy", "keras_hub", "matplotlib", "ray")


def test_usage_errors_and_help_import_no_heavy_library():
    """Every command answers --help and refuses a bad option before importing TensorFlow,
    Keras or scikit-learn (what made a usage error take 1.5-3.3 s): checked in a fresh
    interpreter, in sys.modules, for all eight commands."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"]["scripts"]
    assert {name: f"{module}:{main}" for name, (module, main, _) in COMMANDS.items()} == scripts
    code = f"""
import contextlib, importlib, io, json, sys
found = {{}}
for name, (module, main, bad) in {COMMANDS!r}.items():
    entry = getattr(importlib.import_module(module), main)
    codes = []
    for argv in (["--help"], bad):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                codes.append(entry(argv))
            except SystemExit as stop:
                codes.append(stop.code)
    found[name] = codes
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"codes": found, "heavy": heavy}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["codes"] == {name: [0, EXIT_BAD_INPUT] for name in COMMANDS}


@pytest.mark.parametrize("output, message", [
    ("preds.txt", "--output must end in .csv or .json, got 'preds.txt'"),
    ("nodir/p.csv", "The folder '.*nodir' for --output 'nodir/p.csv' does not exist"),
])
def test_predict_checks_its_output_before_reading_the_head_or_any_image(
        tmp_path, capsys, monkeypatch, output, message):
    import re

    monkeypatch.chdir(tmp_path)
    many_images(tmp_path / "new", 2)
    assert predict_main(["--head", "no-such-head", "new", "--output", output]) == EXIT_BAD_INPUT
    assert re.search(message, capsys.readouterr().err)
