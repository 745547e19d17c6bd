"""KerasHub presets as backbones: the image towers of DINOv2, DINOv3, SigLIP, CLIP and ViT.

`--backbone` takes, beside the keras.applications names, a KerasHub preset: a built-in name
(`dinov2_base`), a handle (`hf://keras/dinov2_base`, `kaggle://keras/dinov2/keras/dinov2_base`)
or a local preset folder (what `save_to_preset` writes: config.json, model.weights.h5,
image_converter.json). KerasHub downloads and caches remote presets itself (kagglehub's cache,
~/.cache/kagglehub or $KAGGLEHUB_CACHE; Hugging Face's, $HF_HOME); headstart never
substitutes random weights for a preset it cannot get. A folder named like a built-in preset
is taken as the folder only when written as a path (`./dinov2_base`), as KerasHub does.

The feature of each family is the one its authors use for linear probes (FAMILIES): the
class token concatenated with the mean of the patch tokens for DINOv2 and DINOv3 (register
tokens left out), the attention-pooled embedding for SigLIP, the projected embedding for
CLIP, the class token for ViT.

Pixels: headstart's decoder (EXIF, modes, JPEG DCT scaling) makes uint8 RGB pixels at the
image's own aspect ratio; the preset's ImageConverter geometry (ConverterResize: centre crop
to the aspect ratio, or squash, or pad; its interpolation and antialias; TensorFlow's resize
kernels through `keras.ops.image.resize`) makes the model's input size from them, and its
scale and offset follow (x * scale + offset). Rows are therefore what the preset's own
`ImageConverter` and backbone give for the decoded image as float32 (as
`keras.utils.img_to_array` makes it; given uint8, the converter rounds its resized pixels
back to uint8, up to one level). They differ from the authors' pipeline on the full-size
file only by the JPEG DCT scaling (a JPEG at least twice the input size is decoded at 1/2,
1/4 or 1/8 scale).

Presets are untrusted input: before KerasHub builds anything, every class a preset's
config.json and image_converter.json name must be one of its family's (Family.classes), and
KerasHub then deserialises them with Keras' safe mode (its default). keras-hub is an extra
(`pip install 'headstart[hub]'`); nothing here imports it until a preset is named.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from headstart.errors import UsageError, WeightsError
from headstart.extract.images import DECODE

PREFIX = "keras_hub:"
INSTALL = "pip install 'headstart[hub]'"
CONVERTER_FILE = "image_converter.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
MAX_CONFIG_BYTES = 1 << 20  # a preset's JSON files are a few kB
PROBE_TIMEOUT_S = 2.0  # the connection test before a download; see fetch_file

CLS_MEAN = "cls_token+mean_patch_tokens"
CLS = "cls_token"
POOLED = "pooled_image_embedding"
PROJECTED = "projected_image_embedding"
TWO_TOWERS = ("siglip", "clip")  # image + text encoders; rows from get_vision_embeddings


@dataclass(frozen=True)
class Feature:
    """One feature a family offers: its layer name (what --layer takes) and its source."""

    layer: str
    source: str


@dataclass(frozen=True)
class Family:
    """A supported KerasHub family (KerasHub 0.32): its classes and its features.

    module: the family's module prefix; its backbone and converter live in
        `<module>_backbone` and `<module>_image_converter`.
    encoders: the image and text encoder classes a two-tower backbone nests, in
        `<module>_vision_encoder` and `<module>_text_encoder`.
    features: the default first.
    """

    backbone: str
    converter: str
    module: str
    features: tuple[Feature, ...]
    examples: str
    encoders: tuple[str, str] | None = None

    @property
    def classes(self) -> frozenset[tuple[str, str]]:
        """(module, class_name) of every class its presets may name; anything else in a
        preset's JSON files is refused before KerasHub reads them."""
        named = {(f"{self.module}_backbone", self.backbone),
                 (f"{self.module}_image_converter", self.converter), ("keras", "DTypePolicy")}
        if self.encoders:
            named |= {(f"{self.module}_vision_encoder", self.encoders[0]),
                      (f"{self.module}_text_encoder", self.encoders[1])}
        return frozenset(named)


