"""Test helpers shared by several test modules: tiny image folders, synthetic stores, fakes.

Imported as a plain module (`from helpers import ...`); pytest fixtures stay in conftest.py.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.features import Identity, write_store

REPO = Path(__file__).resolve().parents[1]
SAMPLE_PETS = REPO / "examples" / "pets"
TESTS = Path(__file__).resolve().parent
IDENTITY = Identity("VGG16", "fc2", "none (seed 0)", 224, "bilinear", "vgg16.preprocess_input",
                    "float32")


# ---- image folders ----------------------------------------------------------------------

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



def folder_with_reference(root: Path, count: int, bad: str, bad_bytes: bytes) -> tuple[Path, Path]:
    """`count` photos (many_images) plus one unreadable file at `bad`, and the store of an
    uninterrupted single-process run over them with the exact FakeBackbone: what every
    sharded or distributed run of the same folder must equal."""
    from headstart.extract import extract_features

    folder = many_images(root / "pets", count)
    (folder / bad).write_bytes(bad_bytes)
    reference = root / "reference.h5"
    extract_features(folder, reference, weights="none", model=FakeBackbone(), progress=False,
                     log=lambda line: None)
    return folder, reference

# ---- rows and stores --------------------------------------------------------------------

def random_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def make_store(path: Path, X: np.ndarray, y: np.ndarray, *, classes: list[str] | None = None,
               identity: Identity = IDENTITY, attrs: dict | None = None,
               first_hash: int = 0) -> Path:
    """A complete store: row i is image f"{class}/{i:05d}.jpg" with content hash first_hash + i."""
    classes = classes or [f"class{c}" for c in range(int(y.max()) + 1)]
    paths = [f"{classes[label]}/{i:05d}.jpg" for i, label in enumerate(y)]
    hashes = ["%064x" % (first_hash + i) for i in range(len(y))]
    return write_store(path, features=X, paths=paths, hashes=hashes, classes=classes,
                       identity=identity, attrs={"complete": True, "seed": 0, **(attrs or {})})


def first_usable_seed(store: Path) -> int:
    """The first seed whose 70/15/15 hash split leaves every class some image in every split.

    14 images per class (the sample photos): some seeds leave a class out of a split.
    """
    from headstart.classify.split import assign_splits, check_split
    from headstart.errors import ClassifyError
    from headstart.features import open_store

    with open_store(store) as s:
        hashes, labels, classes = s.hashes, s.labels, s.classes
    for seed in range(100):
        try:
            check_split(assign_splits(hashes, seed=seed), labels, classes, seed=seed,
                        fractions=(0.7, 0.15, 0.15), source=store)
            return seed
        except ClassifyError:
            continue
    raise AssertionError("no seed splits the sample photos")


def separable(n: int = 400, dim: int = 32, n_classes: int = 2, seed: int = 0):
    """Well-separated classes: any sound head reaches ~100% test accuracy."""
    from sklearn.datasets import make_classification  # imported here: child processes of
    # the fault tests import this module and must start fast

    X, y = make_classification(n_samples=n, n_features=dim, n_informative=min(dim, 8),
                               n_redundant=0, n_classes=n_classes, n_clusters_per_class=1,
                               class_sep=4.0, random_state=seed)
    return X.astype(np.float32), y


def random_labels(n: int = 1000, dim: int = 64, seed: int = 0):
    """fc2-like rows (non-negative, about half zeros) whose labels carry no information."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, dim), dtype=np.float32), 0)
    return X, rng.integers(0, 2, n)


# ---- fakes ------------------------------------------------------------------------------

class FakeBackbone:
    """A stand-in for VGG16 that makes deterministic rows from pixels in microseconds.

    It exercises everything around the model (planning, decoding, committing, resuming)
    at hundreds of images per second, so fault tests can interrupt many runs. Its rows
    are exact functions of the pixels, so any lost, doubled or misplaced row shows.
    """

    replicas = 1

    def __init__(self, delay_s: float = 0.0, identity: Identity | None = None):
        from headstart.extract.backbone import pipeline_identity

        self.identity = identity or pipeline_identity("none (seed 0)")
        self.delay_s = delay_s

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        flat = pixels.reshape(len(pixels), -1)[:, :4096].astype(np.float32)
        return flat * 0.5 + 1.0


