"""export-head: the fused model agrees with predict, loads without headstart, converts to TFLite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE_PETS

from headstart.classify import load_head, predict_images
from headstart.classify.cli import predict_main
from headstart.classify.deploy_cli import export_head_main, fine_tune_main
from headstart.classify.export import (
    BYTES_SIGNATURE,
    EXPORT_FOLDER,
    PIXELS_SIGNATURE,
    convert_tflite,
    export_head,
)
from headstart.classify.fused import build_classifier, preprocessing_layers
from headstart.classify.head import Head, Layer
from headstart.errors import OutputError
from headstart.extract import WeightsSpec, backbone_info, decode_pixels, pipeline_identity

DEPLOY_DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
PHOTOS = sorted(SAMPLE_PETS.glob("*/*.jpg"))


def photo_pixels(files, size=224) -> np.ndarray:
    return np.stack([decode_pixels(f.read_bytes(), size) for f in files])


def tflite_probabilities(flatbuffer: bytes, pixels: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter points to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    run = interpreter.get_signature_runner(PIXELS_SIGNATURE)
    return np.concatenate([run(pixels=pixels[i:i + 1])["probabilities"]
                           for i in range(len(pixels))])


@pytest.mark.parametrize("name", ["VGG16", "MobileNet", "DenseNet121", "EfficientNetB0"])
def test_preprocessing_layers_compute_preprocess_input(name):
    """One backbone per mode: caffe (exact), tf, torch, inside, against Keras' own function."""
    from headstart.tf_quiet import import_keras

    keras = import_keras()
    info = backbone_info(name)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 9, 7, 3), dtype=np.uint8)
    x = pixels
    for layer in preprocessing_layers(keras, info.mode):
        x = layer(x)
    module = getattr(keras.applications, info.module)
    expected = module.preprocess_input(pixels.astype(np.float32))
    assert x.dtype == "float32"
    if name == "VGG16":
        np.testing.assert_array_equal(np.asarray(x), expected)
    else:
        np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-6, atol=1e-6)


def test_vgg16_classifier_agrees_with_predicts_computation(backbone_cache):
    """The default backbone (caffe preprocessing, fc2) fused with a head that sees signal."""
    from headstart.tf_quiet import import_keras

    keras = import_keras()
    backbone = backbone_cache(WeightsSpec("none"))
    pixels = photo_pixels(PHOTOS[::7])
    rows = backbone.embed(pixels)
    rng = np.random.default_rng(1)
    head = Head("logreg", ["Cat", "Dog"], rows.mean(0), rows.std(0) + 1e-3,
                [Layer(rng.normal(0, 0.05, (rows.shape[1], 2)), np.zeros(2), "softmax")],
                pipeline_identity("none (seed 0)"))
    expected = head.predict_proba(rows)  # what predict computes from these pixels
    assert expected[:, 0].std() > 0.05, "the check needs probabilities that vary by photo"
    model = build_classifier(keras, backbone.model, head, backbone.info.mode)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def exported(deployable, tmp_path_factory):
    """The softmax head exported, and predict's probabilities for every photo."""
    out = tmp_path_factory.mktemp("export") / "model"
    result = export_head(deployable.heads / "softmax", out)
    head = load_head(deployable.heads / "softmax")
    reference = predict_images(head, PHOTOS)
    assert [Path(p) for p in reference.paths] == PHOTOS
    assert reference.probabilities[:, 0].std() > 0.05, "probabilities must vary by photo"
    return result, reference


