"""Measure export-head and fine-tune on real photos: sizes, agreement with predict, accuracy.

    python bench/deploy.py --weights-file vgg16.weights.h5      # about 25 minutes on 2 cores
    python bench/deploy.py --weights-file vgg16.weights.h5 --epochs 1 --skip-fine-tune

Steps, in a work folder that is kept so a second run reuses the store and heads:
extract-features on the photos (default pets-1k) with the weights file, fit-head --model
both, fine-tune the softmax head (block5 to fc2, a subprocess: its own memory and
progress bar), export-head of both heads (.keras, SavedModel, TFLite, TFLite float16),
and the agreement of every exported format with `predict` on the test split's photos:
largest absolute difference of any class probability, and the share of photos given
the same class. Prints markdown tables; writes bench/results/deploy.json and deploy.md.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import PETS, cli, machine  # noqa: E402  (bench/run.py: one machine description)

BATCH = 16


def run(command: str, *args) -> float:
    """Run an installed headstart command; its wall time in seconds (raises if it fails)."""
    start = time.perf_counter()
    subprocess.run([cli(command), *map(str, args)], check=True)
    return time.perf_counter() - start


def prepare(photos: Path, weights: Path, work: Path) -> dict:
    """The store and both heads (seconds for each; an up-to-date store is not redone)."""
    store, heads = work / "features.h5", work / "heads"
    times = {"extract_s": run("extract-features", photos, "-o", store, "--weights", weights, "-q")}
    if not (heads / "softmax" / "head.json").is_file():
        times["fit_s"] = run("fit-head", "--features", store, "--model", "both", "-o", heads,
                             "--no-plots", "-q")
    return times


def test_photos(head_dir: Path, photos: Path) -> tuple[list[Path], list[str]]:
    """The photos of the head's test split and their classes."""
    with open(head_dir / "split.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    return [photos / r["path"] for r in rows], [r["class"] for r in rows]


def batched(fn, items, size: int = BATCH) -> np.ndarray:
    return np.concatenate([np.asarray(fn(items[i:i + size])) for i in range(0, len(items), size)])


def agreement(probabilities: np.ndarray, reference: np.ndarray) -> dict:
    return {"max_abs_diff": float(np.abs(probabilities - reference).max()),
            "mean_abs_diff": float(np.abs(probabilities - reference).mean()),
            "same_class": float((probabilities.argmax(1) == reference.argmax(1)).mean())}


def bench_export(work: Path, photos: Path, kind: str, all_formats: bool) -> dict:
    """Export one head, then compare each format with predict on the test photos."""
    import keras
    import tensorflow as tf

    from headstart.classify import load_head, predict_images
    from headstart.classify.export import PIXELS_SIGNATURE, convert_tflite
    from headstart.classify.export import export_head as export
    from headstart.extract import decode_pixels

    head_dir, out = work / "heads" / kind, work / f"model-{kind}"
    start = time.perf_counter()
    exported = export(head_dir, out, tflite=all_formats)
    result = {"export_s": time.perf_counter() - start, "sizes_MB": {}}
    result["sizes_MB"] = {name: size / 1e6 for name, size in exported.sizes.items()}
    del exported
    files, classes = test_photos(head_dir, photos)
    head = load_head(head_dir)
    reference = predict_images(head, files, batch_size=BATCH).probabilities
    result["photos"] = len(files)
    result["predict_accuracy"] = float(np.mean(
        [head.classes[i] == c for i, c in zip(reference.argmax(1), classes, strict=True)]))
    pixels = np.stack([decode_pixels(f.read_bytes(), head.identity.input_size) for f in files])
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    result["model.keras (pixels)"] = agreement(model.predict(pixels, batch_size=BATCH,
                                                             verbose=0), reference)
    del model
    gc.collect()
    if not all_formats:
        return result
    encoded = [f.read_bytes() for f in files]
    result["TF decode vs headstart's pixels"] = pixel_difference(encoded, pixels)
    result.update(saved_model_agreement(out / "saved_model", pixels, encoded, reference))
    gc.collect()
    start = time.perf_counter()
    (out / "model_float16.tflite").write_bytes(convert_tflite(out / "saved_model", "float16"))
    result["tflite_float16_convert_s"] = time.perf_counter() - start
    result["sizes_MB"]["model_float16.tflite"] = (out / "model_float16.tflite").stat().st_size / 1e6
    lite = {}
    for name in ("model.tflite", "model_float16.tflite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter points to ai_edge_litert
            interpreter = tf.lite.Interpreter(model_path=str(out / name))
        runner = interpreter.get_signature_runner(PIXELS_SIGNATURE)
        start = time.perf_counter()
        lite[name] = batched(lambda x, r=runner: r(pixels=x)["probabilities"], pixels)
        result[f"{name}_images_per_s"] = len(files) / (time.perf_counter() - start)
        result[f"{name} (pixels)"] = agreement(lite[name], reference)
        del interpreter, runner
        gc.collect()
    result["model_float16.tflite vs model.tflite"] = agreement(lite["model_float16.tflite"],
                                                               lite["model.tflite"])
    return result


def pixel_difference(encoded: list[bytes], pixels: np.ndarray) -> dict:
    """How far the `images` signature's decoding (the same TensorFlow ops) is from PIL's."""
    import tensorflow as tf

    from headstart.classify.export import decode_in_graph

    levels = []
    for data, ours in zip(encoded, pixels, strict=True):
        theirs = decode_in_graph(tf, tf.constant(data), pixels.shape[1]).numpy()
        levels.append(np.abs(theirs.astype(np.int16) - ours.astype(np.int16)))
    levels = np.stack(levels)
    return {"mean_levels": float(levels.mean()), "max_levels": int(levels.max()),
            "identical": float((levels == 0).mean())}


def saved_model_agreement(path: Path, pixels: np.ndarray, encoded: list[bytes],
                          reference: np.ndarray) -> dict:
    import tensorflow as tf

    from headstart.classify.export import BYTES_SIGNATURE, PIXELS_SIGNATURE

    signatures = tf.saved_model.load(str(path)).signatures
    from_pixels, from_bytes = signatures[PIXELS_SIGNATURE], signatures[BYTES_SIGNATURE]
    return {
        "SavedModel serving_default (pixels)": agreement(batched(
            lambda x: from_pixels(pixels=tf.constant(x))["probabilities"], pixels), reference),
        "SavedModel images (encoded bytes, TF decode)": agreement(batched(
            lambda x: from_bytes(images=tf.constant(x))["probabilities"], encoded), reference),
    }


def bench_fine_tune(work: Path, epochs: int, batch_size: int, patience: int) -> dict:
    """fine-tune as a user runs it. A finished result in the work folder is reused (the
    command says so and exits); an interrupted one resumes. metrics.json's train_seconds
    adds up the epochs of every run."""
    out = work / "finetuned"
    done_before = (out / "metrics.json").is_file()
    wall = run("fine-tune", "--features", work / "features.h5", "--head",
               work / "heads" / "softmax", "-o", out, "--epochs", epochs, "--batch-size",
               batch_size, "--patience", patience)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"wall_s": None if done_before else wall, "epochs": epochs,
            "batch_size": batch_size, "metrics": metrics}


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores visible, {m['memory_gb']} GB; "
           f"Python {m['python']}, TensorFlow {m['tensorflow']} "
           f"({'CUDA' if m['tf_cuda_build'] else 'CPU'} build); "
           f"GPUs: {', '.join(m['gpus']) or 'none'}.\n"]
    soft = report.get("export", {}).get("softmax")
    if soft:
        out += ["| export of the softmax head (VGG16 fc2) | MB |", "| --- | ---: |"]
        out += [f"| {name} | {size:.1f} |" for name, size in soft["sizes_MB"].items()]
        out.append("")
        out += [f"| agreement with predict ({soft['photos']} test photos) | max abs diff "
                "| mean abs diff | same class |", "| --- | ---: | ---: | ---: |"]
        for kind, result in report["export"].items():
            for name, value in result.items():
                if isinstance(value, dict) and "max_abs_diff" in value:
                    out.append(f"| {kind}: {name} | {value['max_abs_diff']:.2e} | "
                               f"{value['mean_abs_diff']:.2e} | {value['same_class']:.2%} |")
        out.append("")
        pixels = soft.get("TF decode vs headstart's pixels")
        if pixels:
            out += [f"TensorFlow's decode and resize vs headstart's pixels: mean "
                    f"{pixels['mean_levels']:.2f} levels, max {pixels['max_levels']}, "
                    f"{pixels['identical']:.1%} identical.", ""]
    tune = report.get("fine_tune")
    if tune:
        metrics = tune["metrics"]
        out += [f"| fine-tune block5..fc2, {metrics['selection']['epochs_run']} epochs "
                f"(best {metrics['selection']['best_epoch']}), batch {tune['batch_size']} "
                "| before (head) | after |", "| --- | ---: | ---: |"]
        for split in ("validation", "test"):
            n = metrics["before"][split]["n"]
            for key in ("accuracy", "log_loss"):
                b, a = metrics["before"][split][key], metrics["after"][split][key]
                cells = (f"{b:.2%}", f"{a:.2%}") if key == "accuracy" else (f"{b:.4f}",
                                                                            f"{a:.4f}")
                out.append(f"| {split} {key.replace('_', ' ')} ({n} photos) | {cells[0]} | "
                           f"{cells[1]} |")
        params = metrics["parameters"]
        wall = f", whole command {tune['wall_s']:.0f} s" if tune["wall_s"] else ""
        out += ["", f"Trainable {params['trainable']:,}, frozen {params['non_trainable']:,}; "
                f"training {metrics['train_seconds']:.0f} s "
                f"({metrics['train_seconds'] / metrics['selection']['epochs_run']:.0f} s per "
                f"epoch, validation included){wall}.", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-file", type=Path, required=True,
                        help="VGG16 weights (include_top) for realistic features")
    parser.add_argument("--photos", type=Path, default=PETS,
                        help="class folders of photos (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/headstart-deploy-bench"),
                        help="kept between runs (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-fine-tune", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "deploy.json")
    args = parser.parse_args()
    if not args.photos.is_dir():
        parser.error(f"No photo folder at '{args.photos}'; pass --photos DIR.")
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(), "photos": str(args.photos)}
    report["prepare"] = prepare(args.photos, args.weights_file, args.work)
    if not args.skip_fine_tune:
        report["fine_tune"] = bench_fine_tune(args.work, args.epochs, args.batch_size,
                                              args.patience)
    report["export"] = {"softmax": bench_export(args.work, args.photos, "softmax", True),
                        "logreg": bench_export(args.work, args.photos, "logreg", False)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str))
    args.output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"Written: {args.output} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
