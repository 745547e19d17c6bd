"""KerasHub presets as backbones: each family against KerasHub's own converter and model on
non-square images, the identity, hostile and missing presets, the offline and missing-package
messages, and extract -> fit-head -> predict -> audit on a preset's store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SAMPLE_PETS, first_usable_seed, keras_hub_rows, tiny_presets
from PIL import Image

from headstart.errors import UsageError, WeightsError
from headstart.extract import WeightsSpec, backbone_info, extract_features
from headstart.extract.images import decode_pixels
from headstart.features import open_store, sha256_file

FAMILIES = ("dinov2", "dinov3", "siglip", "clip", "vit")
PHOTOS = sorted(SAMPLE_PETS.rglob("*.jpg"))


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    return tiny_presets(tmp_path_factory.mktemp("presets"))


@pytest.fixture(scope="module")
def non_square(tmp_path_factory) -> list[Path]:
    """Two wide JPEGs (two photos side by side, 360x180) and a tall PNG (180x300)."""
    root = tmp_path_factory.mktemp("non_square")
    images = [Image.open(p).convert("RGB") for p in PHOTOS[:5]]
    files = []
    for index in range(2):
        wide = Image.new("RGB", (360, 180))
        wide.paste(images[2 * index], (0, 0))
        wide.paste(images[2 * index + 1], (180, 0))
        files.append(root / f"wide{index}.jpg")
        wide.save(files[-1], quality=95)
    tall = Image.new("RGB", (180, 300), (200, 30, 30))
    tall.paste(images[4], (0, 60))
    files.append(root / "tall.png")
    tall.save(files[-1])
    return files


def decoded(files: list[Path], size: int) -> list[np.ndarray]:
    """headstart's decoded pixels for input size `size` at each image's own aspect ratio
    (no resize; a JPEG twice the size or more is decoded at a reduced DCT scale)."""
    return [decode_pixels(f.read_bytes(), size, resize=lambda rgb: rgb) for f in files]


def backbone_of(preset: Path, **options):
    from headstart.extract.backbone import Backbone

    return Backbone(WeightsSpec("imagenet"), backbone=str(preset), **options)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_equal_keras_hub_own_converter_and_model_on_non_square_images(
        presets, non_square, family):
    """Reference: KerasHub's from_preset ImageConverter and backbone on headstart's decoded
    image at its own aspect ratio. Tolerance: 1e-5 of the largest value (float32 round-off
    of two graphs). The DINO and CLIP presets crop to the aspect ratio, the SigLIP and ViT
    ones squash: the other geometry gives rows further off than that."""
    from headstart.extract import embed_files

    backbone = backbone_of(presets[family], batch_size=2)
    rows = embed_files(non_square, backbone, batch_size=2).rows
    images = decoded(non_square, backbone.input_size)
    expected = keras_hub_rows(presets[family], images)
    assert rows.shape == expected.shape == (3, backbone.info.feature_dim)
    assert rows.dtype == np.float32
    tolerance = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(rows, expected, rtol=0, atol=tolerance)
    resize = backbone.resize
    other = type(resize)(resize.size, resize.interpolation, resize.antialias,
                         not resize.crop_to_aspect_ratio)
    swapped = backbone.embed(np.stack([other(image) for image in images]))
    assert np.abs(swapped - expected).max() > 100 * tolerance


def test_the_table_row_and_identity_come_from_the_preset(presets, tmp_path):
    from headstart.extract import pipeline_identity

    rows = {"dinov2": (64, "cls_token+mean_patch_tokens", 56, 2),  # converter's 56, not 70
            "dinov3": (64, "cls_token+mean_patch_tokens", 32, 4),
            "siglip": (32, "pooled_image_embedding", 32, 0),
            "clip": (24, "projected_image_embedding", 32, 0), "vit": (32, "cls_token", 32, 0)}
    for family, expected in rows.items():
        info = backbone_info(str(presets[family]))
        assert info.family == family and info.name == f"keras_hub:tiny_{family}"
        assert (info.feature_dim, info.layer, info.input_size, info.registers) == expected
    identity = pipeline_identity("imagenet", backbone=str(presets["vit"]))
    assert identity.model == "keras_hub:tiny_vit"
    assert identity.weights == (f"sha256:{sha256_file(presets['vit'] / 'model.weights.h5')} "
                                f"config sha256:{sha256_file(presets['vit'] / 'config.json')}")
    assert identity.preprocessing == ("keras_hub ImageConverter: x * scale [0.0078431373, "
                                      "0.0078431373, 0.0078431373] + offset [-1, -1, -1]")
    assert "then the preset's ImageConverter: squash, bilinear to 32x32" in identity.resize
    assert "centre crop to the aspect ratio, bicubic antialiased to 56x56" in (
        pipeline_identity("imagenet", backbone=str(presets["dinov2"])).resize)
    assert identity.pooling == "none" and identity.input_size == 32
    # A copy of the preset under the same name makes the same rows; a changed one does not.
    copy = tmp_path / "tiny_vit"
    shutil.copytree(presets["vit"], copy)
    assert pipeline_identity("imagenet", backbone=str(copy)) == identity
    config = json.loads((copy / "config.json").read_text())
    config["config"]["name"] = "renamed"
    (copy / "config.json").write_text(json.dumps(config))
    assert pipeline_identity("imagenet", backbone=str(copy)).weights != identity.weights


def test_dino_class_token_alone_is_the_first_half_of_the_default_row(presets, non_square):
    from headstart.extract import embed_files

    default = embed_files(non_square, backbone_of(presets["dinov2"])).rows
    cls_backbone = backbone_of(presets["dinov2"], layer="cls_token")
    cls = embed_files(non_square, cls_backbone).rows
    assert cls_backbone.identity.layer == "cls_token" and cls.shape == (3, 32)
    np.testing.assert_allclose(cls, default[:, :32], atol=1e-6)
    np.testing.assert_allclose(cls, keras_hub_rows(presets["dinov2"], decoded(non_square, 56),
                                                   "cls_token"), atol=1e-5)
    with pytest.raises(UsageError, match="offers the features cls_token.mean_patch_tokens, "
                                         "cls_token; got --layer 'fc2'"):
        backbone_of(presets["dinov2"], layer="fc2")


@pytest.mark.parametrize("family, precision", [
    ("dinov2", "float32"), ("dinov3", "mixed_bfloat16"), ("siglip", "mixed_bfloat16"),
    ("clip", "mixed_bfloat16"), ("vit", "float32")])
def test_rows_do_not_depend_on_batching(presets, family, precision):
    """A row depends only on its image: alone, in a batch, or one place further on (a
    batched Dense over batch x tokens would move float32 rows by up to 1e-6)."""
    backbone = backbone_of(presets[family], precision=precision, batch_size=4)
    size = backbone.input_size
    pixels = np.stack([decode_pixels(p.read_bytes(), size) for p in PHOTOS[:6]])
    together = backbone.embed(pixels)
    alone = np.concatenate([backbone.embed(pixels[i:i + 1]) for i in range(len(pixels))])
    shifted = backbone.embed(np.concatenate([pixels[:1], pixels]))[1:]
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, shifted)
    assert backbone.identity.precision == precision
    if precision == "mixed_bfloat16":  # every layer with weights computes in bfloat16
        # (KerasHub's from_preset(dtype=) leaves CLIP's and SigLIP's encoders in float32)
        layers = [layer for layer in backbone.model._flatten_layers(include_self=False)
                  if layer.weights]
        assert layers and {layer.dtype_policy.name for layer in layers} == {precision}
        f32 = backbone_of(presets[family]).embed(pixels)
        assert not np.array_equal(together, f32)
        np.testing.assert_allclose(together, f32, atol=0.1 * np.abs(f32).max())


def hostile_copy(preset: Path, folder: Path, change) -> Path:
    shutil.copytree(preset, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_presets_naming_foreign_classes_or_missing_files_are_refused(presets, tmp_path):
    """Checked on the preset's JSON before KerasHub deserialises anything."""
    def nested_os_call(config):
        config["config"]["dtype"] = {"module": "os", "class_name": "system",
                                     "config": {"command": "touch pwned"}}

    bad = hostile_copy(presets["vit"], tmp_path / "bad", nested_os_call)
    with pytest.raises(UsageError, match=r"preset '.*bad' names the class system \(module os\)"
                                         r", which a vit preset does not contain"):
        backbone_info(str(bad))
    bert = hostile_copy(presets["vit"], tmp_path / "bert", lambda c: c.update(
        class_name="BertBackbone", module="keras_hub.src.models.bert.bert_backbone"))
    with pytest.raises(UsageError, match="is a BertBackbone; headstart extracts features with "
                                         "dinov2, dinov3, siglip, clip, vit presets"):
        backbone_info(str(bert))

    def clip_text_tower_in_siglip(config):
        config["config"]["text_encoder"]["module"] = "keras_hub.src.models.clip.clip_text_encoder"
        config["config"]["text_encoder"]["class_name"] = "CLIPTextEncoder"

    mixed = hostile_copy(presets["siglip"], tmp_path / "mixed", clip_text_tower_in_siglip)
    with pytest.raises(UsageError, match="names the class CLIPTextEncoder .module keras_hub.src"
                                         ".models.clip.clip_text_encoder., which a siglip"):
        backbone_info(str(mixed))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="Preset folder '.*empty' has no config.json"):
        backbone_info(str(tmp_path / "empty"))
    garbage = tmp_path / "garbage"
    shutil.copytree(presets["vit"], garbage)
    (garbage / "image_converter.json").write_bytes(b"\xff" * 100)
    with pytest.raises(WeightsError, match="image_converter.json' is not a KerasHub preset "
                                           "file"):
        backbone_info(str(garbage))
    assert not Path("pwned").exists()