def test_every_format_agrees_with_predict(exported):
    import keras
    import tensorflow as tf

    result, reference = exported
    out = result.directory
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json", "labels.txt", "model.keras", "saved_model"]
    assert (out / "labels.txt").read_text() == "Cat\nDog\n"
    description = json.loads((out / "export.json").read_text())
    assert description["input"]["dtype"] == "uint8"
    assert description["input"]["shape"] == [None, 224, 224, 3]
    assert set(result.sizes) == {"model.keras", "saved_model"}

    pixels = photo_pixels(PHOTOS)
    expected = reference.probabilities
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-4, rtol=0)

    saved = tf.saved_model.load(str(out / "saved_model"))
    served = saved.signatures[PIXELS_SIGNATURE](pixels=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-4, rtol=0)
    assert [c.decode() for c in served["class_name"].numpy()] == reference.predicted
    np.testing.assert_array_equal(served["class_index"].numpy(), expected.argmax(axis=1))

    encoded = tf.constant([p.read_bytes() for p in PHOTOS])
    decoded = saved.signatures[BYTES_SIGNATURE](images=encoded)["probabilities"].numpy()
    # TensorFlow's JPEG decoder and resize differ from PIL's by a few levels per pixel.
    assert np.abs(decoded - expected).max() < 0.1
    assert (decoded.argmax(1) == expected.argmax(1)).mean() >= 0.9


def small_classifier():
    """(model, head, pixels): a seeded 8x8 conv backbone fused with a two-layer head, whose
    exports take seconds where a real backbone takes tens."""
    from headstart.extract.backbones import TF
    from headstart.tf_quiet import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    pixels_in = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(64, 3, activation="relu", name="conv")(pixels_in)
    features = keras.Model(pixels_in, keras.layers.GlobalAveragePooling2D()(conv))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    rows = features.predict(pixels / 127.5 - 1, verbose=0)
    head = Head("softmax", ["a", "b", "c"], rows.mean(0), rows.std(0) + 1e-3,
                [Layer(rng.normal(0, 0.1, (64, 512)), rng.normal(0, 0.1, 512), "relu"),
                 Layer(rng.normal(0, 0.1, (512, 3)), np.zeros(3), "softmax")],
                pipeline_identity("none (seed 0)"))
    return build_classifier(keras, features, head, TF), head, pixels


def test_tflite_files_compute_what_the_keras_model_computes(tmp_path):
    """TFLite conversion on a small classifier (seconds, where a real backbone takes tens):
    float32 agrees with Keras to float rounding; float16 weights halve the file."""
    from headstart.classify.export import write_export

    model, head, pixels = small_classifier()
    sizes = write_export(model, tmp_path, head, tflite=True)
    assert (tmp_path / "model.tflite").stat().st_size == sizes["model.tflite"]
    expected = model.predict(pixels, verbose=0)
    assert expected.std(axis=0).max() > 0.01, "the check needs probabilities that vary"
    lite = tflite_probabilities((tmp_path / "model.tflite").read_bytes(), pixels)
    np.testing.assert_allclose(lite, expected, atol=1e-5, rtol=0)
    half_file = convert_tflite(tmp_path / "saved_model", "float16")
    assert len(half_file) < 0.6 * sizes["model.tflite"]
    # Weights rounded to float16 (relative error up to 2**-11), summed over 512 units.
    np.testing.assert_allclose(tflite_probabilities(half_file, pixels), expected, atol=5e-3,
                               rtol=0)


@pytest.mark.parametrize("formats, tflite, files", [
    (("keras",), True, ["export.json", "labels.txt", "model.keras", "model.tflite"]),
    (("saved_model",), False, ["export.json", "labels.txt", "saved_model"]),
])
def test_an_export_writes_only_the_formats_asked_for(tmp_path, formats, tflite, files):
    """model.keras and saved_model/ hold the same weights (537 MB each for VGG16): either
    alone. TFLite without saved_model/ converts from a SavedModel written aside and
    removed; export.json lists what is there."""
    from headstart.classify.export import export_head, write_export
    from headstart.errors import UsageError

    model, head, pixels = small_classifier()
    out = tmp_path / "model"
    sizes = write_export(model, out, head, tflite=tflite, formats=formats)
    assert sorted(p.name for p in out.iterdir()) == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left aside
    assert set(sizes) == set(files) - {"export.json", "labels.txt"}
    description = json.loads((out / "export.json").read_text())
    assert description["formats"] == list(formats) and "labels.txt" in description["files"]
    if tflite:
        lite = tflite_probabilities((out / "model.tflite").read_bytes(), pixels)
        np.testing.assert_allclose(lite, model.predict(pixels, verbose=0), atol=1e-5, rtol=0)
    with pytest.raises(UsageError, match="--formats takes one or both of keras, saved_model"):
        export_head(tmp_path / "no-head", tmp_path / "out", formats=("onnx",))


