"""The backbones headstart can extract features with: one table that every stage reads.

Each entry is a `keras.applications` model with its own `preprocess_input`, its native
input size and its standard linear-probe feature:

* VGG16 / VGG19: `fc2`, the 4096-d second fully connected layer (include_top=True);
* every other model: the global-average-pooled output of its last convolutional stage,
  which is what `keras.applications.<Model>(include_top=False, pooling="avg")` returns.

Feature sizes and layer names were read from Keras 3's own models (weights=None);
`tests/test_extract_backbones.py` checks one model of each family against Keras, and
`bench/run.py --only backbones` builds every entry. KerasHub presets get their row from
the preset's own files (`headstart.extract.hub.hub_info`). Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from headstart.errors import UsageError

DEFAULT_BACKBONE = "VGG16"

# What each keras.applications module's preprocess_input does (Keras source, 3.x).
CAFFE = "caffe: RGB->BGR, ImageNet means subtracted"
TF = "tf: scaled to [-1, 1]"
TORCH = "torch: scaled to [0, 1], ImageNet mean and std normalised"
INSIDE = "identity: the model rescales and normalises inside"
HUB = "keras_hub: the preset's ImageConverter scale and offset"


@dataclass(frozen=True)
class BackboneInfo:
    """One row of the table.

    name: the keras.applications attribute, e.g. "ResNet50".
    family: models sharing a builder module; the tests check one model per family.
    module: the keras.applications submodule holding `preprocess_input`.
    input_size: native square input size in pixels.
    layer: the default feature layer, as recorded in the store's `layer` attribute.
    feature_dim: length of the default feature row.
    mode: what `preprocess_input` does (one of CAFFE, TF, TORCH, INSIDE).
    top: build with include_top=True for the default layer (the fc layers of VGG).

    KerasHub presets (`headstart.extract.hub`) fill the rest: preset (what to load: a
    handle, a built-in name or an absolute folder), scale and offset (the ImageConverter's,
    per RGB channel, None when not applied), resize (its geometry, a ConverterResize),
    layers ((feature, size) pairs it offers) and registers (register tokens between the
    class token and the patch tokens).
    """

    name: str
    family: str
    module: str
    input_size: int
    layer: str
    feature_dim: int
    mode: str
    top: bool = False
    preset: str | None = None
    scale: tuple[float, float, float] | None = None
    offset: tuple[float, float, float] | None = None
    resize: Callable[[np.ndarray], np.ndarray] | None = None
    layers: tuple[tuple[str, int], ...] = ()
    registers: int = 0

    @property
    def pooling(self) -> str:
        """How the default layer becomes a row: "none" (a vector) or "avg" (spatial mean)."""
        return "none" if self.top or self.preset else "avg"

    @property
    def preprocessing(self) -> str:
        """The store's `preprocessing` attribute for this backbone."""
        if self.preset:
            from headstart.extract.hub import describe

            return describe(self)
        return f"keras.applications.{self.module}.preprocess_input ({self.mode})"


def _row(name, family, module, size, layer, dim, mode, top=False) -> BackboneInfo:
    return BackboneInfo(name, family, module, size, layer, dim, mode, top)


# The default feature is always the include_top=False model's output (its last layer
# named below). MobileNetV3's and ConvNeXt's last layers are auto-named by Keras (the
# name depends on what was built before in the process), so their rows say what it is.
NOTOP = "include_top=False output"
EFF = "top_activation"

