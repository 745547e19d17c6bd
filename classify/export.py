"""export-head: a head and its backbone as one image classifier that runs without headstart.

    from headstart.classify.export import export_head
    exported = export_head("heads/logreg", "model")     # model/model.keras, model/saved_model/

An export directory holds

    model.keras          keras.Model: pixels uint8 (n, s, s, 3) RGB -> probabilities float32
                         (n, n_classes); standard layers only (see headstart.classify.fused)
    saved_model/         TensorFlow SavedModel with two signatures:
                         serving_default  pixels uint8 (n, s, s, 3)  (what model.keras takes)
                         images           images string (n,): encoded JPEG/PNG/GIF/BMP bytes,
                                          decoded and resized to s x s inside the graph
                         each returning probabilities float32 (n, C), class_index int32 (n,)
                         and class_name string (n,): the class names travel in the graph
    model.tflite         with tflite=True: the serving_default signature for TFLite
                         (model_float16.tflite with quantize="float16": float16 weights)
    labels.txt           one class name per line, in output order
    export.json          classes, the exact input, the signatures, the pipeline, versions

"After headstart's resize" means `headstart.extract.decode_pixels(data, s)`: EXIF
orientation applied, first frame, 8-bit RGB (alpha composited on white), PIL bilinear
resize to s x s (JPEGs at least 2s on their short side first decoded at reduced size).
Those pixels give the probabilities of `predict` to within float32 rounding.
The `images` signature decodes with TensorFlow instead (tf.io.decode_jpeg with
INTEGER_ACCURATE DCT, tf.image.resize bilinear with antialias, rounded to uint8):
no EXIF rotation, alpha dropped rather than composited, and pixels that differ from
PIL's by a few levels, so its probabilities differ slightly (measured in bench/deploy.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from headstart.classify.fused import build_classifier
from headstart.classify.head import Head
from headstart.classify.options import EXPORT_FORMATS, EXPORT_OPTIONS
from headstart.classify.persist import load_head
from headstart.classify.softmax import import_keras, save_keras
from headstart.options import check_options
from headstart.outputs import FolderKind, check_replaceable, replace_folder

FORMAT = "headstart-export"
FORMAT_VERSION = 1
EXPORT_JSON = "export.json"
LABELS = "labels.txt"
KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model"
PIXELS_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "images"
# export-head's and fine-tune's folder (fine-tune adds metrics.json and its curves)
EXPORT_FOLDER = FolderKind(
    "export", EXPORT_JSON, formats=(FORMAT,),
    names=r"model\.keras|saved_model|labels\.txt|model(_float16)?\.tflite|export\.json|"
          r"metrics\.json|training_curves\.png")


def tflite_name(quantize: str) -> str:
    """model.tflite, or model_float16.tflite for float16 weights."""
    return "model.tflite" if quantize == "none" else f"model_{quantize}.tflite"


@dataclass
class Exported:
    """What was written: the directory and each artifact's size in bytes."""

    directory: Path
    sizes: dict[str, int]  # file or folder name -> bytes (a folder: all files in it)
    model: object  # the keras.Model that was saved


LOADING_HUB = ("model.keras holds KerasHub layers: `import keras_hub` (pip install keras-hub) "
               "before keras.saving.load_model; saved_model/ and the TFLite file need "
               "neither headstart nor keras-hub")


def hub_float32_twin(keras, info, head: Head, model) -> Callable | None:
    """For a KerasHub classifier computing in bfloat16 or float16: what makes its float32
    twin for TFLite (the preset's backbone rebuilt in float32, then every weight of `model`
    copied, fine-tuned ones included); None otherwise (float32_copy applies)."""
    if not info.preset or head.identity.precision == "float32":
        return None
    from headstart.extract.hub import feature_model

    def twin():
        copy = build_classifier(keras, feature_model(keras, info, head.identity.layer), head,
                                info.mode, (info.scale, info.offset))
        copy.set_weights(model.get_weights())
        return copy

    return twin