DINO_SOURCE = ("DINOv2's linear evaluation (Oquab et al. 2023, arXiv:2304.07193; "
               "dinov2/eval/linear.py, create_linear_input with use_n_blocks=1 and "
               "use_avgpool): the last block's normalised class token concatenated with the "
               "mean of its patch tokens, register tokens left out")
FAMILIES: dict[str, Family] = {
    "dinov2": Family(
        "DINOV2Backbone", "DINOV2ImageConverter", "keras_hub.src.models.dinov2.dinov2",
        (Feature(CLS_MEAN, DINO_SOURCE),
         Feature(CLS, "the class token alone (DINOv2's linear.py without avgpool)")),
        "dinov2_small, dinov2_base, dinov2_large, dinov2_with_registers_base"),
    "dinov3": Family(
        "DINOV3Backbone", "DINOV3ImageConverter", "keras_hub.src.models.dinov3.dinov3",
        (Feature(CLS_MEAN, DINO_SOURCE + "; taken for DINOv3 (Simeoni et al. 2025, "
                 "arXiv:2508.10104) as well, its successor with the same tokens"),
         Feature(CLS, "the class token alone (the pooler output of DINOv3's Hugging Face "
                 "model)")),
        "dinov3_vit_small_lvd1689m, dinov3_vit_base_lvd1689m, dinov3_vit_large_lvd1689m"),
    "siglip": Family(
        "SigLIPBackbone", "SigLIPImageConverter", "keras_hub.src.models.siglip.siglip",
        (Feature(POOLED, "SigLIP (Zhai et al. 2023, arXiv:2303.15343): the attention-pooled "
                 "image embedding (MAP head) its zero-shot classifier compares with text; "
                 "KerasHub's get_vision_embeddings"),),
        "siglip_base_patch16_224, siglip2_base_patch16_224, siglip_so400m_patch14_384",
        ("SigLIPVisionEncoder", "SigLIPTextEncoder")),
    "clip": Family(
        "CLIPBackbone", "CLIPImageConverter", "keras_hub.src.models.clip.clip",
        (Feature(PROJECTED, "CLIP (Radford et al. 2021, arXiv:2103.00020): the class token "
                 "projected into the joint space, encode_image, what its linear probes and "
                 "clip_benchmark's use; KerasHub's get_vision_embeddings"),),
        "clip_vit_base_patch32, clip_vit_base_patch16, clip_vit_large_patch14",
        ("CLIPVisionEncoder", "CLIPTextEncoder")),
    "vit": Family(
        "ViTBackbone", "ViTImageConverter", "keras_hub.src.models.vit.vit",
        (Feature(CLS, "ViT (Dosovitskiy et al. 2021, arXiv:2010.11929, Sec. 3.1): the "
                 "[class] token after the final LayerNorm, the image representation"),),
        "vit_base_patch16_224_imagenet, vit_base_patch16_224_imagenet21k"),
}
FAMILY_OF_CLASS = {family.backbone: name for name, family in FAMILIES.items()}
# The transformer block classes of each family (KerasHub 0.32): fine-tune unfreezes the top
# ones ("blocks:N"), the top 2 and everything above them by default.
BLOCK_CLASSES = ("DINOV2Layer", "DINOV3Layer", "SigLIPEncoderLayer", "CLIPEncoderLayer",
                 "ViTEncoderBlock")
DEFAULT_UNFREEZE = "blocks:2"


def import_keras_hub():
    """keras_hub, or UsageError naming the pip install."""
    try:
        import keras_hub
    except ImportError:
        raise UsageError(f"KerasHub backbones need the keras-hub package; run `{INSTALL}`.") \
            from None
    return keras_hub


def is_path(name: str) -> bool:
    """True when `name` is written as a path (`./x`, `/x`, `a/b`, `~/x`) rather than a name."""
    return "://" not in name and (os.sep in name or name.startswith(("~", ".")))


def looks_like_preset(name: str) -> bool:
    """True for a handle (`hf://`, `kaggle://`), a folder, or a recorded `keras_hub:` model."""
    return (name.startswith(PREFIX) or "://" in name or is_path(name)
            or Path(name).expanduser().is_dir())


