"""Head files: JSON + plain arrays, loaded without running code, refused when they do not fit."""

from __future__ import annotations

import json
import pathlib
from dataclasses import replace

import numpy as np
import pytest
from helpers import IDENTITY, make_store, separable

from headstart.classify import HeadError, fit_heads, load_head
from headstart.classify.persist import HEAD_JSON, WEIGHTS
from headstart.features import open_store


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("persist")
    store = make_store(root / "sep.h5", *separable())
    results = fit_heads(store, models=("logreg", "softmax"), out_dir=root / "heads", plots=False,
                        epochs=20)
    return store, {r.model: r for r in results}


@pytest.mark.parametrize("model", ["logreg", "softmax"])
def test_a_saved_head_predicts_exactly_as_the_fitted_one(fitted, model):
    store, results = fitted
    X = open_store(store).load_features()
    head = load_head(results[model].out_dir)
    np.testing.assert_array_equal(head.predict_proba(X), results[model].head.predict_proba(X))
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)
    assert head.classes == ["class0", "class1"] and head.identity == IDENTITY
    assert load_head(results[model].out_dir / HEAD_JSON).classes == head.classes


def test_a_head_loads_with_plain_numpy_and_json(fitted):
    """What the README shows: no headstart, no scikit-learn, no Keras needed."""
    store, results = fitted
    directory = results["logreg"].out_dir
    meta = json.loads((directory / "head.json").read_text())
    w = np.load(directory / "weights.npz", allow_pickle=False)
    X = open_store(store).load_features()
    h = (X - w["mean"]) / w["scale"]
    for layer in meta["layers"]:
        h = h @ w[layer["kernel"]] + w[layer["bias"]]
        h = np.maximum(h, 0) if layer["activation"] == "relu" else h
    proba = np.exp(h - h.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(proba, results["logreg"].head.predict_proba(X), rtol=1e-6, atol=1e-9)


def test_the_keras_file_loads_in_safe_mode(fitted):
    import keras

    store, results = fitted
    model = keras.saving.load_model(results["softmax"].out_dir / "model.keras", safe_mode=True)
    X = open_store(store).load_features()
    expected = results["softmax"].head.predict_proba(X)
    np.testing.assert_allclose(model.predict(X, verbose=0), expected, atol=1e-5)


class Payload:
    """Unpickling this would create a file: the proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_head_with_a_pickled_payload_is_refused_without_running_it(fitted, tmp_path):
    directory = tmp_path / "evil"
    directory.mkdir()
    (directory / HEAD_JSON).write_text((fitted[1]["logreg"].out_dir / HEAD_JSON).read_text())
    marker = tmp_path / "code-ran"
    np.savez(directory / WEIGHTS, mean=np.array([Payload(marker)], dtype=object))
    with pytest.raises(HeadError, match="damaged head"):
        load_head(directory)
    assert not marker.exists()


def test_missing_and_foreign_heads_are_refused(tmp_path):
    with pytest.raises(HeadError, match="No head at"):
        load_head(tmp_path / "nowhere")
    (tmp_path / HEAD_JSON).write_text("{not json")
    with pytest.raises(HeadError, match="is not a head file"):
        load_head(tmp_path)
    (tmp_path / HEAD_JSON).write_text('{"format": "something-else"}')
    with pytest.raises(HeadError, match="not a headstart head file"):
        load_head(tmp_path)


def test_a_newer_or_inconsistent_head_is_refused(fitted, tmp_path):
    source = fitted[1]["logreg"].out_dir
    meta = json.loads((source / HEAD_JSON).read_text())
    directory = tmp_path / "head"
    directory.mkdir()
    (directory / WEIGHTS).write_bytes((source / WEIGHTS).read_bytes())
    (directory / HEAD_JSON).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(HeadError, match="newer headstart"):
        load_head(directory)
    (directory / HEAD_JSON).write_text(json.dumps({**meta, "classes": ["a", "b", "c"]}))
    with pytest.raises(HeadError, match="damaged head .*2 outputs for 3 classes"):
        load_head(directory)


def test_features_of_another_size_are_refused(fitted):
    head = load_head(fitted[1]["logreg"].out_dir)
    with pytest.raises(HeadError, match="expects 32 features per image"):
        head.predict_proba(np.zeros((3, 4096), np.float32))
    other = replace(IDENTITY, weights="imagenet")
    message = (r"^The logreg head was fitted on VGG16 fc2 features of the weights none \(seed "
               r"0\); 'other.h5' holds those of the weights imagenet; fit a head on this")
    with pytest.raises(HeadError, match=message):
        head.check_matches(other, 32, "other.h5")
    head.check_matches(replace(IDENTITY, dtype="float16"), 32, "half.h5")  # same features
    with pytest.raises(HeadError, match=r"^The logreg head was fitted on VGG16 fc2 features "
                                        r"made with another resize \('bilinear'; 'crop.h5' has "
                                        r"'centre-crop'\)"):
        head.check_matches(replace(IDENTITY, resize="centre-crop"), 32, "crop.h5")


def test_a_store_of_other_classes_is_refused_where_labels_are_compared(fitted):
    """audit-features and fine-tune compare the store's labels with the head's classes."""
    head = load_head(fitted[1]["logreg"].out_dir)
    head.check_matches(IDENTITY, 32, "same.h5", classes=head.classes)
    with pytest.raises(HeadError, match=r"knows classes .* but 'pets.h5' has \['cat', 'dog'\]"):
        head.check_matches(IDENTITY, 32, "pets.h5", classes=["cat", "dog"])
    head.check_matches(IDENTITY, 32, "any.h5")  # predict: no class check