def test_a_bfloat16_classifier_exports_and_its_tflite_file_computes_in_float32(tmp_path):
    """The Keras and SavedModel files keep the features' precision; TFLite, which has no
    bfloat16 kernels, gets a float32 copy with the same weights (recorded in export.json)."""
    from headstart.classify.export import float32_copy, write_export
    from headstart.extract.backbone import _precision_policy
    from headstart.extract.backbones import TF
    from headstart.tf_quiet import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    with _precision_policy("mixed_bfloat16"):
        pixels_in = keras.Input((8, 8, 3))
        conv = keras.layers.Conv2D(64, 3, activation="relu", name="conv")(pixels_in)
        features = keras.Model(pixels_in, keras.layers.GlobalAveragePooling2D()(conv))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    rows = features.predict(pixels / 127.5 - 1, verbose=0).astype(np.float32)
    head = Head("softmax", ["a", "b", "c"], rows.mean(0), rows.std(0) + 1e-3,
                [Layer(rng.normal(0, 0.1, (64, 3)), np.zeros(3), "softmax")],
                pipeline_identity("none (seed 0)", precision="mixed_bfloat16"))
    model = build_classifier(keras, features, head, TF)
    write_export(model, tmp_path, head, tflite=True)
    description = json.loads((tmp_path / "export.json").read_text())
    assert description["precision"] == {"keras_and_saved_model": "mixed_bfloat16",
                                        "tflite": "float32"}
    assert not list(tmp_path.parent.glob(".*float32-saved-model"))  # the copy is removed
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.get_layer("backbone").get_layer("conv").dtype_policy.name == "mixed_bfloat16"
    float32 = float32_copy(model)
    assert float32 is not model and float32_copy(float32) is float32
    lite = tflite_probabilities((tmp_path / "model.tflite").read_bytes(), pixels)
    np.testing.assert_allclose(lite, float32.predict(pixels, verbose=0), atol=1e-5, rtol=0)
    # bfloat16 keeps 8 bits of mantissa: probabilities move by at most a few hundredths
    bf16 = model.predict(pixels, verbose=0)
    assert bf16.std(axis=0).max() > 0.01, "the check needs probabilities that vary"
    np.testing.assert_allclose(lite, bf16, atol=0.03, rtol=0)


def doc_python_blocks() -> list[str]:
    """docs/deploy.md's example of the exported model (the one that imports TensorFlow)."""
    blocks = re.findall(r"```python\n(.*?)```", DEPLOY_DOC.read_text(encoding="utf-8"), re.S)
    return [block for block in blocks if "import tensorflow" in block]


def test_the_documented_example_classifies_a_photo_without_headstart(exported, tmp_path):
    result, reference = exported
    blocks = doc_python_blocks()
    assert len(blocks) == 1, "a Python example was added or removed: check this test"
    (tmp_path / "model").symlink_to(result.directory)
    photo = PHOTOS[3]
    (tmp_path / "photo.jpg").write_bytes(photo.read_bytes())
    script = "import sys\nsys.modules['headstart'] = None  # any import of headstart fails\n"
    script += blocks[0]
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    expected = reference.probabilities[3]
    name = reference.classes[int(expected.argmax())]
    keras_line, bytes_line = (line.split() for line in lines[:2])
    assert keras_line[0] == name and abs(float(keras_line[1]) - expected.max()) < 1e-4
    assert bytes_line[0] == name and abs(float(bytes_line[1]) - expected.max()) < 0.1