def test_without_keras_hub_a_preset_name_asks_for_the_extra(monkeypatch):
    from headstart.extract import hub

    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import keras_hub raises ImportError
    hub.hub_info.cache_clear()
    with pytest.raises(UsageError, match=r"keras-hub package; run `pip install "
                                         r"'headstart\[hub\]'`"):
        backbone_info("dinov2_base")
    assert backbone_info("ResNet50").name == "ResNet50"
    with pytest.raises(UsageError, match="Unknown backbone 'Rsnet50' .did you mean ResNet50"):
        backbone_info("Rsnet50")


def test_weights_are_refused_for_a_preset_before_any_work(presets, tmp_path):
    for weights in ("none", str(presets["vit"] / "model.weights.h5")):
        with pytest.raises(UsageError, match=f"--weights {weights} is for keras.applications "
                                             "backbones; a KerasHub preset carries its own"):
            extract_features(SAMPLE_PETS, tmp_path / "f.h5", backbone=str(presets["vit"]),
                             weights=weights)
    assert not (tmp_path / "f.h5").exists()


def test_offline_the_command_names_the_preset_cache_and_folder_in_one_sentence(tmp_path):
    """The network switched off for the hubs: Hugging Face's and Kaggle's endpoints point at
    a closed local port, and both caches are empty. KerasHub's real download path runs up
    to the failure; no random weights are substituted and no store is written."""
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", KAGGLE_API_ENVIRONMENT="TEST",
               HF_HOME=str(tmp_path / "hf"), KAGGLEHUB_CACHE=str(tmp_path / "kaggle"))
    env.pop("HF_HUB_OFFLINE", None)
    for preset, cache in (("dinov2_small", tmp_path / "kaggle"),
                          ("hf://keras/dinov2_small", tmp_path / "hf" / "hub")):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "headstart.extract.cli", str(SAMPLE_PETS), "-o",
             str(tmp_path / "f.h5"), "--backbone", preset],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        took = time.monotonic() - started
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, done.stderr
        assert lines[-1] == (
            f"extract-features: Could not get config.json of the KerasHub preset '{preset}' "
            f"(the network is unreachable); connect once so that KerasHub caches it in "
            f"{cache}, or pass a copy of the preset saved elsewhere: --backbone ./FOLDER."
        ), done.stderr
        assert not (tmp_path / "f.h5").exists()
        print(f"{preset}: failed in {took:.1f} s including start-up")


