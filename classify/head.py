"""A fitted head as plain arrays: standardise, dense layers, softmax. No code in the weights.

Both heads end up in this form (logreg is one dense layer; softmax is one or two), so
evaluation, `predict`, and a user's own numpy all compute probabilities the same way:

    h = (x - mean) / scale
    h = act(h @ kernel_i + bias_i)    for each layer, act = relu or softmax (last)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from headstart.errors import HeadError
from headstart.features import Identity

ACTIVATIONS = ("relu", "softmax")
# Identity fields that decide which features a head understands. `dtype` is left out:
# a float16 store holds the same features as a float32 one, up to rounding.
MATCH_KEYS = ("model", "layer", "weights", "input_size", "resize", "preprocessing", "pooling")


@dataclass(frozen=True)
class Layer:
    kernel: np.ndarray  # shape (inputs, outputs)
    bias: np.ndarray  # shape (outputs,)
    activation: str  # "relu" or "softmax"


def features_name(identity: Identity) -> str:
    """'VGG16 fc2', 'MobileNetV3Small avg-pooled global_average_pooling2d': which rows."""
    pooled = "" if identity.pooling == "none" else f" {identity.pooling}-pooled"
    return f"{identity.model}{pooled} {identity.layer}"


def mismatch(kind: str, head: Identity, store: Identity, source: str) -> str:
    """The difference between a head's features and a store's that matters most, first:
    another backbone or layer, then other weights, then the preprocessing (input size,
    resize, preprocessing function), each side named where it is said."""
    if features_name(head) != features_name(store):
        return (f"The {kind} head was fitted on {features_name(head)} features; '{source}' "
                f"holds {features_name(store)} features")
    if head.weights != store.weights:
        return (f"The {kind} head was fitted on {features_name(head)} features of the weights "
                f"{head.weights}; '{source}' holds those of the weights {store.weights}")
    keys = [key for key in ("input_size", "resize", "preprocessing")
            if getattr(head, key) != getattr(store, key)]
    return (f"The {kind} head was fitted on {features_name(head)} features made with another "
            + ", ".join(f"{key} ({getattr(head, key)!r}; '{source}' has "
                        f"{getattr(store, key)!r})" for key in keys))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def forward(features: np.ndarray, mean: np.ndarray, scale: np.ndarray, layers: list[Layer],
            block: int = 4096) -> np.ndarray:
    """Class probabilities, float64, shape (n, n_classes); computed `block` rows at a time."""
    mean, scale = mean.astype(np.float64), scale.astype(np.float64)
    weights = [(layer.kernel.astype(np.float64), layer.bias.astype(np.float64), layer.activation)
               for layer in layers]
    out = np.empty((len(features), weights[-1][0].shape[1]), dtype=np.float64)
    for start in range(0, len(features), block):
        h = (np.asarray(features[start:start + block], dtype=np.float64) - mean) / scale
        for kernel, bias, activation in weights:
            h = h @ kernel + bias
            h = softmax(h) if activation == "softmax" else np.maximum(h, 0.0)
        out[start:start + len(h)] = h
    return out


@dataclass
class Head:
    """A head that predicts from stored features; load one with `load_head(DIR)`."""

    kind: str  # "logreg" or "softmax"
    classes: list[str]
    mean: np.ndarray  # float, shape (n_features,)
    scale: np.ndarray  # float, shape (n_features,), never zero
    layers: list[Layer]
    identity: Identity  # how the features it was fitted on were made
    meta: dict = field(default_factory=dict)  # options, store, split, versions (head.json)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    @property
    def weights_path(self) -> str | None:
        """Where the weights file recorded by sha256 in `identity.weights` was, if one was used."""
        return self.meta.get("store", {}).get("weights_path")

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """features: shape (n, n_features) -> float64 probabilities, shape (n, n_classes)."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise HeadError(
                f"This {self.kind} head expects {self.n_features} features per image "
                f"({self.identity.model} {self.identity.layer}), got an array of shape "
                f"{features.shape}."
            )
        return forward(features, self.mean, self.scale, self.layers)

    def predict(self, features: np.ndarray) -> list[str]:
        """Class name of each row."""
        return [self.classes[i] for i in self.predict_proba(features).argmax(axis=1)]

    def check_matches(self, identity: Identity, dim: int, source: str,
                      classes: Sequence[str] | None = None) -> None:
        """Refuse features made by another model, layer, weights or pipeline, or of another size;
        with `classes` (commands that compare the store's labels with the head's: audit,
        fine-tune), also a store whose classes are not the head's, in the same order."""
        if any(getattr(self.identity, key) != getattr(identity, key) for key in MATCH_KEYS):
            raise HeadError(f"{mismatch(self.kind, self.identity, identity, source)}; fit a "
                            "head on this store instead.")
        if dim != self.n_features:
            raise HeadError(
                f"The {self.kind} head expects {self.n_features} features per image but "
                f"'{source}' has {dim}; fit a head on this store instead."
            )
        if classes is not None and list(classes) != list(self.classes):
            raise HeadError(
                f"The {self.kind} head knows classes {list(self.classes)} but '{source}' has "
                f"{list(classes)}; give a head fitted on this store."
            )