def label_studio_project(root: Path) -> list[tuple[str, bytes | None]]:
    """A user's folder that holds a file named export.json; returns its snapshot."""
    (root / "sub").mkdir(parents=True)
    (root / "export.json").write_text('{"tool": "label-studio"}')
    (root / "important.txt").write_text("thesis")
    return snapshot(root)


def snapshot(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None)
                  for p in root.rglob("*"))


def test_export_and_fine_tune_refuse_a_folder_headstart_did_not_write(deployable, tmp_path,
                                                                      capsys):
    """export-head and fine-tune replaced any folder with an export.json, deleting the rest."""
    project = tmp_path / "proj"
    before = label_studio_project(project)
    forged = tmp_path / "forged"  # the right format, but a file no export holds
    forged.mkdir()
    (forged / "export.json").write_text('{"format": "headstart-export"}')
    (forged / "notes.txt").write_text("mine")
    forged_before = snapshot(forged)
    head = str(deployable.heads / "softmax")
    runs = [
        (export_head_main, ["--head", head, "-o", str(project)]),
        (export_head_main, ["--head", head, "-o", str(forged)]),
        (fine_tune_main, ["--features", str(deployable.store), "--head", head,
                          "-o", str(project)]),
        (fine_tune_main, ["--features", str(deployable.store), "--head", head,
                          "-o", str(tmp_path / "ft")]),  # its checkpoint folder is the user's
    ]
    (tmp_path / "ft.checkpoint").mkdir()
    (tmp_path / "ft.checkpoint" / "state.json").write_text("{}")
    (tmp_path / "ft.checkpoint" / "thesis.tex").write_text("x")
    for main, argv in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "not a headstart" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert snapshot(project) == before and snapshot(forged) == forged_before
    assert (tmp_path / "ft.checkpoint" / "thesis.tex").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "forged", "ft.checkpoint", "proj"]  # no staging folder left behind


def test_export_refuses_bad_input_before_building_anything(deployable, tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "mine.jpg").write_bytes(b"x")
    cases = [
        (["--head", str(deployable.heads / "softmax"), "-o", str(foreign)],
         "not a headstart export"),
        (["--head", str(tmp_path / "nothing"), "-o", str(tmp_path / "m")], "No head at"),
    ]
    for argv, message in cases:
        assert export_head_main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    assert export_head_main(["--head", str(deployable.heads / "softmax"), "--quantize",
                             "int8"]) == 2
    assert "must be one of none, float16, got int8" in capsys.readouterr().err
    assert (foreign / "mine.jpg").read_bytes() == b"x"
    with pytest.raises(OutputError, match="is a file"):
        export_head(deployable.heads / "softmax", foreign / "mine.jpg")


def test_an_earlier_export_is_recognised_and_replaced_whole(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "export.json").write_text('{"format": "headstart-export"}')
    (out / "model.tflite").write_text("old")
    assert EXPORT_FOLDER.owns(out)
    (out / "old-only.txt").write_text("old")
    assert not EXPORT_FOLDER.owns(out)


def test_predict_output_with_a_name_that_is_not_utf8(deployable, tmp_path, capsys):
    """predict --output truncated the old file, wrote one row, then crashed on such a name."""
    images = tmp_path / "new"
    images.mkdir()
    odd = os.fsdecode(b"caf\xe9-\xff.jpg")
    (images / odd).write_bytes(PHOTOS[0].read_bytes())
    (images / "plain.jpg").write_bytes(PHOTOS[1].read_bytes())
    for name in ("preds.csv", "preds.json"):
        output = tmp_path / name
        output.write_text("earlier predictions\n")
        assert predict_main(["--head", str(deployable.heads / "softmax"), str(images),
                             "--output", str(output)]) == 0, capsys.readouterr().err
        text = output.read_text(encoding="utf-8")
        assert "earlier predictions" not in text and "plain.jpg" in text
        assert "caf\\xe9-\\xff.jpg" in text.replace("\\\\", "\\")
    out = capsys.readouterr().out
    assert "caf\\xe9-\\xff.jpg" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "preds.csv", "preds.json"]
