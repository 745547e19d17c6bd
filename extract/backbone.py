"""The frozen backbone that turns pixels into feature rows; the only module that runs one.

Which network and layer: a row of `headstart.extract.backbones.BACKBONES` (VGG16 fc2 by
default), or any named layer of it (`layer=`), whose 4-d output is average-pooled over
height and width. Weights come from one of three places, each with an identity recorded
in the store so rows made differently are never mixed: Keras' ImageNet download
("imagenet"), a local Keras weights file ("sha256:<hex>" of the file), or seeded random
init ("none (seed N)", for smoke tests only). TensorFlow is imported when a Backbone is
built, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.errors import UsageError, WeightsError
from headstart.extract.backbones import (
    DEFAULT_BACKBONE,
    BackboneInfo,
    backbone_info,
    keras_name,
)
from headstart.extract.images import RESIZE
from headstart.extract.precision import AUTO, CHOICES, choose, this_machine
from headstart.features.schema import Identity, sha256_file
from headstart.tf_quiet import import_keras, native_stderr_captured

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class WeightsSpec:
    """Where the backbone's weights come from: "imagenet", "none" (seeded) or a file path."""

    source: str
    seed: int = 0

    @classmethod
    def parse(cls, value: str, seed: int = 0) -> WeightsSpec:
        """Raises WeightsError when `value` is neither a keyword nor an existing file."""
        if value in ("imagenet", "none"):
            return cls(value, seed)
        path = Path(value)
        if not path.is_file():
            raise WeightsError(
                f"Weights file '{value}' does not exist; pass --weights imagenet, --weights none, "
                "or the path of a Keras weights file for the backbone (.h5 or .weights.h5)."
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
        return file_identity(self.source)

    @classmethod
    def from_identity(cls, weights: str, path: str | None = None) -> WeightsSpec:
        """The spec that reproduces a recorded weights identity (`path` for "sha256:" ones)."""
        if weights == "imagenet":
            return cls("imagenet")
        if weights.startswith("none (seed "):
            return cls("none", int(weights[len("none (seed "):-1]))
        if not path or not Path(path).is_file():
            raise WeightsError(
                f"The features were made with a weights file ({weights[:19]}...) that is not at "
                f"'{path}'; pass --weights PATH to that file."
            )
        spec = cls.parse(path)
        found = spec.identity_string()
        if found != weights:
            raise WeightsError(
                f"Weights file '{path}' has {found[:19]}..., but the features were made "
                f"with {weights[:19]}...; pass the weights file used for extraction."
            )
        return spec


def file_identity(path: str) -> str:
    """"sha256:<hex>" of a weights file, hashed once per process while it is unchanged."""
    info = os.stat(path)
    return f"sha256:{_file_hash(str(path), info.st_size, info.st_mtime_ns)}"


@functools.lru_cache(maxsize=8)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file (hundreds of MB), hashed once per process while unchanged."""
    return sha256_file(path)


def pipeline_identity(weights: str, dtype: str = "float32", precision: str = "float32", *,
                      backbone: str = DEFAULT_BACKBONE, layer: str | None = None) -> Identity:
    """The identity of rows made by this module with the given weights identity string.

    layer: None for the backbone's default feature; another layer name costs one build of
        the (untrained) architecture to learn whether its output is pooled.
    A KerasHub preset carries its own weights: `weights` is ignored and the identity
    records the sha256 of its model.weights.h5 and config.json, and the converter's resize.
    """
    info = backbone_info(backbone)
    layer = layer or info.layer
    if info.preset:
        from headstart.extract import hub

        hub.feature_dim(info, layer)
        return Identity(info.name, layer, hub.weights_identity(info), info.input_size,
                        info.resize.describe(), info.preprocessing, dtype, precision, "none")
    pooling = info.pooling if layer == info.layer else _layer_pooling(info.name, layer)
    return Identity(info.name, layer, weights, info.input_size, RESIZE, info.preprocessing,
                    dtype, precision, pooling)


@functools.lru_cache(maxsize=16)
def _layer_pooling(name: str, layer: str) -> str:
    keras = import_keras()
    model, _ = _feature_output(keras, backbone_info(name), WeightsSpec("none"), layer)
    return "avg" if len(model.output.shape) == 4 else "none"


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


def build_application(keras, info: BackboneInfo, spec: WeightsSpec, *, include_top: bool,
                      pooling: str | None = None):
    """keras.applications.<info.name>(include_top=..., pooling=...) with the requested weights.

    Raises WeightsError when the ImageNet download fails or a weights file does not fit.
    """
    builder = getattr(keras.applications, info.name)
    shape = {} if include_top else {"input_shape": (info.input_size, info.input_size, 3),
                                    "pooling": pooling}
    if spec.source == "none":
        keras.utils.set_random_seed(spec.seed)
        return builder(weights=None, include_top=include_top, **shape)
    if spec.source == "imagenet":
        try:
            return builder(weights="imagenet", include_top=include_top, **shape)
        except Exception as error:  # noqa: BLE001 - download failures come in many types
            raise WeightsError(
                f"Could not get the ImageNet {info.name} weights ({type(error).__name__}: "
                f"{error}); connect to the internet once (Keras caches them in "
                "~/.keras/models) or pass --weights PATH to a local copy."
            ) from None
    try:
        return builder(weights=spec.source, include_top=include_top, **shape)
    except Exception as error:  # noqa: BLE001 - wrong layout, wrong format, damaged file
        top = "with" if include_top else "without"
        raise WeightsError(
            f"Could not load weights from '{spec.source}' ({type(error).__name__}: {error}); "
            f"expected Keras {info.name} weights {top} the top layers "
            f"(include_top={include_top})."
        ) from None


def _feature_output(keras, info: BackboneInfo, spec: WeightsSpec, layer: str | None):
    """(model from preprocessed pixels to the layer's raw output, include_top used)."""
    layer = layer or info.layer
    if info.preset:
        from headstart.extract import hub

        policy = keras.mixed_precision.global_policy().name
        return hub.feature_model(keras, info, layer, policy), False
    if layer == info.layer:
        if info.top:  # VGG's fc2
            base = build_application(keras, info, spec, include_top=True)
            return keras.Model(base.input, base.get_layer(layer).output), True
        # Keras' own linear-probe feature; for ConvNeXt its LayerNorm follows the pooling,
        # so pooling the unpooled output would not give the same rows.
        base = build_application(keras, info, spec, include_top=False, pooling="avg")
        return keras.Model(base.input, base.output), False
    for include_top in (False, True):
        base = build_application(keras, info, spec, include_top=include_top)
        names = [lay.name for lay in base.layers]
        if layer in names:
            return keras.Model(base.input, base.get_layer(layer).output), include_top
    raise UsageError(
        f"{info.name} has no layer '{layer}'; its last layers are "
        f"{', '.join(names[-6:])} (all: `keras.applications.{info.name}().summary()`)."
    )


def build_feature_model(keras, info: BackboneInfo, spec: WeightsSpec, layer: str | None = None):
    """Frozen Keras model: preprocessed float pixels (n, s, s, 3) -> rows (n, dim).

    A 4-d layer output is averaged over height and width (GlobalAveragePooling2D, what
    `pooling="avg"` does in keras.applications).
    """
    raw, _ = _feature_output(keras, info, spec, layer)
    output = raw.output
    if len(output.shape) == 4:
        output = keras.layers.GlobalAveragePooling2D(name="avg_pool_features")(output)
    elif len(output.shape) != 2:
        raise UsageError(f"Layer '{layer}' of {info.name} has output shape {output.shape}; "
                         "choose a layer with a 2-d or 4-d output.")
    model = keras.Model(raw.input, output, name=f"{keras_name(info.name)}_features")
    model.trainable = False
    return model


class Backbone:
    """A frozen backbone up to its feature layer: uint8 pixels in, float32 rows out.

    backbone: a name from the table (default VGG16); layer: default the table's.
    precision: "float32", a Keras mixed-precision policy ("mixed_float16" for GPUs,
    "mixed_bfloat16" for CPUs with bf16 units), or "auto" for the fastest this machine
    has (`headstart.extract.precision.choose`); rows always come back as float32.
    batch_size: images per model call and per device. Every call has this shape (a
    shorter batch is padded with black images whose rows are dropped), so the compiled
    function is traced once and a row depends only on its image, not on the batch it
    came in: rows are bit-identical however the images are grouped, for the same
    batch_size, precision and machine (tests/test_extract_batching.py).
    devices: where to run; default every visible GPU, else the default device. With
    several devices each holds its own copy of the weights and each batch is split
    across them (data parallel, no weights moved per batch).
    Raises UsageError (unknown backbone, layer or precision) or WeightsError.
    """

    def __init__(self, spec: WeightsSpec, *, backbone: str = DEFAULT_BACKBONE,
                 layer: str | None = None, dtype: str = "float32", precision: str = "float32",
                 devices: list[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        if precision not in CHOICES:
            raise UsageError(f"--precision must be one of {', '.join(CHOICES)}, "
                             f"got {precision!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"--batch-size must be a whole number of at least 1, "
                             f"got {batch_size!r}.")
        keras = import_keras()
        import tensorflow as tf

        if precision == AUTO:
            precision = choose(this_machine()).precision
        self.spec = spec
        self.info = backbone_info(backbone)
        self.identity = pipeline_identity(spec.identity_string(), dtype, precision,
                                          backbone=self.info.preset or self.info.name,
                                          layer=layer)
        self.batch_size = batch_size
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        self.devices = devices or [None]
        size = self.info.input_size
        signature = [tf.TensorSpec([batch_size, size, size, 3], tf.float32)]
        self._forwards = []
        with _precision_policy(precision), native_stderr_captured():
            for device in self.devices:
                with _on(tf, device):
                    model = self._build(keras, spec, layer, first=not self._forwards)
                self._forwards.append(self._compiled(tf, model, device, signature,
                                                     per_image=bool(self.info.preset)))
        # What the decoding threads apply to each image (None: PIL's squash to size).
        self.resize = self.info.resize
        if self.info.preset:
            from headstart.extract import hub

            self._preprocess = functools.partial(hub.preprocess, self.info)
        else:
            self._preprocess = getattr(keras.applications, self.info.module).preprocess_input

    def _build(self, keras, spec: WeightsSpec, layer: str | None, *, first: bool):
        """The feature model; copies for further devices take the first one's weights."""
        if first:
            self.model = build_feature_model(keras, self.info, spec, layer)
            return self.model
        copy = keras.models.clone_model(self.model)
        copy.set_weights(self.model.get_weights())
        copy.trainable = False
        return copy

    @staticmethod
    def _compiled(tf, model, device, signature, *, per_image: bool = False):
        # One graph, traced once for the one batch shape: an eager call was measured ~10%
        # slower, and a graph per shape would let a row depend on its batch's size.
        # per_image (KerasHub transformers): a Dense layer over (batch x tokens, hidden)
        # gives a row that depends on its place in the batch (float32: up to 1e-6 on the
        # tiny ViT and DINOv2 of the tests), so each image is its own call inside the
        # graph, batch_size of them in flight (tf.map_fn), and a row depends only on its
        # image.
        row = tf.TensorSpec(model.output.shape[1:], tf.float32)

        def one(image):
            return tf.cast(model(image[None], training=False)[0], tf.float32)

        def forward(x):
            with _on(tf, device):
                if per_image:
                    return tf.map_fn(one, x, fn_output_signature=row,
                                     parallel_iterations=signature[0].shape[0])
                return tf.cast(model(x, training=False), tf.float32)

        return tf.function(forward, input_signature=signature)

    @property
    def input_size(self) -> int:
        return self.identity.input_size

    @property
    def feature_dim(self) -> int:
        return int(self.model.output.shape[-1])

    @property
    def weights_path(self) -> str | None:
        return self.spec.path

    @property
    def replicas(self) -> int:
        return len(self._forwards)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (n, s, s, 3) RGB -> float32 model input, by the backbone's preprocess_input
        (a KerasHub preset: its ImageConverter's scale and offset)."""
        return self._preprocess(np.asarray(pixels, dtype=np.float32))

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: shape (n, s, s, 3), RGB, s = input_size, any n: uint8, or float32 from a
        KerasHub preset's converter resize -> float32, (n, feature_dim); computed
        batch_size images per call and device (see the class)."""
        pixels = np.asarray(pixels)
        n = len(pixels)
        if n == 0:
            return np.zeros((0, self.feature_dim), np.float32)
        step = self.batch_size
        calls = -(-n // step)
        padded = np.zeros((calls * step, *pixels.shape[1:]), pixels.dtype)
        padded[:n] = pixels
        batches = self.preprocess(padded).reshape(calls, step, *pixels.shape[1:])
        # Dispatch a call on every device before reading any result, so the devices run
        # together; with one device, reading each result in turn costs nothing extra.
        pending = [self._forwards[i % self.replicas](batch) for i, batch in enumerate(batches)]
        return np.concatenate([result.numpy() for result in pending])[:n]


def _on(tf, device: str | None):
    return tf.device(device) if device else contextlib.nullcontext()


def backbone_for_identity(identity: Identity, weights_path: str | None = None, *,
                          batch_size: int = DEFAULT_BATCH_SIZE,
                          devices: list[str] | None = None) -> Backbone:
    """Rebuild exactly the backbone that produced rows of `identity`, or say why not.

    The backbone runs in the recorded precision also on hardware that lacks it (bfloat16
    without AMX/AVX512-BF16, float16 without a GPU): slower, emulated by TensorFlow, but
    the same arithmetic, so new images get the rows the head was fitted on.
    weights_path: needed only when the identity names a weights file by hash; the file
    given must hash to the recorded value. For a KerasHub preset it is the preset (folder or
    handle) the store recorded, or another copy of it. devices: as for Backbone.
    Raises WeightsError or UsageError.
    """
    if identity.model.startswith("keras_hub:"):
        return _hub_backbone_for_identity(identity, weights_path, batch_size, devices)
    expected = pipeline_identity(identity.weights, identity.dtype, identity.precision,
                                 backbone=identity.model, layer=identity.layer)
    if identity != expected:
        raise WeightsError(
            "The features were made by another pipeline ("
            + "; ".join(identity.differences(expected)) + "); re-extract them with this version."
        )
    spec = WeightsSpec.from_identity(identity.weights, weights_path)
    return Backbone(spec, backbone=identity.model, layer=identity.layer, dtype=identity.dtype,
                    precision=identity.precision, batch_size=batch_size, devices=devices)


def _hub_backbone_for_identity(identity: Identity, preset: str | None, batch_size: int,
                               devices: list[str] | None = None) -> Backbone:
    """The Backbone of a KerasHub store's identity, from `preset` (the folder or handle the
    store recorded, or a copy of it), checked against the recorded sha256 of its weights
    and config and its converter before any model is built."""
    from headstart.extract.hub import hub_info, source_of

    info = hub_info(preset or source_of(identity.model))
    layer = identity.layer if identity.layer in dict(info.layers) else info.layer
    expected = pipeline_identity("imagenet", identity.dtype, identity.precision,
                                 backbone=info.preset, layer=layer)
    if os.path.isabs(info.preset):  # a folder's name may change; its contents may not
        expected = dataclasses.replace(expected, model=identity.model)
    if identity != expected:
        raise WeightsError(
            f"KerasHub preset '{info.preset}' makes other rows than the features' ("
            + "; ".join(identity.differences(expected)) + "); pass --backbone PATH of the "
            "preset folder used for extraction."
        )
    return Backbone(WeightsSpec("imagenet"), backbone=info.preset, layer=identity.layer,
                    dtype=identity.dtype, precision=identity.precision, batch_size=batch_size,
                    devices=devices)