def builtin_presets() -> list[str]:
    """KerasHub's built-in presets of the supported families (imports keras_hub)."""
    models = import_keras_hub().models
    return sorted({name for family in FAMILIES.values()
                   for name in getattr(models, family.backbone).presets})


def source_of(name: str) -> str:
    """The preset to load for a --backbone value or a recorded `keras_hub:` model name: a
    handle or built-in name as given, a folder as an absolute path."""
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if "://" in name:
        return name
    path = Path(name).expanduser()
    if is_path(name) or (path.is_dir() and name not in _builtin_names()):
        return str(path.resolve())
    return name


def _builtin_names() -> set[str]:
    try:
        return set(builtin_presets())
    except UsageError:
        return set()


def label_of(source: str) -> str:
    """What the store records as the model: `keras_hub:` and the preset's name (a folder's
    name for a local preset, so a copy of a preset saved elsewhere records the same model)."""
    return PREFIX + (source if "://" in source or not os.path.isabs(source)
                     else Path(source).name)


def cache_folder(source: str) -> str:
    """Where KerasHub keeps downloads of `source`, for messages."""
    if source.startswith("hf://"):
        return os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    return os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")


def fetch_file(source: str, filename: str) -> str:
    """Local path of one file of a preset: in its folder, or KerasHub's download and cache.

    Before a download, one TCP connection to the hub's endpoint (HF_ENDPOINT, or Kaggle's
    API host) is tried for at most PROBE_TIMEOUT_S; without the network Hugging Face is
    switched to its offline mode (cached files still load) and Kaggle is not asked, so
    the failure comes in seconds instead of after the hub's retries (about 24 s).
    Raises WeightsError: one sentence naming the preset, the cache and the way around it.
    """
    if os.path.isabs(source):
        return _folder_file(source, filename)
    import_keras_hub()
    from keras_hub.src.utils.preset_utils import get_file  # KerasHub's download + cache

    offline = not _reachable(source)
    if offline and source.startswith("hf://"):
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at call time
    try:
        if offline and not source.startswith("hf://"):
            return _kaggle_cached(source, filename)
        return get_file(source, filename)
    except Exception as error:  # noqa: BLE001 - network, auth and missing files all land here
        cause = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}" if str(error) \
            else type(error).__name__
        state = "the network is unreachable" if offline else cause
        raise WeightsError(
            f"Could not get {filename} of the KerasHub preset '{source}' ({state}); connect "
            f"once so that KerasHub caches it in {cache_folder(source)}, or pass a copy of "
            "the preset saved elsewhere: --backbone ./FOLDER."
        ) from None


def _folder_file(folder: str, filename: str) -> str:
    path = os.path.join(folder, filename)
    if not os.path.isdir(folder):
        raise WeightsError(f"Preset folder '{folder}' does not exist; if it moved, pass its "
                           "new place as --backbone PATH.")
    try:
        info = os.stat(path)
    except OSError:
        raise WeightsError(
            f"Preset folder '{folder}' has no {filename}; a KerasHub preset folder is what "
            "`backbone.save_to_preset(folder)` and `image_converter.save_to_preset(folder)` "
            "write."
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError(f"'{path}' is not a plain file; pass a KerasHub preset folder.")
    return path


def _kaggle_cached(source: str, filename: str) -> str:
    """The file from kagglehub's cache without asking Kaggle (offline); ConnectionError if
    it is not there. A built-in name resolves to its versioned Kaggle handle first."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    handle = BUILTIN_PRESETS.get(source, {}).get("kaggle_handle", source)
    try:
        cached = Cache().load_from_cache(parse_model_handle(handle.removeprefix("kaggle://")),
                                         filename)
    except ValueError:
        cached = None
    if cached is None:
        raise ConnectionError(f"cannot reach {_endpoint(source)}, and it is not cached")
    return cached


def _endpoint(source: str) -> str:
    if source.startswith("hf://"):
        import huggingface_hub.constants

        return huggingface_hub.constants.ENDPOINT
    from kagglesdk.kaggle_env import get_endpoint, get_env

    return get_endpoint(get_env())


def _reachable(source: str) -> bool:
    parts = urlsplit(_endpoint(source))
    return _connects(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


@functools.lru_cache(maxsize=8)
def _connects(host: str, port: int) -> bool:
    """One connection test per endpoint and process: a preset's files (config, converter,
    weights) are fetched one by one, and each would otherwise wait for its own."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def read_json(source: str, filename: str) -> dict:
    """A preset's JSON file, read within MAX_CONFIG_BYTES; WeightsError if it is not one."""
    path = fetch_file(source, filename)
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    try:
        if len(data) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    except ValueError as error:
        raise WeightsError(f"'{path}' is not a KerasHub preset file ({error}); pass a "
                           "folder written by save_to_preset.") from None


