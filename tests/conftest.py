"""Fixtures: tiny image folders on tmp_path, and the slow Keras pieces built once per session.

Helpers that tests import live in helpers.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SAMPLE_PETS


@pytest.fixture
def pets(tmp_path) -> Path:
    """A private copy of the 28 sample photos (Cat/, Dog/), safe to modify."""
    return Path(shutil.copytree(SAMPLE_PETS, tmp_path / "pets",
                                ignore=shutil.ignore_patterns("*.md")))


@pytest.fixture(scope="session")
def seeded_weights(tmp_path_factory) -> Path:
    """A Keras weights file of a seeded VGG16(weights=None): the offline stand-in for ImageNet."""
    path = tmp_path_factory.mktemp("weights") / "vgg16-seed0.weights.h5"
    code = (
        "import keras, sys; keras.utils.set_random_seed(0); "
        "keras.applications.VGG16(weights=None).save_weights(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def backbone_cache():
    """Backbones built once per weights spec: building VGG16 is the slow part of the suite."""
    from headstart.extract.backbone import Backbone

    cache: dict = {}

    def get(spec, dtype="float32", precision="float32", **kwargs):
        key = (spec, dtype, precision, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = Backbone(spec, dtype=dtype, precision=precision, **kwargs)
        return cache[key]

    return get


@pytest.fixture
def cached_backbones(monkeypatch, backbone_cache):
    """Make extract_features reuse session-built backbones instead of building its own."""
    import headstart.extract.job as job

    monkeypatch.setattr(job, "Backbone", lambda spec, **kw: backbone_cache(spec, **kw))


@pytest.fixture(scope="session")
def deployable(tmp_path_factory):
    """The sample photos extracted with a small real backbone, and a softmax head fitted on them.

    MobileNet (3.2M parameters) with weights from `helpers.calibrated_weights`: what the
    export and fine-tune tests build, save, convert and train, seconds each on a CPU.
    Fields: weights, images, store, heads (a folder with softmax/), seed.
    """
    from types import SimpleNamespace

    from helpers import calibrated_weights, first_usable_seed

    from headstart.classify.cli import fit_head_main
    from headstart.extract.cli import main as extract_main

    root = tmp_path_factory.mktemp("deployable")
    weights = calibrated_weights(root / "mobilenet.weights.h5")
    images = Path(shutil.copytree(SAMPLE_PETS, root / "pets",
                                  ignore=shutil.ignore_patterns("*.md")))
    store = root / "features.h5"
    # float32 rows: the exported formats are checked against predict to 1e-4, which
    # bfloat16 rows of another batch shape do not meet (test_classify_export.py checks those)
    assert extract_main([str(images), "-o", str(store), "--backbone", "MobileNet",
                         "--weights", str(weights), "--precision", "float32", "-q"]) == 0
    seed = first_usable_seed(store)
    heads = root / "heads"
    assert fit_head_main(["--features", str(store), "--model", "softmax", "-o", str(heads),
                          "--seed", str(seed), "--no-plots", "-q"]) == 0
    return SimpleNamespace(weights=weights, images=images, store=store, heads=heads, seed=seed)
