"""End to end on real photos: extract-features, fit-head --model both, predict held-out photos."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import first_usable_seed

from headstart.classify.split import read_split_csv

SAMPLE_PETS = Path(__file__).resolve().parents[1] / "examples" / "pets"


def run(command: str, *args: str) -> subprocess.CompletedProcess:
    """A console script of this environment, as a user runs it."""
    script = Path(sys.executable).with_name(command)
    return subprocess.run([str(script), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="session")
def pets_store(tmp_path_factory) -> Path:
    """The 28 sample photos (Cat/, Dog/) extracted once with seeded random weights."""
    store = tmp_path_factory.mktemp("pets-store") / "features.h5"
    result = run("extract-features", SAMPLE_PETS, "-o", store, "--weights", "none", "-q")
    assert result.returncode == 0, result.stderr
    return store


@pytest.mark.slow
def test_fit_both_then_predict_held_out_photos_agrees_with_the_heads(pets_store, tmp_path):
    seed = first_usable_seed(pets_store)
    heads = tmp_path / "heads"
    fitted = run("fit-head", "--features", pets_store, "--model", "both", "-o", heads,
                 "--seed", seed, "-q")
    assert fitted.returncode == 0, fitted.stderr
    assert "logreg" in fitted.stdout and "softmax" in fitted.stdout
    assert "absl" not in fitted.stderr and "I0000" not in fitted.stderr  # TensorFlow noise

    split = read_split_csv(heads / "logreg" / "split.csv")
    held_out = sorted(path for path, name in split.items() if name == "test")
    assert held_out
    photos = tmp_path / "new"
    for path in held_out:
        (photos / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE_PETS / path, photos / path)
    (photos / "broken.jpg").write_bytes(b"")  # unreadable: reported and skipped

    for model in ("logreg", "softmax"):
        output = tmp_path / f"{model}.json"
        predicted = run("predict", "--head", heads / model, photos, "--output", output)
        assert predicted.returncode == 0, predicted.stderr
        assert "broken.jpg" in predicted.stderr
        data = json.loads(output.read_text())
        assert [s["path"] for s in data["skipped"]] == [str(photos / "broken.jpg")]
        got = {str(Path(p["path"]).relative_to(photos)): p for p in data["predictions"]}
        assert sorted(got) == held_out
        with open(heads / model / "test_predictions.csv", newline="") as handle:
            expected = {row["path"]: row for row in csv.DictReader(handle)}
        assert sorted(expected) == held_out
        for path in held_out:
            # Same pipeline in another process with another batch: on one CPU the rows come
            # out bit-identical; the CSV keeps 6 decimals.
            p_new = got[path]["probabilities"][expected[path]["predicted"]]
            np.testing.assert_allclose(p_new, float(expected[path]["probability"]), atol=1e-5)
            if abs(p_new - 0.5) > 1e-4:
                assert got[path]["class"] == expected[path]["predicted"], (model, path)
