"""Shared fixtures: tiny image folders on tmp_path, and the slow VGG16 pieces built once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from headstart.features import Identity
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PETS = REPO / "examples" / "pets"
IDENTITY = Identity("VGG16", "fc2", "none (seed 0)", 224, "test", "test", "float32")


@pytest.fixture
def pets(tmp_path) -> Path:
    """A private copy of the 28 sample photos (Cat/, Dog/), safe to modify."""
    return Path(shutil.copytree(SAMPLE_PETS, tmp_path / "pets",
                                ignore=shutil.ignore_patterns("*.md")))


def small_pets(root: Path, per_class: int) -> Path:
    """A folder with the first `per_class` sample photos of each class."""
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir(parents=True)
        for src in sorted((SAMPLE_PETS / cls).glob("*.jpg"))[:per_class]:
            shutil.copy(src, root / cls / src.name)
    return root


def write_image(path: Path, size=(40, 30), color=(200, 30, 30), mode="RGB", fmt=None,
                **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt, **save)
    return path


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

    def get(spec, dtype="float32", precision="float32"):
        key = (spec, dtype, precision)
        if key not in cache:
            cache[key] = Backbone(spec, dtype=dtype, precision=precision)
        return cache[key]

    return get


@pytest.fixture
def cached_backbones(monkeypatch, backbone_cache):
    """Make extract_features reuse session-built backbones instead of building its own."""
    import headstart.extract.runner as runner

    monkeypatch.setattr(runner, "Backbone", lambda spec, **kw: backbone_cache(spec, **kw))


def random_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


class FakeBackbone:
    """A stand-in for VGG16 that makes deterministic rows from pixels in microseconds.

    It exercises everything around the model (planning, decoding, committing, resuming)
    at hundreds of images per second, so fault tests can interrupt many runs.
    """

    def __init__(self, delay_s: float = 0.0):
        from headstart.extract.backbone import pipeline_identity

        self.identity = pipeline_identity("none (seed 0)")
        self.delay_s = delay_s

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        import time

        time.sleep(self.delay_s)
        flat = pixels.reshape(len(pixels), -1)[:, :4096].astype(np.float32)
        return flat * 0.5 + 1.0


def many_images(root: Path, count: int) -> Path:
    """`count` real photo files (copies of the samples), alternating between Cat/ and Dog/."""
    cats, dogs = (sorted((SAMPLE_PETS / cls).glob("*.jpg")) for cls in ("Cat", "Dog"))
    sources = [photo for pair in zip(cats, dogs, strict=False) for photo in pair]
    for i in range(count):
        src = sources[i % len(sources)]
        dst = root / src.parent.name / f"{i:04d}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return root
