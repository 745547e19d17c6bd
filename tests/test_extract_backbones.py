"""Backbones: every family against Keras' own model, layers, identities, old stores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import REPO, SAMPLE_PETS, FakeBackbone, make_store, separable

from headstart.classify import fit_heads, predict_store
from headstart.errors import StoreError, UsageError
from headstart.extract import WeightsSpec, backbone_info, extract_features, pipeline_identity
from headstart.extract.backbones import BACKBONES
from headstart.extract.images import decode_pixels
from headstart.features import open_store

OLD_STORE = REPO / "tests" / "fixtures" / "v0.1.0-store.h5"  # written by headstart 0.1.0

# One model per family (VGG16 has its own reference test in test_extract_run.py).
FAMILY = {"resnet": "ResNet50", "resnet_v2": "ResNet50V2", "inception": "InceptionV3",
          "xception": "Xception", "mobilenet": "MobileNetV2",
          "mobilenet_v3": "MobileNetV3Small", "densenet": "DenseNet121",
          "efficientnet": "EfficientNetB0", "efficientnet_v2": "EfficientNetV2B0",
          "convnext": "ConvNeXtTiny"}


def test_every_family_of_the_table_is_covered_by_a_reference_test():
    assert set(FAMILY) | {"vgg"} == {row.family for row in BACKBONES.values()}
    for name in ("VGG16", "VGG19", "ResNet50", "ResNet50V2", "InceptionV3", "Xception",
                 "MobileNetV2", "MobileNetV3Large", "DenseNet121", "EfficientNetV2S",
                 "EfficientNetV2M", "EfficientNetV2L", "ConvNeXtTiny", "ConvNeXtSmall",
                 "ConvNeXtBase", *(f"EfficientNetB{i}" for i in range(8))):
        assert name in BACKBONES


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY))
def test_rows_equal_keras_own_pooled_model(family):
    """Reference: keras.applications.<Model>(include_top=False, pooling="avg") with the same
    weights and the same pixels, each model's own preprocess_input. Tolerance: rtol 1e-4 and
    an absolute 1e-4 of the largest value (float32 round-off of different graphs)."""
    import keras

    from headstart.extract.backbone import Backbone

    info = backbone_info(FAMILY[family])
    backbone = Backbone(WeightsSpec("none", 0), backbone=info.name)
    photos = sorted(SAMPLE_PETS.rglob("*.jpg"))[:2]
    pixels = np.stack([decode_pixels(p.read_bytes(), info.input_size) for p in photos])
    rows = backbone.embed(pixels)
    reference = getattr(keras.applications, info.name)(
        weights=None, include_top=False, pooling="avg",
        input_shape=(info.input_size, info.input_size, 3))
    reference.set_weights(backbone.model.get_weights())
    module = getattr(keras.applications, info.module)
    expected = reference(module.preprocess_input(pixels.astype(np.float32)),
                         training=False).numpy()
    assert rows.shape == (2, info.feature_dim) == expected.shape
    np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert backbone.identity.model == info.name and backbone.identity.pooling == "avg"
    assert backbone.identity.preprocessing == info.preprocessing
    keras.backend.clear_session()


@pytest.mark.slow
def test_any_named_layer_is_stored_and_4d_outputs_are_average_pooled():
    import keras

    from headstart.extract.backbone import Backbone

    fc1 = pipeline_identity("none (seed 0)", layer="fc1")
    assert (fc1.layer, fc1.pooling) == ("fc1", "none")
    block = Backbone(WeightsSpec("none", 0), backbone="MobileNetV2", layer="block_13_expand")
    assert block.identity.pooling == "avg" and block.feature_dim == 576
    pixels = np.zeros((1, 224, 224, 3), np.uint8) + 128
    vgg_like = block.model.get_layer("block_13_expand").output
    raw = keras.Model(block.model.input, vgg_like)(block.preprocess(pixels)).numpy()
    np.testing.assert_allclose(block.embed(pixels), raw.mean(axis=(1, 2)), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(UsageError, match="MobileNetV2 has no layer 'nope'"):
        Backbone(WeightsSpec("none", 0), backbone="MobileNetV2", layer="nope")


def test_unknown_backbones_suggest_the_closest_names():
    with pytest.raises(UsageError, match="Unknown backbone 'efficientnetv2-s'"):
        backbone_info("efficientnetv2-s")
    assert backbone_info("resnet50").name == "ResNet50"  # any case


def test_stores_of_different_backbones_are_never_mixed(tmp_path):
    folder = tmp_path / "pets"
    shutil.copytree(SAMPLE_PETS, folder, ignore=shutil.ignore_patterns("*.md"))
    out = tmp_path / "f.h5"
    extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False,
                     log=lambda line: None)
    other = FakeBackbone(identity=pipeline_identity("none (seed 0)", backbone="ResNet50"))
    with pytest.raises(StoreError, match="model: the store's 'VGG16', this run's 'ResNet50'.*"
                                         "layer: the store's 'fc2', this run's "
                                         "'conv5_block3_out'.*run with --backbone VGG16 "
                                         "--layer fc2, or write to another -o file"):
        extract_features(folder, out, weights="none", backbone="ResNet50", model=other,
                         progress=False, log=lambda line: None)


@pytest.fixture
def old_store(tmp_path):
    """The fixture store written by headstart 0.1.0, and the folder it was made from."""
    folder = tmp_path / "pets"
    for cls in ("Cat", "Dog"):
        (folder / cls).mkdir(parents=True)
        for photo in sorted((SAMPLE_PETS / cls).glob("*.jpg"))[:6]:
            shutil.copy(photo, folder / cls / photo.name)
    (folder / "Cat" / "666.jpg").write_bytes(b"")
    store = tmp_path / "features.h5"
    shutil.copy(OLD_STORE, store)
    return folder, store


def test_a_store_made_by_version_0_1_0_opens_resumes_and_predicts(old_store, tmp_path,
                                                                  monkeypatch):
    folder, store = old_store
    with open_store(store) as opened:
        assert opened.identity == pipeline_identity("none (seed 0)")  # no pooling attribute
        assert opened.label_source == "folders" and opened.n_rows == 12
        old_rows = opened.load_features()
    run = dict(weights="none", model=FakeBackbone(), progress=False, log=lambda line: None)
    again = extract_features(folder, store, **run)
    assert again.added == 0 and again.hashed == 13  # no stats stored: hashed once
    shutil.copy(sorted((SAMPLE_PETS / "Dog").glob("*.jpg"))[-1], folder / "Dog" / "zz.jpg")
    appended = extract_features(folder, store, **run)
    assert (appended.added, appended.rows) == (1, 13)
    with open_store(store) as opened:
        np.testing.assert_array_equal(opened.load_features()[:12], old_rows)
    assert extract_features(folder, store, **run).up_to_date  # stats recorded now
    # predict: a head fitted on rows of the same pipeline accepts the old store's rows ...
    with open_store(store) as opened:
        identity = opened.identity
    X, y = separable(n=200, dim=4096)
    head = fit_heads(make_store(tmp_path / "train.h5", X, y, identity=identity),
                     out_dir=None)[0].head
    assert predict_store(head, store).probabilities.shape == (13, 2)
    # ... and new images are embedded by exactly the backbone that made them.
    import headstart.extract.backbone as backbone_module

    built = []
    monkeypatch.setattr(backbone_module, "Backbone",
                        lambda spec, **kw: built.append((spec, kw)) or FakeBackbone())
    backbone_module.backbone_for_identity(identity)
    assert built == [(WeightsSpec("none", 0), {"backbone": "VGG16", "layer": "fc2",
                                               "dtype": "float32", "precision": "float32",
                                               "batch_size": 32, "devices": None})]