def export_head(head_dir: str | Path, out_dir: str | Path, *, tflite: bool = False,
                quantize: str = "none", formats: Sequence[str] = EXPORT_FORMATS,
                weights_path: str | Path | None = None,
                preset: str | Path | None = None,
                log: Callable[[str], None] | None = None) -> Exported:
    """Fuse the backbone recorded with the head at `head_dir` and the head; save in `out_dir`.

    quantize: "none" or "float16" (float16 weights in the TFLite file; implies tflite).
    formats: which of EXPORT_FORMATS to write ("keras": model.keras, "saved_model":
        saved_model/); both by default, at least one.
    weights_path: the extraction's weights file when it moved (its sha256 must match).
    preset: the KerasHub preset folder when the features came from one that moved.
    out_dir is replaced as a whole once everything is written (a kill leaves the old one);
    it must be absent, empty, or an earlier export (headstart.outputs).
    Raises UsageError (options), HeadError (head), WeightsError (weights), OutputError
    (out_dir holds other files), all before the backbone is built.
    """
    from headstart.classify.predict import backbone_for_head

    log = log or (lambda line: None)
    check_options({"quantize": quantize, "formats": formats}, EXPORT_OPTIONS)
    formats = tuple(name for name in EXPORT_FORMATS if name in formats)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, EXPORT_FOLDER)
    head = load_head(head_dir)
    backbone = backbone_for_head(head, weights_path, preset)
    keras, _ = import_keras()
    info = backbone.info
    model = build_classifier(keras, backbone.model, head, info.mode, (info.scale, info.offset))
    float32_model = hub_float32_twin(keras, info, head, model)
    log(f"{head.kind} head on {head.identity.model} {head.identity.layer}: "
        f"{model.count_params():,} parameters; writing {out_dir}/")
    details = {"head": {"kind": head.kind, "directory": str(Path(head_dir).resolve())}}
    sizes = replace_folder(out_dir, EXPORT_FOLDER, lambda staging: write_export(
        model, staging, head, tflite=tflite or quantize != "none", quantize=quantize,
        formats=formats, details=details, log=log, resize=info.resize,
        float32_model=float32_model))
    return Exported(out_dir, sizes, model)