def real_backbone_factory(spec, **kwargs):
    """A real Backbone, for Ray workers whose rows are compared bit for bit."""
    from headstart.extract.backbone import Backbone

    return Backbone(spec, **kwargs)


def fake_backbone_factory(spec=None, precision="float32", **kwargs) -> FakeBackbone:
    """A backbone factory for Ray workers (extract_with_ray's model_factory)."""
    return FakeBackbone(identity=fake_identity(precision))


def fake_identity(precision: str = "float32") -> Identity:
    """The identity FakeBackbone claims, in the precision a run decided."""
    from headstart.extract.backbone import pipeline_identity

    return pipeline_identity("none (seed 0)", precision=precision)


class DyingBackbone(FakeBackbone):
    """Kills its own process (SIGKILL, as an OOM-killer would) on its `after`-th batch,
    once: the first process to get there creates `marker`, later ones run normally."""

    def __init__(self, marker: str, after: int = 2, delay_s: float = 0.0,
                 precision: str = "float32"):
        super().__init__(delay_s=delay_s, identity=fake_identity(precision))
        self.marker, self.after, self.batches = marker, after, 0

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        import os
        import signal

        self.batches += 1
        if self.batches == self.after and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().embed(pixels)


def dying_backbone_factory(spec=None, *, marker: str, precision="float32",
                           **kwargs) -> DyingBackbone:
    return DyingBackbone(marker, precision=precision)


# The real extract-features command line in a child process, with the fake backbone
# (delay in seconds per batch from HEADSTART_FAKE_DELAY) swapped in for speed.
FAKE_CLI = f"""
import os, sys
sys.path.insert(0, {str(TESTS)!r})
from helpers import FakeBackbone
import headstart.extract.job as job
delay = float(os.environ.get("HEADSTART_FAKE_DELAY", "0"))
job.Backbone = lambda spec, **kw: FakeBackbone(delay_s=delay)
from headstart.extract.cli import main
sys.exit(main(sys.argv[1:]))
"""


def fake_cli(*args) -> list[str]:
    """argv for a child `extract-features` with the fake backbone."""
    import sys

    return [sys.executable, "-c", FAKE_CLI, *map(str, args)]


# ---- small real networks ----------------------------------------------------------------

def calibrated_weights(path: Path, backbone: str = "MobileNet", photos: Path = SAMPLE_PETS,
                       seed: int = 0) -> Path:
    """A weights file (include_top=False) of a seeded `backbone` whose features vary by image.

    A seeded MobileNet's activations vanish through its 28 layers (fc rows of ~1e-18), so
    heads on them see no signal. Here every BatchNormalization layer takes its moving
    statistics from one training-mode pass over `photos` (momentum 0), so in inference
    mode each layer is normalised again: a small, fast backbone with informative rows,
    made offline in a few seconds.
    """
    from headstart.extract import backbone_info, decode_pixels
    from headstart.tf_quiet import import_keras

    keras = import_keras()
    info = backbone_info(backbone)
    keras.utils.set_random_seed(seed)
    size = (info.input_size, info.input_size, 3)
    model = getattr(keras.applications, info.name)(weights=None, include_top=False,
                                                   input_shape=size)
    files = sorted(photos.glob("*/*.jpg"))
    pixels = np.stack([decode_pixels(f.read_bytes(), info.input_size) for f in files])
    module = getattr(keras.applications, info.module)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(module.preprocess_input(pixels.astype(np.float32)), training=True)
    with warnings.catch_warnings():
        # TensorFlow variables meet numpy 2's copy= protocol while saving; harmless here.
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=".*__array__ implementation doesn't accept a copy")
        model.save_weights(path)
    return path