def named_classes(config) -> set[tuple[str, str]]:
    """Every (module, class_name) a Keras config names, at any depth."""
    found = set()
    if isinstance(config, dict):
        if "class_name" in config:
            found.add((str(config.get("module")), str(config["class_name"])))
        for value in config.values():
            found |= named_classes(value)
    elif isinstance(config, list):
        for value in config:
            found |= named_classes(value)
    return found


def check_classes(source: str, family: str, *configs: dict) -> None:
    """UsageError unless every class the configs name belongs to `family` (Family.classes)."""
    allowed = FAMILIES[family].classes
    foreign = sorted(set().union(*(named_classes(c) for c in configs)) - allowed)
    if foreign:
        module, name = foreign[0]
        raise UsageError(
            f"KerasHub preset '{source}' names the class {name} (module {module}), which a "
            f"{family} preset does not contain; headstart loads only the classes of its "
            "supported families."
        )


@dataclass(frozen=True)
class ConverterResize:
    """A KerasHub ImageConverter's geometry, applied to one decoded image.

    Called with uint8 RGB (h, w, 3) at the image's own aspect ratio, returns float32
    (size, size, 3) in [0, 255] (bicubic may overshoot), as `keras.layers.Resizing` inside
    the converter makes it: `keras.ops.image.resize` with the converter's interpolation,
    antialias, and crop_to_aspect_ratio (centre crop) or pad_to_aspect_ratio (zeros).
    """

    size: int
    interpolation: str = "bilinear"
    antialias: bool = False
    crop_to_aspect_ratio: bool = True
    pad_to_aspect_ratio: bool = False

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return np.asarray(self.tensor(np.asarray(rgb, np.float32)), dtype=np.float32)

    def tensor(self, image):
        """The same on a float32 tensor (h, w, 3), also symbolic with unknown h and w (the
        export's `images` signature runs it inside its graph)."""
        import keras

        return keras.ops.image.resize(
            image, (self.size, self.size), interpolation=self.interpolation,
            antialias=self.antialias, crop_to_aspect_ratio=self.crop_to_aspect_ratio,
            pad_to_aspect_ratio=self.pad_to_aspect_ratio)

    @property
    def geometry(self) -> str:
        return ("centre crop to the aspect ratio" if self.crop_to_aspect_ratio
                else "pad to the aspect ratio" if self.pad_to_aspect_ratio else "squash")

    def describe(self) -> str:
        """The store's `resize` attribute for a preset."""
        return (f"{DECODE}, then the preset's ImageConverter: {self.geometry}, {self.interpolation}"
                f"{' antialiased' if self.antialias else ''} to {self.size}x{self.size} "
                "(keras.ops.image.resize)")