def test_a_cached_built_in_preset_loads_without_the_network(presets, tmp_path, monkeypatch):
    """kagglehub's own cache, filled with the tiny DINOv2 under dinov2_small's versioned
    handle; the Kaggle endpoint is a closed local port."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle
    from keras_hub.src.utils.preset_utils import BUILTIN_PRESETS

    from headstart.extract import hub, pipeline_identity

    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle"))
    handle = parse_model_handle(
        BUILTIN_PRESETS["dinov2_small"]["kaggle_handle"].removeprefix("kaggle://"))
    cache = Cache()
    for file in presets["dinov2"].iterdir():
        Path(cache.get_path(handle, file.name)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, cache.get_path(handle, file.name))
        cache.mark_as_complete(handle, file.name)
    hub.hub_info.cache_clear()
    info = backbone_info("dinov2_small")
    assert (info.name, info.preset, info.input_size) == ("keras_hub:dinov2_small",
                                                         "dinov2_small", 56)
    identity = pipeline_identity("imagenet", backbone="dinov2_small")
    assert identity.weights.startswith(
        f"sha256:{sha256_file(presets['dinov2'] / 'model.weights.h5')} config sha256:")
    hub.hub_info.cache_clear()


@pytest.fixture(scope="module")
def hub_store(presets, tmp_path_factory):
    """The sample photos extracted with the tiny DINOv2 preset, and a logreg head."""
    from headstart.classify import fit_heads

    root = tmp_path_factory.mktemp("hub_store")
    store = root / "features.h5"
    summary = extract_features(SAMPLE_PETS, store, backbone=str(presets["dinov2"]),
                               precision="float32", progress=False, log=lambda line: None)
    assert summary.added == len(PHOTOS)
    fit_heads(store, ("logreg",), out_dir=root / "heads", seed=first_usable_seed(store),
              plots=False)
    return root


def test_a_preset_store_records_its_preset_and_resumes(hub_store, presets):
    store = hub_store / "features.h5"
    with open_store(store) as opened:
        assert opened.identity.model == "keras_hub:tiny_dinov2"
        assert opened.attrs["weights_path"] == str(presets["dinov2"])
        assert opened.attrs["version_keras_hub"]
        assert opened.features.shape == (len(PHOTOS), 64)
    again = extract_features(SAMPLE_PETS, store, backbone=str(presets["dinov2"]),
                             precision="float32", progress=False, log=lambda line: None)
    assert again.added == 0


def test_predict_rebuilds_the_preset_and_a_moved_folder_is_checked(hub_store, presets,
                                                                   tmp_path):
    """predict on images gives the store's rows' probabilities (1e-6)."""
    from headstart.classify import load_head, predict_images, predict_store

    head = load_head(hub_store / "heads" / "logreg")
    from_rows = predict_store(head, hub_store / "features.h5")
    order = [from_rows.paths.index(str(p.relative_to(SAMPLE_PETS))) for p in PHOTOS]
    moved = tmp_path / "moved"
    shutil.move(presets["dinov2"], moved)
    try:
        with pytest.raises(WeightsError, match="Preset folder '.*tiny_dinov2' does not exist; "
                                               "if it moved, pass its new place as "
                                               "--backbone PATH"):
            predict_images(head, PHOTOS[:1])
        from_images = predict_images(head, PHOTOS, preset=moved)
        np.testing.assert_allclose(from_images.probabilities, from_rows.probabilities[order],
                                   atol=1e-6)
        with pytest.raises(UsageError, match="takes no --weights; pass --backbone PATH"):
            predict_images(head, PHOTOS[:1], weights_path=moved / "model.weights.h5")
        with pytest.raises(WeightsError, match="makes other rows than the features' .layer: "
                                               "'cls_token.mean_patch_tokens' vs 'cls_token'; "
                                               "weights: 'sha256:"):
            predict_images(head, PHOTOS[:1], preset=presets["vit"])
    finally:
        shutil.move(moved, presets["dinov2"])


def test_the_logreg_path_on_a_preset_store_imports_neither_tensorflow_nor_keras_hub(
        hub_store, tmp_path):
    """The identity is plain data: fit, load and predict the rows without either."""
    script = (
        "import sys\n"
        "from headstart.classify import fit_heads, load_head, predict_store\n"
        f"fit_heads({str(hub_store / 'features.h5')!r}, ('logreg',), "
        f"out_dir={str(tmp_path / 'heads')!r}, "
        f"seed={first_usable_seed(hub_store / 'features.h5')}, plots=False)\n"
        f"head = load_head({str(tmp_path / 'heads' / 'logreg')!r})\n"
        f"assert head.identity.model == 'keras_hub:tiny_dinov2'\n"
        f"predict_store(head, {str(hub_store / 'features.h5')!r})\n"
        "assert not {'tensorflow', 'keras', 'keras_hub'} & set(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_audit_runs_on_a_preset_store(hub_store):
    from headstart.audit import audit_store

    audit = audit_store(hub_store / "features.h5", seed=first_usable_seed(
        hub_store / "features.h5"))
    assert len(audit.paths) == len(PHOTOS) and audit.proba.shape == (len(PHOTOS), 2)


def test_shards_of_a_preset_extraction_merge_into_the_single_run_rows(presets, hub_store,
                                                                     tmp_path):
    from headstart.features.shards import merge_shards

    store = tmp_path / "features.h5"
    for index in range(2):
        extract_features(SAMPLE_PETS, store, backbone=str(presets["dinov2"]),
                         precision="float32", progress=False, log=lambda line: None,
                         shard=(index, 2))
    merge_shards(store)
    with open_store(store) as merged, open_store(hub_store / "features.h5") as single:
        assert merged.identity == single.identity
        rows = dict(zip(merged.paths, merged.load_features(), strict=True))
        for path, row in zip(single.paths, single.load_features(), strict=True):
            np.testing.assert_array_equal(rows[path], row)


def test_every_export_format_gives_predict_probabilities(hub_store, non_square, tmp_path):
    """model.keras (with keras_hub imported), the SavedModel's pixels signature and TFLite
    on the converter's float32 pixels: predict's probabilities within 1e-5 (TFLite 1e-4).
    The `images` signature decodes with TensorFlow and applies the converter's geometry in
    its graph: on PNG files (the same pixels as PIL's) 1e-5, on JPEGs (libjpeg's integer
    DCT against Pillow's) 0.02."""
    import keras
    import keras_hub  # noqa: F401 - registers the KerasHub layers model.keras holds
    import tensorflow as tf

    from headstart.classify import load_head, predict_images
    from headstart.classify.export import BYTES_SIGNATURE, PIXELS_SIGNATURE, export_head

    head_dir = hub_store / "heads" / "logreg"
    exported = export_head(head_dir, tmp_path / "model", tflite=True)
    files = [*non_square, *PHOTOS[:3]]
    expected = predict_images(load_head(head_dir), files).probabilities
    resize = backbone_info(load_head(head_dir).weights_path).resize
    pixels = np.stack([decode_pixels(f.read_bytes(), 56, resize) for f in files])
    assert pixels.dtype == np.float32
    model = keras.saving.load_model(exported.directory / "model.keras")
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-5)
    saved = tf.saved_model.load(str(exported.directory / "saved_model"))
    served = saved.signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    from_bytes = saved.signatures[BYTES_SIGNATURE](
        images=tf.constant([f.read_bytes() for f in files]))["probabilities"].numpy()
    png = [i for i, f in enumerate(files) if f.suffix == ".png"]
    np.testing.assert_allclose(from_bytes[png], expected[png], atol=1e-5)
    np.testing.assert_allclose(from_bytes, expected, atol=0.02)
    with warnings.catch_warnings():  # tf.lite.Interpreter points to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(
            model_content=(exported.directory / "model.tflite").read_bytes())
    run = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    lite = np.concatenate([run(pixels=pixels[i:i + 1])["probabilities"]
                           for i in range(len(pixels))])
    np.testing.assert_allclose(lite, expected, atol=1e-4)
    described = json.loads((exported.directory / "export.json").read_text())
    assert described["input"]["dtype"] == "float32"
    assert described["loading"].startswith("model.keras holds KerasHub layers")