# ---- KerasHub presets ---------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_presets(root: Path, families: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Small, randomly initialised (seed 0) KerasHub presets of every supported family,
    saved by KerasHub's own `save_to_preset` (config.json, model.weights.h5,
    image_converter.json), to be loaded through the real `from_preset` path.

    The DINOv2 one is saved at 70x70 with a 56x56 bicubic, antialiased converter, as the
    real presets are saved at their pre-training size (518) with a 224 converter, and has
    2 register tokens; the SigLIP and ViT ones squash (crop_to_aspect_ratio=False), as
    SigLIP's presets do (big_vision resizes to RES x RES without a crop).
    """
    import keras
    import keras_hub

    models, converters = keras_hub.models, keras_hub.layers
    imagenet = {"scale": [1 / (255 * s) for s in IMAGENET_STD],
                "offset": [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]}
    small = {"num_layers": 2, "num_heads": 2, "hidden_dim": 32}
    text = {"vocabulary_size": 64, "embedding_dim": 32, "hidden_dim": 32, "num_layers": 1,
            "num_heads": 2, "intermediate_dim": 64}
    keras.utils.set_random_seed(0)
    built = {
        "dinov2": (models.DINOV2Backbone(patch_size=14, intermediate_dim=64,
                                         image_shape=(70, 70, 3),
                                         position_embedding_shape=(70, 70, 3),
                                         num_register_tokens=2, **small),
                   converters.DINOV2ImageConverter(image_size=(56, 56), interpolation="bicubic",
                                                   antialias=True, **imagenet)),
        "dinov3": (models.DINOV3Backbone(patch_size=16, intermediate_dim=64,
                                         image_shape=(32, 32, 3), num_register_tokens=4,
                                         **small),
                   converters.DINOV3ImageConverter(image_size=(32, 32), **imagenet)),
        "siglip": (models.SigLIPBackbone(
                       models.SigLIPVisionEncoder(patch_size=8, intermediate_dim=64,
                                                  image_shape=(32, 32, 3), **small),
                       models.SigLIPTextEncoder(**text)),
                   converters.SigLIPImageConverter(image_size=(32, 32), interpolation="bicubic",
                                                   scale=1 / 127.5, offset=-1.0,
                                                   crop_to_aspect_ratio=False)),
        "clip": (models.CLIPBackbone(
                     models.CLIPVisionEncoder(patch_size=8, intermediate_dim=64,
                                              image_shape=(32, 32, 3), **small),
                     models.CLIPTextEncoder(**text), projection_dim=24),
                 converters.CLIPImageConverter(image_size=(32, 32), interpolation="bicubic",
                                               **imagenet)),
        "vit": (models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, mlp_dim=64, **small),
                converters.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0,
                                             crop_to_aspect_ratio=False)),
    }
    folders = {}
    for family, (backbone, converter) in built.items():
        if families is not None and family not in families:
            continue
        folders[family] = root / f"tiny_{family}"
        with warnings.catch_warnings():  # KerasHub 0.32's DINOv2 saving, numpy 2's __array__
            warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
            backbone.save_to_preset(str(folders[family]))
        converter.save_to_preset(str(folders[family]))
    keras.backend.clear_session()
    return folders


def keras_hub_rows(preset: Path, images: list[np.ndarray], layer: str | None = None
                   ) -> np.ndarray:
    """Reference rows: KerasHub's own from_preset ImageConverter and backbone, one decoded
    uint8 image (h, w, 3) at a time, given to the converter as float32 (what
    keras.utils.img_to_array makes; a uint8 input is resized back to uint8), reduced as each
    family's authors do (see headstart.extract.hub)."""
    import keras_hub

    from headstart.extract.hub import CLS, hub_info

    info = hub_info(str(preset))
    size = info.input_size
    shape = {"image_shape": (size, size, 3)} if info.family.startswith("dino") else {}
    backbone = keras_hub.models.Backbone.from_preset(str(preset), **shape)
    converter = keras_hub.layers.ImageConverter.from_preset(str(preset))
    inputs = backbone.input

    def call(x):
        return np.asarray(backbone({next(iter(inputs)): x} if isinstance(inputs, dict) else x))

    images = [converter(image[None].astype(np.float32)) for image in images]
    if info.family in ("siglip", "clip"):
        return np.concatenate([np.asarray(backbone.get_vision_embeddings(x)) for x in images])
    tokens = np.concatenate([call(x) for x in images])
    if info.family == "vit" or layer == CLS:
        return tokens[:, 0]
    return np.concatenate([tokens[:, 0], tokens[:, 1 + info.registers:].mean(axis=1)], axis=-1)