@functools.lru_cache(maxsize=32)
def hub_info(name: str):
    """The BackboneInfo of a KerasHub preset, read from its JSON files (no model built).

    Raises UsageError (keras-hub missing, an unsupported family, a class outside it) or
    WeightsError (the preset cannot be read, or not downloaded offline).
    """
    from headstart.extract.backbones import HUB, BackboneInfo

    source = source_of(name)
    if "://" in source or not os.path.isabs(source):
        import_keras_hub()
    config = read_json(source, CONFIG_FILE)
    family = FAMILY_OF_CLASS.get(str(config.get("class_name", "")))
    if family is None:
        raise UsageError(
            f"KerasHub preset '{source}' is a {str(config.get('class_name', 'model'))[:80]};"
            f" headstart extracts features with {', '.join(FAMILIES)} presets "
            "(--list-backbones)."
        )
    converter_file = read_json(source, CONVERTER_FILE)
    check_classes(source, family, config, converter_file)
    body, converter = config.get("config", {}), converter_file.get("config", {})
    try:
        vision = body["vision_encoder"]["config"] if family in TWO_TOWERS else body
        size = [int(v) for v in converter.get("image_size") or vision["image_shape"][:2]]
        hidden = int(vision["hidden_dim"])
        projected = int(body.get("projection_dim", hidden))
    except (KeyError, TypeError, ValueError, IndexError):
        raise WeightsError(f"KerasHub preset '{source}' has no image size or hidden_dim in its "
                           "config; pass a folder written by save_to_preset.") from None
    if size[0] != size[1]:
        raise UsageError(f"KerasHub preset '{source}' converts images to {size[0]}x{size[1]}; "
                         "headstart needs a square input size.")
    if family == "vit" and not vision.get("use_class_token", True):
        raise UsageError(f"KerasHub preset '{source}' is a ViT without a class token; "
                         "headstart stores the class token of ViT presets.")
    dims = {CLS_MEAN: 2 * hidden, CLS: hidden, POOLED: hidden, PROJECTED: projected}
    layers = tuple((f.layer, dims[f.layer]) for f in FAMILIES[family].features)
    resize = ConverterResize(size[0], str(converter.get("interpolation", "bilinear")),
                             bool(converter.get("antialias", False)),
                             bool(converter.get("crop_to_aspect_ratio", True)),
                             bool(converter.get("pad_to_aspect_ratio", False)))
    return BackboneInfo(
        label_of(source), family, "keras_hub", size[0], layers[0][0], layers[0][1], HUB,
        preset=source, scale=_channels(converter.get("scale")),
        offset=_channels(converter.get("offset")), resize=resize, layers=layers,
        registers=int(vision.get("num_register_tokens", 0)),
    )


def _channels(value) -> tuple[float, float, float] | None:
    """A converter's scale or offset as three floats (None: not applied)."""
    if value is None:
        return None
    values = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,))
    return tuple(float(v) for v in values)


def feature_dim(info, layer: str) -> int:
    """Row length of one of the preset's features; UsageError for a feature it lacks."""
    sizes = dict(info.layers)
    if layer not in sizes:
        raise UsageError(f"{info.name} offers the features {', '.join(sizes)}; "
                         f"got --layer {layer!r}.")
    return sizes[layer]


def weights_identity(info) -> str:
    """The store's weights identity of a preset: the sha256 of its model.weights.h5 and of
    its config.json, "sha256:<hex> config sha256:<hex>" (hashed once per process)."""
    from headstart.extract.backbone import file_identity

    weights = file_identity(fetch_file(info.preset, WEIGHTS_FILE))
    config = file_identity(fetch_file(info.preset, CONFIG_FILE))
    return f"{weights} config {config}"


def preprocess(info, pixels: np.ndarray) -> np.ndarray:
    """Resized pixels (n, s, s, 3) -> float32: the converter's x * scale + offset."""
    x = np.asarray(pixels, dtype=np.float32)
    if info.scale is not None:
        x = x * np.asarray(info.scale, dtype=np.float32)
    if info.offset is not None:
        x = x + np.asarray(info.offset, dtype=np.float32)
    return x


def load_backbone(info, precision: str):
    """The KerasHub backbone of the preset with its weights, every layer in `precision`.

    Raises WeightsError when the preset cannot be loaded.
    """
    keras_hub = import_keras_hub()
    try:
        backbone = keras_hub.models.Backbone.from_preset(
            info.preset, load_weights=True, dtype=precision, **_image_shape_override(info))
    except Exception as error:  # noqa: BLE001 - KerasHub raises many types here
        raise WeightsError(
            f"Could not load the KerasHub preset '{info.preset}' ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else ''}); pass a folder "
            "written by save_to_preset."
        ) from None
    return _in_precision(backbone, precision)