def test_fine_tune_trains_the_top_transformer_blocks_and_nothing_below(hub_store, presets,
                                                                      tmp_path):
    """blocks:2 of the tiny DINOv2 (2 blocks, the default): both blocks and the final
    LayerNorm move; the patch embedding, class token and position embeddings stay exactly
    as loaded. The fine-tuned model's SavedModel gives model.keras's probabilities."""
    import keras
    import keras_hub
    import tensorflow as tf

    from headstart.classify.export import PIXELS_SIGNATURE
    from headstart.classify.finetune import fine_tune

    result = fine_tune(hub_store / "features.h5", hub_store / "heads" / "logreg",
                       out_dir=tmp_path / "tuned", epochs=1, patience=0, batch_size=8,
                       learning_rate=1e-3, progress=False)
    assert result.metrics["parameters"]["unfrozen"] == [
        "layers_0", "layers_1", "dinov2_backbone_layernorm"]
    assert result.metrics["options"]["unfreeze"] == "blocks:2"
    tuned = keras.saving.load_model(tmp_path / "tuned" / "model.keras")
    original = keras_hub.models.Backbone.from_preset(str(presets["dinov2"]),
                                                     image_shape=(56, 56, 3))
    tuned_backbone = tuned.get_layer("backbone").get_layer("dinov2_backbone")
    embeddings = {w.path: w.numpy() for w in tuned_backbone.embeddings.weights}
    for weight in original.embeddings.weights:
        np.testing.assert_array_equal(embeddings[weight.path], weight.numpy())
    moved = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
        tuned_backbone.encoder.weights, original.encoder.weights, strict=True)]
    assert sum(moved) > len(moved) // 2
    resize = backbone_info(str(presets["dinov2"])).resize
    pixels = np.stack([decode_pixels(f.read_bytes(), 56, resize) for f in PHOTOS[:3]])
    saved = tf.saved_model.load(str(tmp_path / "tuned" / "saved_model"))
    np.testing.assert_allclose(
        saved.signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels))["probabilities"],
        tuned.predict(pixels, verbose=0), atol=1e-5)