def write_export(model, directory: Path, head: Head, *, tflite: bool = False,
                 quantize: str = "none", formats: Sequence[str] = EXPORT_FORMATS,
                 details: dict | None = None,
                 log: Callable[[str], None] = lambda line: None,
                 resize: Callable | None = None,
                 float32_model: Callable | None = None) -> dict[str, int]:
    """Write model.keras and saved_model/ (those of `formats`), labels.txt, [TFLite] and
    export.json into `directory`.

    model: a classifier from build_classifier (pixels (n, s, s, 3) -> (n, C)).
    head: gives the classes and the feature pipeline recorded in export.json.
    resize: a KerasHub preset's converter geometry (hub.ConverterResize), which the
        `images` signature applies in its graph; None: the bilinear squash.
    float32_model: makes the float32 copy for TFLite (default: float32_copy(model)).
    Returns each artifact's size in bytes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    if "keras" in formats:
        save_keras(model, directory / KERAS_FILE)
        log(f"  {KERAS_FILE}")
        files.append(KERAS_FILE)
    if "saved_model" in formats:
        save_signatures(model, directory / SAVED_MODEL, head.classes, resize)
        log(f"  {SAVED_MODEL}/ (signatures {PIXELS_SIGNATURE}: pixels, {BYTES_SIGNATURE}: "
            "encoded bytes)")
        files.append(SAVED_MODEL)
    tflite_precision = None
    if tflite:
        name = tflite_name(quantize)
        float32 = float32_model() if float32_model else float32_copy(model)
        if float32 is model and SAVED_MODEL in files:
            source = directory / SAVED_MODEL
        else:  # TFLite converts from a SavedModel, and has no bfloat16 or float16
            # kernels: a float32 copy where the model is not float32
            source = directory.parent / f".{directory.name}.float32-saved-model"
            shutil.rmtree(source, ignore_errors=True)
            save_signatures(float32, source, head.classes, resize)
        try:
            (directory / name).write_bytes(convert_tflite(source, quantize))
        finally:
            if source != directory / SAVED_MODEL:
                shutil.rmtree(source, ignore_errors=True)
        tflite_precision = "float32"
        files.append(name)
        log(f"  {name}" + ("" if float32 is model else
                           f" (computes in float32; the features were made in "
                           f"{head.identity.precision})"))
    (directory / LABELS).write_text("".join(f"{c}\n" for c in head.classes), encoding="utf-8")
    size, dtype = int(model.input.shape[1]), str(model.input.dtype)
    description = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "classes": list(head.classes),
        "input": {"name": "pixels", "dtype": dtype, "shape": [None, size, size, 3],
                  "channels": "RGB", "range": "0..255",
                  "resize": f"{head.identity.resize} to {size}x{size} "
                            "(headstart.extract.decode_pixels)"},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [None, len(head.classes)],
                   "classes": "labels.txt, in this order"},
        "signatures": {
            PIXELS_SIGNATURE: f"pixels {dtype} (n, s, s, 3) -> probabilities, class_index, "
                              "class_name",
            BYTES_SIGNATURE: "images string (n,) encoded JPEG/PNG/GIF/BMP -> the same outputs; "
                             "decoded by TensorFlow (no EXIF rotation), resized "
                             + ("by the preset's converter geometry" if resize else
                                "bilinear")},
        "preprocessing": f"{head.identity.preprocessing}, inside the model",
        "pipeline": asdict(head.identity), "files": files + [LABELS],
        "formats": list(formats),
        "precision": {"keras_and_saved_model": head.identity.precision,
                      **({"tflite": tflite_precision} if tflite_precision else {})},
        "versions": versions(), **(details or {}),
        **({"loading": LOADING_HUB} if resize else {}),
    }
    path = directory / EXPORT_JSON
    path.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return {name: disk_size(directory / name) for name in files}


def save_signatures(model, path: Path, classes: list[str], resize: Callable | None = None
                    ) -> None:
    """A SavedModel with the pixels signature (serving_default) and the encoded-bytes one.

    A tf.Module that tracks the model's TensorFlow variables themselves: each is saved
    once, and TFLite's converter can freeze them. (Keras 3.15's ExportArchive, which
    `model.export` uses, saved every variable twice under TensorFlow 2.21, and a module
    tracking the Keras model instead left TFLite's converter without the weights.)
    """
    _, tf = import_keras()
    size, dtype = int(model.input.shape[1]), tf.as_dtype(model.input.dtype)
    names = tf.constant(list(classes))

    def outputs(probabilities):
        index = tf.argmax(probabilities, axis=1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_index": index,
                "class_name": tf.gather(names, index)}

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__(name="classifier")
            self.tf_variables = [variable.value for variable in model.variables]

        @tf.function(input_signature=[
            tf.TensorSpec([None, size, size, 3], dtype, name="pixels")])
        def from_pixels(self, pixels):
            return outputs(model(pixels, training=False))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def from_images(self, images):
            pixels = tf.map_fn(lambda data: decode_in_graph(tf, data, size, resize), images,
                               fn_output_signature=tf.TensorSpec([size, size, 3], dtype))
            return self.from_pixels(pixels)  # one trace of the model serves both

    module = Classifier()
    tf.saved_model.save(module, str(path), signatures={
        PIXELS_SIGNATURE: module.from_pixels, BYTES_SIGNATURE: module.from_images})


def decode_in_graph(tf, data, size: int, resize: Callable | None = None):
    """Encoded image bytes (scalar string) -> uint8 (size, size, 3) RGB, in TensorFlow ops.

    What the `images` signature does: JPEG decoded with libjpeg-turbo's accurate integer
    DCT, other formats by tf.io.decode_image (first frame), bilinear resize with
    antialiasing, rounded. No EXIF rotation; alpha dropped, not composited on white.
    resize: a KerasHub preset's converter geometry (hub.ConverterResize): the decoded
    image at its own aspect ratio goes through it instead, float32 and not rounded.
    """
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    if resize is not None:
        return resize.tensor(tf.cast(image, tf.float32))
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def float32_copy(model):
    """`model` itself when every layer computes in float32, else a copy that does, with the
    same weights (float32 variables under Keras' mixed policies too).

    For TFLite, whose converter has no bfloat16 kernels ("'tf.Mul' op is neither a custom
    op nor a flex op", TensorFlow 2.21) and runs float16 models in float32 anyway.
    """
    keras, _ = import_keras()

    def compute_dtypes(layers):
        for layer in layers:
            yield layer.dtype_policy.compute_dtype
            if isinstance(layer, keras.Model):
                yield from compute_dtypes(layer.layers)

    if set(compute_dtypes(model.layers)) <= {"float32", "uint8"}:
        return model

    def in_float32(layer):
        config = layer.get_config()
        if "dtype" in config:  # layers; graph operations (Add, ...) have no dtype policy
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def convert_tflite(saved_model: Path, quantize: str = "none") -> bytes:
    """The serving_default signature of a SavedModel from save_signatures, for TFLite.

    Input "pixels" uint8 (n, s, s, 3); outputs probabilities, class_index, class_name.
    quantize="float16": weights stored as float16 (about half the size), computed in
    float32 (TFLite's post-training float16 quantization).
    """
    _, tf = import_keras()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model),
                                                         signature_keys=[PIXELS_SIGNATURE])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def versions() -> dict[str, str | None]:
    """Versions of the packages that made the export (None where one is not installed)."""
    found = {}
    for name in ("headstart", "tensorflow", "keras"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