def _in_precision(backbone, precision: str):
    """The backbone with every layer in `precision`. KerasHub 0.32's from_preset(dtype=)
    sets the outer model's policy; where a nested layer kept its saved dtype, the model is
    rebuilt from its config with every dtype replaced and the loaded weights copied over
    (tests/test_extract_hub.py checks every family)."""
    layers = backbone._flatten_layers(include_self=True)
    if all(layer.dtype_policy.name == precision for layer in layers):
        return backbone
    config = _with_dtype(backbone.get_config(), precision)
    rebuilt = type(backbone).from_config(config)
    rebuilt.set_weights(backbone.get_weights())
    return rebuilt


def _with_dtype(config, precision: str):
    """A copy of a Keras config with every layer's "dtype" set to `precision`."""
    if isinstance(config, dict):
        return {key: precision if key == "dtype" else _with_dtype(value, precision)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_with_dtype(value, precision) for value in config]
    return config


def _image_shape_override(info) -> dict:
    """DINOv2 presets are saved at their pre-training size (518) with a 224 converter: the
    backbone is built at the converter's size (KerasHub interpolates DINOv2's position
    embeddings; DINOv3's are rotary)."""
    if not info.family.startswith("dino"):
        return {}
    config = read_json(info.preset, CONFIG_FILE).get("config", {})
    size = info.input_size
    if tuple(config.get("image_shape", (size, size))[:2]) == (size, size):
        return {}
    return {"image_shape": (size, size, 3)}


def feature_model(keras, info, layer: str | None, precision: str = "float32"):
    """Frozen keras.Model: converted float pixels (n, s, s, 3) -> rows (n, dim) of `layer`.

    DINOv2/v3 and ViT: the backbone's token sequence (n, 1 + registers + patches, hidden),
    after its final LayerNorm, reduced to the class token [:, 0] (CLS) or to [class token,
    mean of the patch tokens] (CLS_MEAN). SigLIP and CLIP: the backbone's own
    get_vision_embeddings (SigLIP's attention-pooled embedding, CLIP's projected class
    token; the text tower is loaded but never called). Raises UsageError for an unknown
    feature, WeightsError.
    """
    layer = layer or info.layer
    feature_dim(info, layer)
    backbone = load_backbone(info, precision)
    size = info.input_size
    pixels = keras.Input(shape=(size, size, 3), name="images")
    if info.family in TWO_TOWERS:
        return _frozen(keras.Model(pixels, backbone.get_vision_embeddings(pixels),
                                   name=f"{info.family}_features"))
    inputs = backbone.input  # DINOv3's input is named pixel_values, the others' images
    tokens = backbone({next(iter(inputs)): pixels} if isinstance(inputs, dict) else pixels)
    if layer == CLS:
        rows = tokens[:, 0, :]
    else:
        patches = tokens[:, 1 + info.registers:, :]
        rows = keras.ops.concatenate([tokens[:, 0, :], keras.ops.mean(patches, axis=1)],
                                     axis=-1)
    return _frozen(keras.Model(pixels, rows, name=f"{info.family}_features"))


def _frozen(model):
    model.trainable = False
    return model


def describe(info) -> str:
    """The store's preprocessing attribute for a preset."""
    def numbers(values):
        return "none" if values is None else "[" + ", ".join(f"{v:.8g}" for v in values) + "]"

    return (f"keras_hub ImageConverter: x * scale {numbers(info.scale)} + offset "
            f"{numbers(info.offset)}")


def format_table() -> str:
    """The KerasHub families as text: family, example presets, features and their source."""
    lines = ["KerasHub presets (--backbone NAME, hf://..., kaggle://... or ./PRESET_FOLDER; "
             f"{INSTALL}); input size, resize and normalisation from the preset's "
             "ImageConverter:"]
    for name, family in FAMILIES.items():
        lines.append(f"  {name:7s} {family.examples}")
        for index, feature in enumerate(family.features):
            default = "default" if index == 0 else "--layer"
            lines.append(f"          {default:8s}{feature.layer}: {feature.source}")
    return "\n".join(lines)
