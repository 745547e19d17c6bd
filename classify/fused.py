"""One Keras model from image pixels to class probabilities: what export-head saves and
fine-tune trains.

    pixels    uint8 (n, s, s, 3), RGB, after headstart's resize (s: the backbone's input size)
    -> the backbone's `preprocess_input`, as standard Keras layers (below)
    -> the feature model (the frozen backbone up to the head's layer, pooled if 4-d)
    -> the head's standardisation, (x - mean) * (1 / scale), as two Rescaling layers
    -> the head's Dense layers (relu..., softmax)
    probabilities float32 (n, n_classes)

Only standard layers (Rescaling, Dense, and the keras.applications layers), so
`keras.saving.load_model(path, safe_mode=True)` loads the file without headstart and
without custom objects; a Lambda layer would be refused by safe mode.

What each `preprocess_input` does (keras/src/applications/imagenet_utils.py, Keras 3):

    caffe  RGB -> BGR, then the ImageNet means (B 103.939, G 116.779, R 123.68) subtracted:
           here Rescaling(offset=-mean in RGB order), then a Dense(3) whose kernel is the
           channel permutation (0/1 weights, so the reversal is exact)
    tf     x / 127.5 - 1: Rescaling(1/127.5, offset=-1)
    torch  (x / 255 - mean) / std, per channel: Rescaling(1/(255 std), offset=-mean/std)
    inside identity (the model rescales itself): Rescaling(1), which only casts to float32
    hub    a KerasHub preset's ImageConverter, x * scale + offset per channel: one
           Rescaling(scale, offset), the converter's own arithmetic in float32

Rounding differs from numpy's by at most a few float32 ulps (caffe: none);
`tests/test_classify_export.py` checks each mode against `preprocess_input`.
"""

from __future__ import annotations

import numpy as np

from headstart.classify.head import Head

# keras/src/applications/imagenet_utils.py, _preprocess_numpy_input.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
FEATURE_MODEL_NAME = "backbone"


def preprocessing_layers(keras, mode: str, converter: tuple | None = None) -> list:
    """Standard Keras layers computing `preprocess_input` of a backbone `mode` on uint8 pixels.

    mode: one of headstart.extract.backbones' CAFFE, TF, TORCH, INSIDE, HUB.
    converter: for HUB, the ImageConverter's (scale, offset), each 3 floats or None.
    Input: uint8 or float (n, s, s, 3) RGB in 0..255; output: float32, same shape.
    """
    from headstart.extract.backbones import CAFFE, HUB, INSIDE, TF, TORCH

    if mode == HUB:
        scale, offset = converter or (None, None)
        scale = np.float32(1.0) if scale is None else np.asarray(scale, np.float32)
        offset = np.float32(0.0) if offset is None else np.asarray(offset, np.float32)
        return [keras.layers.Rescaling(scale, offset=offset, name="image_converter")]

    if mode == CAFFE:
        mean_rgb = np.array(CAFFE_MEAN_BGR[::-1], dtype=np.float32)
        reverse = keras.layers.Dense(3, use_bias=False, trainable=False, name="rgb_to_bgr",
                                     kernel_initializer=keras.initializers.Constant(
                                         np.eye(3, dtype=np.float32)[::-1].copy()))
        return [keras.layers.Rescaling(1.0, offset=-mean_rgb, name="subtract_imagenet_mean"),
                reverse]
    if mode == TF:
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_minus1_1")]
    if mode == TORCH:
        std = np.array(TORCH_STD, dtype=np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        offset = (-np.array(TORCH_MEAN) / std).astype(np.float32)
        return [keras.layers.Rescaling(scale, offset=offset, name="imagenet_mean_std")]
    if mode == INSIDE:
        return [keras.layers.Rescaling(1.0, name="to_float32")]
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def head_layers(keras, head: Head) -> list:
    """The head as Keras layers, weights set from its arrays (float32).

    Standardisation is (x - mean) then * (1 / scale): two Rescaling layers rather than
    Normalization, which would floor sqrt(variance) at 1e-7 where a head may not.
    """
    mean = np.asarray(head.mean, dtype=np.float32)
    inverse_scale = (1.0 / np.asarray(head.scale, dtype=np.float64)).astype(np.float32)
    layers = [keras.layers.Rescaling(1.0, offset=-mean, name="standardise_centre"),
              keras.layers.Rescaling(inverse_scale, name="standardise_scale")]
    for i, layer in enumerate(head.layers):
        last = i == len(head.layers) - 1
        layers.append(keras.layers.Dense(
            layer.kernel.shape[1], activation=layer.activation,
            name="probabilities" if last else f"hidden_{i}",
            kernel_initializer=keras.initializers.Constant(layer.kernel.astype(np.float32)),
            bias_initializer=keras.initializers.Constant(layer.bias.astype(np.float32))))
    return layers


def build_classifier(keras, feature_model, head: Head, mode: str,
                     converter: tuple | None = None):
    """pixels (n, s, s, 3) -> probabilities float32 (n, n_classes), as one keras.Model.

    pixels: uint8 RGB at the input size; for a KerasHub preset (mode HUB) float32 RGB in
        0..255, what its ImageConverter's resize makes (`BackboneInfo.resize`), which is
        not rounded to uint8 before the backbone.
    feature_model: a model from preprocessed float pixels to feature rows (n, n_features),
        e.g. `Backbone.model`; it is nested (named "backbone") with its weights shared.
    mode: the backbone's preprocessing mode (BackboneInfo.mode); converter: a KerasHub
        preset's (BackboneInfo.scale, BackboneInfo.offset).
    """
    from headstart.extract.backbones import HUB, keras_name

    size = int(feature_model.input.shape[1])
    pixels = keras.Input(shape=(size, size, 3), dtype="float32" if mode == HUB else "uint8",
                         name="pixels")
    x = pixels
    for layer in preprocessing_layers(keras, mode, converter):
        x = layer(x)
    feature_model.name = FEATURE_MODEL_NAME
    x = feature_model(x)
    for layer in head_layers(keras, head):
        x = layer(x)
    return keras.Model(pixels, x, name=f"{keras_name(head.identity.model)}_{head.kind}_classifier")