@pytest.mark.parametrize("family, count, unfrozen", [
    ("dinov3", 2, ["layers_0", "layers_1", "dinov3_backbone_layernorm"]),
    ("siglip", 1, ["sig_lip_vision_encoder_encoder_block_1",
                   "sig_lip_vision_encoder_post_layer_norm", "sig_lip_vision_encoder_head"]),
    ("clip", 1, ["clip_vision_encoder_encoder_block_1", "clip_vision_encoder_layer_norm",
                 "vision_projection"]),
    ("vit", 1, ["transformer_block_2", "vit_encoder/ln"]),
])
def test_the_top_blocks_and_what_is_above_them_are_unfrozen(presets, family, count, unfrozen):
    from headstart.classify.finetune import unfreeze_top

    model = backbone_of(presets[family]).model
    assert unfreeze_top(model, f"blocks:{count}") == unfrozen
    trainable = {w.path for w in model.trainable_variables}
    assert not any("embedding" in path for path in trainable)
    assert trainable and len(trainable) < len(model.weights)
    with pytest.raises(UsageError, match="the backbone has 2 transformer blocks"):
        unfreeze_top(model, "blocks:3")
    with pytest.raises(UsageError, match="give blocks:N with N a whole number"):
        unfreeze_top(model, "blocks:x")


