"""The frozen VGG16 that turns pixels into fc2 rows; the only module that imports TensorFlow.

Weights come from one of three places, each with an identity recorded in the store so
rows made differently are never mixed: Keras' ImageNet download ("imagenet"), a local
Keras weights file ("sha256:<hex>" of the file), or seeded random init ("none (seed N)",
for smoke tests only).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..features.schema import Identity, sha256_file
from ..tf_quiet import import_keras
from .images import RESIZE

MODEL = "VGG16"
LAYER = "fc2"
INPUT_SIZE = 224
PREPROCESSING = (
    "keras.applications.vgg16.preprocess_input (caffe: RGB->BGR, ImageNet means subtracted)"
)
FEATURE_DIM = 4096
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class WeightsError(ValueError):
    """Weights that cannot be found, loaded, or matched to a store; the message says what to do."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where the backbone's weights come from: "imagenet", "none" (seeded) or a file path."""

    source: str
    seed: int = 0

    @classmethod
    def parse(cls, value: str, seed: int = 0) -> WeightsSpec:
        if value in ("imagenet", "none"):
            return cls(value, seed)
        path = Path(value)
        if not path.is_file():
            raise WeightsError(
                f"Weights file '{value}' does not exist; pass --weights imagenet, --weights none, "
                "or the path of a Keras VGG16 weights file (.h5 or .weights.h5)."
            )
        return cls(str(path.resolve()), seed)

    @property
    def path(self) -> str | None:
        return None if self.source in ("imagenet", "none") else self.source

    def identity_string(self) -> str:
        """What the store records: stable across machines for the same weights."""
        if self.source == "imagenet":
            return "imagenet"
        if self.source == "none":
            return f"none (seed {self.seed})"
        info = os.stat(self.source)
        return f"sha256:{_file_hash(self.source, info.st_size, info.st_mtime_ns)}"


@functools.lru_cache(maxsize=8)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file (553 MB), hashed once per process while it is unchanged."""
    return sha256_file(path)


def pipeline_identity(weights: str, dtype: str = "float32", precision: str = "float32") -> Identity:
    """The identity of rows made by this module with the given weights identity string."""
    return Identity(MODEL, LAYER, weights, INPUT_SIZE, RESIZE, PREPROCESSING, dtype, precision)


@contextlib.contextmanager
def _precision_policy(precision: str):
    """Build layers under a Keras dtype policy without leaving it set for later models."""
    keras = import_keras()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_vgg16(spec: WeightsSpec):
    """keras.applications.VGG16(include_top=True) with the requested weights."""
    keras = import_keras()
    if spec.source == "none":
        keras.utils.set_random_seed(spec.seed)
        return keras.applications.VGG16(weights=None, include_top=True)
    if spec.source == "imagenet":
        try:
            return keras.applications.VGG16(weights="imagenet", include_top=True)
        except Exception as error:  # noqa: BLE001 - download failures come in many types
            raise WeightsError(
                f"Could not get the ImageNet VGG16 weights ({type(error).__name__}: {error}); "
                "connect to the internet once (Keras caches them in ~/.keras/models) "
                "or pass --weights PATH to a local copy."
            ) from None
    try:
        return keras.applications.VGG16(weights=spec.source, include_top=True)
    except Exception as error:  # noqa: BLE001 - wrong layout, wrong format, damaged file
        raise WeightsError(
            f"Could not load weights from '{spec.source}' ({type(error).__name__}: {error}); "
            "expected Keras VGG16 weights with the top layers (include_top=True)."
        ) from None


class Backbone:
    """Frozen VGG16 up to fc2: uint8 pixels in, float32 rows of 4096 out.

    precision: "float32", or a Keras mixed-precision policy ("mixed_float16" for GPUs,
    "mixed_bfloat16" for CPUs with bf16 units); rows always come back as float32.
    devices: where to run; default every visible GPU, else the default device. With
    several devices each holds its own copy of the weights and each batch is split
    across them (data parallel, no weights moved per batch), so `embed` takes a global
    batch of devices x per-device batch.
    """

    def __init__(self, spec: WeightsSpec, *, dtype: str = "float32", precision: str = "float32",
                 devices: list[str] | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        keras = import_keras()
        import tensorflow as tf

        self.spec = spec
        self.identity = pipeline_identity(spec.identity_string(), dtype, precision)
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        self.devices = devices or [None]
        signature = [tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)]
        self._forwards = []
        with _precision_policy(precision):
            for device in self.devices:
                with tf.device(device) if device else contextlib.nullcontext():
                    model = self._build(keras, spec, first=not self._forwards)
                self._forwards.append(self._compiled(tf, model, device, signature))
        self._preprocess = keras.applications.vgg16.preprocess_input

    def _build(self, keras, spec: WeightsSpec, *, first: bool):
        """The fc2 model; copies for further devices take the first one's weights."""
        if first:
            vgg = build_vgg16(spec)
            self.model = keras.Model(vgg.input, vgg.get_layer(LAYER).output, name="vgg16_fc2")
            self.model.trainable = False
            return self.model
        copy = keras.models.clone_model(self.model)
        copy.set_weights(self.model.get_weights())
        copy.trainable = False
        return copy

    @staticmethod
    def _compiled(tf, model, device, signature):
        # One compiled graph for every batch size: an eager call was measured ~30% slower.
        def forward(x):
            with tf.device(device) if device else contextlib.nullcontext():
                return tf.cast(model(x, training=False), tf.float32)

        return tf.function(forward, input_signature=signature)

    @property
    def _forward(self):
        return self._forwards[0]

    @property
    def weights_path(self) -> str | None:
        return self.spec.path

    @property
    def replicas(self) -> int:
        return len(self._forwards)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: uint8, shape (n, 224, 224, 3), RGB -> float32, shape (n, 4096)."""
        batch = self._preprocess(np.asarray(pixels, dtype=np.float32))
        if self.replicas == 1:
            return self._forward(batch).numpy()
        # Dispatch every slice before reading any result, so the devices run together.
        slices = np.array_split(batch, self.replicas)
        pending = [forward(part) for forward, part in zip(self._forwards, slices, strict=True)
                   if len(part)]
        return np.concatenate([result.numpy() for result in pending])


def backbone_for_identity(identity: Identity, weights_path: str | None = None) -> Backbone:
    """Rebuild exactly the backbone that produced rows of `identity`, or say why not.

    weights_path: needed only when the identity names a weights file by hash; the file
    given must hash to the recorded value.
    """
    expected = pipeline_identity(identity.weights, identity.dtype, identity.precision)
    if identity != expected:
        raise WeightsError(
            "The features were made by another pipeline ("
            + "; ".join(identity.differences(expected)) + "); re-extract them with this version."
        )
    weights = identity.weights
    if weights == "imagenet":
        spec = WeightsSpec("imagenet")
    elif weights.startswith("none (seed "):
        spec = WeightsSpec("none", int(weights[len("none (seed "):-1]))
    else:
        if not weights_path or not Path(weights_path).is_file():
            raise WeightsError(
                f"The features were made with a weights file ({weights[:19]}...) that is not at "
                f"'{weights_path}'; pass --weights PATH to that file."
            )
        spec = WeightsSpec.parse(weights_path)
        found = spec.identity_string()
        if found != weights:
            raise WeightsError(
                f"Weights file '{weights_path}' has {found[:19]}..., but the features were made "
                f"with {weights[:19]}...; pass the weights file used for extraction."
            )
    return Backbone(spec, dtype=identity.dtype, precision=identity.precision)