BACKBONES: dict[str, BackboneInfo] = {row.name: row for row in (
    _row("VGG16", "vgg", "vgg16", 224, "fc2", 4096, CAFFE, top=True),
    _row("VGG19", "vgg", "vgg19", 224, "fc2", 4096, CAFFE, top=True),
    _row("ResNet50", "resnet", "resnet", 224, "conv5_block3_out", 2048, CAFFE),
    _row("ResNet101", "resnet", "resnet", 224, "conv5_block3_out", 2048, CAFFE),
    _row("ResNet152", "resnet", "resnet", 224, "conv5_block3_out", 2048, CAFFE),
    _row("ResNet50V2", "resnet_v2", "resnet_v2", 224, "post_relu", 2048, TF),
    _row("ResNet101V2", "resnet_v2", "resnet_v2", 224, "post_relu", 2048, TF),
    _row("ResNet152V2", "resnet_v2", "resnet_v2", 224, "post_relu", 2048, TF),
    _row("InceptionV3", "inception", "inception_v3", 299, "mixed10", 2048, TF),
    _row("InceptionResNetV2", "inception", "inception_resnet_v2", 299, "conv_7b_ac", 1536, TF),
    _row("Xception", "xception", "xception", 299, "block14_sepconv2_act", 2048, TF),
    _row("MobileNet", "mobilenet", "mobilenet", 224, "conv_pw_13_relu", 1024, TF),
    _row("MobileNetV2", "mobilenet", "mobilenet_v2", 224, "out_relu", 1280, TF),
    _row("MobileNetV3Small", "mobilenet_v3", "mobilenet_v3", 224, NOTOP, 576, INSIDE),
    _row("MobileNetV3Large", "mobilenet_v3", "mobilenet_v3", 224, NOTOP, 960, INSIDE),
    _row("DenseNet121", "densenet", "densenet", 224, "relu", 1024, TORCH),
    _row("DenseNet169", "densenet", "densenet", 224, "relu", 1664, TORCH),
    _row("DenseNet201", "densenet", "densenet", 224, "relu", 1920, TORCH),
    _row("EfficientNetB0", "efficientnet", "efficientnet", 224, EFF, 1280, INSIDE),
    _row("EfficientNetB1", "efficientnet", "efficientnet", 240, EFF, 1280, INSIDE),
    _row("EfficientNetB2", "efficientnet", "efficientnet", 260, EFF, 1408, INSIDE),
    _row("EfficientNetB3", "efficientnet", "efficientnet", 300, EFF, 1536, INSIDE),
    _row("EfficientNetB4", "efficientnet", "efficientnet", 380, EFF, 1792, INSIDE),
    _row("EfficientNetB5", "efficientnet", "efficientnet", 456, EFF, 2048, INSIDE),
    _row("EfficientNetB6", "efficientnet", "efficientnet", 528, EFF, 2304, INSIDE),
    _row("EfficientNetB7", "efficientnet", "efficientnet", 600, EFF, 2560, INSIDE),
    _row("EfficientNetV2B0", "efficientnet_v2", "efficientnet_v2", 224, EFF, 1280, INSIDE),
    _row("EfficientNetV2B1", "efficientnet_v2", "efficientnet_v2", 240, EFF, 1280, INSIDE),
    _row("EfficientNetV2B2", "efficientnet_v2", "efficientnet_v2", 260, EFF, 1408, INSIDE),
    _row("EfficientNetV2B3", "efficientnet_v2", "efficientnet_v2", 300, EFF, 1536, INSIDE),
    _row("EfficientNetV2S", "efficientnet_v2", "efficientnet_v2", 384, EFF, 1280, INSIDE),
    _row("EfficientNetV2M", "efficientnet_v2", "efficientnet_v2", 480, EFF, 1280, INSIDE),
    _row("EfficientNetV2L", "efficientnet_v2", "efficientnet_v2", 480, EFF, 1280, INSIDE),
    _row("ConvNeXtTiny", "convnext", "convnext", 224, NOTOP, 768, INSIDE),
    _row("ConvNeXtSmall", "convnext", "convnext", 224, NOTOP, 768, INSIDE),
    _row("ConvNeXtBase", "convnext", "convnext", 224, NOTOP, 1024, INSIDE),
    _row("ConvNeXtLarge", "convnext", "convnext", 224, NOTOP, 1536, INSIDE),
    _row("ConvNeXtXLarge", "convnext", "convnext", 224, NOTOP, 2048, INSIDE),
)}


def keras_name(name: str) -> str:
    """`name` as a valid Keras model/scope name: letters, digits and _.- only, lower case
    ("keras_hub:dinov2_base" -> "keras_hub_dinov2_base")."""
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name.lower())


def backbone_info(name: str) -> BackboneInfo:
    """The table row of `name`: a keras.applications name (exact spelling, any case
    accepted) or a KerasHub preset (`headstart.extract.hub`: a built-in name, an `hf://` or
    `kaggle://` handle, a local preset folder, or a recorded `keras_hub:` model).

    Raises UsageError naming the closest choices when the backbone is unknown (and the
    pip install when it is a KerasHub name but keras-hub is missing), WeightsError when a
    remote preset's config cannot be downloaded.
    """
    if name in BACKBONES:
        return BACKBONES[name]
    by_lower = {key.lower(): row for key, row in BACKBONES.items()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    from headstart.extract import hub

    if hub.looks_like_preset(name):
        return hub.hub_info(name)
    try:
        presets = hub.builtin_presets()
    except UsageError:
        if name.lower().startswith(tuple(hub.FAMILIES)):
            raise
        presets = []
    if name in presets:
        return hub.hub_info(name)
    import difflib

    close = difflib.get_close_matches(name, [*BACKBONES, *presets], n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(
        f"Unknown backbone '{name}'{hint}; `extract-features --list-backbones` lists the "
        f"{len(BACKBONES)} keras.applications models and the KerasHub families."
    )


def format_table() -> str:
    """The table as text: name, input size, default layer, feature size, preprocessing;
    then the KerasHub families (`headstart.extract.hub.format_table`)."""
    from headstart.extract.hub import format_table as hub_table

    rows = [("backbone", "input", "feature", "dim", "preprocess_input")]
    for row in BACKBONES.values():
        layer = row.layer + (" (avg-pooled)" if row.pooling == "avg" else "")
        rows.append((row.name, f"{row.input_size}", layer, f"{row.feature_dim}",
                     f"{row.module} ({row.mode.split(':')[0]})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                      for r in rows)
    return f"{table}\n\n{hub_table()}"