def test_list_backbones_shows_the_keras_hub_families_and_their_sources(capsys):
    from headstart.extract.cli import main as extract_main

    assert extract_main(["--list-backbones"]) == 0
    out = capsys.readouterr().out
    assert "pip install 'headstart[hub]'" in out
    for text in ("dinov2_base", "dinov3_vit_base_lvd1689m", "siglip_base_patch16_224",
                 "clip_vit_base_patch32", "vit_base_patch16_224_imagenet",
                 "cls_token+mean_patch_tokens", "pooled_image_embedding",
                 "projected_image_embedding", "arXiv:2304.07193", "arXiv:2508.10104",
                 "arXiv:2303.15343", "arXiv:2103.00020", "arXiv:2010.11929"):
        assert text in out


def test_a_misspelt_preset_name_gets_the_closest_presets():
    with pytest.raises(UsageError, match="Unknown backbone 'dinov2_bse' .did you mean "
                                         "dinov2_base"):
        backbone_info("dinov2_bse")


def test_a_bfloat16_preset_head_exports_a_float32_tflite_model(presets, tmp_path):
    """TFLite has no bfloat16 kernels: the preset's backbone is rebuilt in float32 for it.
    Tolerance against predict's bfloat16 probabilities: 0.05 (bfloat16 keeps 8 bits)."""
    import tensorflow as tf

    from headstart.classify import fit_heads, load_head, predict_images
    from headstart.classify.export import PIXELS_SIGNATURE, export_head

    store = tmp_path / "features.h5"
    extract_features(SAMPLE_PETS, store, backbone=str(presets["siglip"]),
                     precision="mixed_bfloat16", progress=False, log=lambda line: None)
    fit_heads(store, ("logreg",), out_dir=tmp_path / "heads", seed=first_usable_seed(store),
              plots=False)
    exported = export_head(tmp_path / "heads" / "logreg", tmp_path / "model", tflite=True)
    described = json.loads((exported.directory / "export.json").read_text())
    assert described["precision"] == {"keras_and_saved_model": "mixed_bfloat16",
                                      "tflite": "float32"}
    expected = predict_images(load_head(tmp_path / "heads" / "logreg"), PHOTOS[:4])
    resize = backbone_info(str(presets["siglip"])).resize
    pixels = np.stack([decode_pixels(f.read_bytes(), 32, resize) for f in PHOTOS[:4]])
    with warnings.catch_warnings():  # tf.lite.Interpreter points to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(
            model_content=(exported.directory / "model.tflite").read_bytes())
    run = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    lite = np.concatenate([run(pixels=pixels[i:i + 1])["probabilities"] for i in range(4)])
    np.testing.assert_allclose(lite, expected.probabilities, atol=0.05)
