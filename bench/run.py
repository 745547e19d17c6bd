"""Benchmark headstart on this machine: one run, one table, one JSON file.

    python bench/run.py                       # everything (about 20 minutes on 2 CPU cores)
    python bench/run.py --quick               # smaller sizes, a few minutes
    python bench/run.py --only ceiling,e2e    # some sections

Sections: ceiling (bare fc2 model, three ways of calling it), e2e (extract-features on
pets-1k and on large photos, as a ratio to the ceiling), memory (peak RSS of
extract-features for growing image counts), heads (fit-head wall time), store (size
and load time per dtype, compression and chunk shape), float16 (accuracy cost).
Ratios are computed within the run, because absolute numbers on a shared machine drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PETS = HERE.parent.parent / "shared" / "data" / "pets-1k"
SECTIONS = ("ceiling", "e2e", "memory", "heads", "store", "float16")


def machine() -> dict:
    """CPU model, cores, TensorFlow build and GPUs: what the numbers depend on."""
    from headstart.tf_quiet import import_keras

    import_keras()
    import tensorflow as tf

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    build = tf.sysconfig.get_build_info()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "tensorflow": tf.__version__, "tf_cuda_build": bool(build.get("is_cuda_build")),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def timed(fn, repeat: int) -> float:
    """Best-of-`repeat` seconds for fn() after one warm-up call (best is least noisy here)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_ceiling(backbone, batch_size: int, batches: int) -> dict:
    """images/s of the bare fc2 model on pre-decoded, pre-processed batches."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (batch_size, 224, 224, 3), dtype=np.uint8)
    x = backbone._preprocess(pixels.astype(np.float32))
    tensor = tf.constant(x)
    model = backbone.model
    ways = {
        "compiled tf.function": lambda: backbone._forward(tensor).numpy(),
        "eager model(x)": lambda: model(tensor, training=False).numpy(),
        "predict_on_batch": lambda: model.predict_on_batch(x),
    }
    result = {}
    for name, call in ways.items():
        seconds = timed(lambda: [call() for _ in range(batches)], repeat=2)
        result[name] = batch_size * batches / seconds
    result["best"] = max(result.values())
    return result


def make_large_photos(target: Path, count: int) -> Path:
    """3000x2000 JPEGs made from pets-1k photos (upscaled), two classes."""
    from PIL import Image

    for cls in ("Cat", "Dog"):
        (target / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((PETS / cls).glob("*.jpg"))[: count // 2]:
            with Image.open(src) as image:
                image.convert("RGB").resize((3000, 2000), Image.BICUBIC).save(
                    target / cls / src.name, quality=90)
    return target


def subset(target: Path, count: int, source: Path = PETS) -> Path:
    """`count` images (symlinks), cycling through pets-1k when more are asked for than exist."""
    files = sorted(source.rglob("*.jpg"))
    for i in range(count):
        src = files[i % len(files)]
        dst = target / src.parent.name / f"{i:06d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dst)
    return target


def bench_e2e(backbone, work: Path, pets_count: int, large_count: int, batch_size: int) -> dict:
    from headstart.extract import extract_features

    result = {}
    for name, folder in (("pets-1k (180x180 JPEG)", subset(work / "pets", pets_count)),
                         ("large photos (3000x2000 JPEG)", make_large_photos(work / "large", large_count))):
        summary = extract_features(folder, work / f"{len(result)}.h5", weights="none",
                                   batch_size=batch_size, backbone=backbone, progress=False,
                                   log=lambda line: None)
        result[name] = {"images": summary.added, "images_per_s": summary.images_per_s}
    return result


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of a child process, from the kernel's own accounting."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command} failed with status {status}")
    return usage.ru_maxrss / 1024


def bench_memory(work: Path, sizes: list[int], batch_size: int) -> dict:
    cli = shutil.which("extract-features") or "extract-features"
    result = {}
    for count in sizes:
        folder = subset(work / f"mem{count}", count)
        result[count] = peak_rss_mb([cli, str(folder), "-o", str(work / f"mem{count}.h5"),
                                     "--weights", "none", "--batch-size", str(batch_size), "-q"])
    return result


def fc2_like(n: int, dim: int = 4096, seed: int = 0, separable: bool = True):
    """Rows shaped like fc2 output: non-negative, about half zeros; two classes, lightly separable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = rng.normal(0, 1, (n, dim)).astype(np.float32)
    if separable:
        rows[:, :64] += (labels[:, None] * 2 - 1) * 0.25
    return np.maximum(rows, 0), labels


def synthetic_store(path: Path, n: int, dtype="float32", compression="none") -> Path:
    from headstart.extract.backbone import pipeline_identity
    from headstart.features import write_store

    rows, labels = fc2_like(n)
    classes = ["a", "b"]
    paths = [f"{classes[c]}/{i:06d}.jpg" for i, c in enumerate(labels)]
    order = np.argsort(paths)
    return write_store(path, features=rows[order], paths=[paths[i] for i in order],
                       hashes=[f"{i:064x}" for i in range(n)], classes=classes,
                       identity=pipeline_identity("none (seed 0)", dtype),
                       attrs={"complete": True}, compression=compression)


def bench_heads(work: Path, n: int, pets_store: Path | None) -> dict:
    cli = shutil.which("fit-head") or "fit-head"
    stores = {f"synthetic {n} x 4096": synthetic_store(work / "heads.h5", n)}
    if pets_store is not None:
        stores["pets-1k"] = pets_store
    result = {}
    for label, store in stores.items():
        for model in ("logreg", "softmax", "both"):
            start = time.perf_counter()
            done = subprocess.run([cli, "--features", str(store), "--model", model, "-o",
                                   str(work / f"head-{model}")], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            result[f"{label}: {model}"] = seconds if done.returncode == 0 else f"failed: {done.stderr.strip()[-200:]}"
    tiny = synthetic_store(work / "tiny.h5", 60)
    code = ("import sys, time; t = time.perf_counter(); from headstart.classify.cli import fit_head_main; "
            "rc = fit_head_main(['--features', sys.argv[1], '--model', 'logreg', '-o', sys.argv[2]]); "
            "print(time.perf_counter() - t, 'tensorflow' in sys.modules)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(tiny), str(work / "tiny-head")],
                          capture_output=True, text=True)
    result["logreg start-up on a tiny store (process wall s)"] = time.perf_counter() - start
    result["tensorflow imported by logreg"] = done.stdout.strip().split()[-1:] == ["True"]
    return result


def bench_store(work: Path, n: int) -> dict:
    import h5py
    from headstart.features import open_store

    result = {}
    for dtype in ("float32", "float16"):
        for compression in ("none", "lzf", "gzip"):
            path = synthetic_store(work / f"s-{dtype}-{compression}.h5", n, dtype, compression)
            subprocess.run(["sync"], check=False)
            seconds = timed(lambda: open_store(path).load_features(), repeat=2)
            result[f"{dtype}, {compression}"] = {"MB": path.stat().st_size / 1e6, "load_s": seconds}
    rows, _ = fc2_like(n)
    for chunk in (1, 16, 64, 256):
        path = work / f"chunk{chunk}.h5"
        start = time.perf_counter()
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("features", shape=(0, 4096), maxshape=(None, 4096), chunks=(chunk, 4096), dtype="f4")
            for i in range(0, n, 256):  # appended in commits of 256 rows, as extraction does
                ds.resize(min(i + 256, n), axis=0)
                ds[i:i + 256] = rows[i:i + 256]
        write_s = time.perf_counter() - start
        with h5py.File(path, "r") as f:
            load_s = timed(lambda f=f: f["features"][...], repeat=2)
            picks = np.sort(np.random.default_rng(0).choice(n, 512, replace=False))
            pick_s = timed(lambda f=f: f["features"][picks], repeat=1)
        result[f"chunk ({chunk}, 4096)"] = {"MB": path.stat().st_size / 1e6, "append_s": write_s,
                                            "load_s": load_s, "512_random_rows_s": pick_s}
    return result


def bench_float16(work: Path, pets_store: Path | None) -> dict:
    """Test accuracy of logreg on the same images stored as float32 and as float16."""
    if pets_store is None:
        return {"skipped": "needs --weights-file for a realistic pets-1k store"}
    import h5py
    from headstart.features import write_store
    from headstart.features.reader import open_h5, read_index

    with open_h5(pets_store) as f:
        index = read_index(f)
        rows = f["features"][...]
    half_identity = index.identity.__class__(**{**index.identity.as_attrs(), "dtype": "float16"})
    half = write_store(work / "pets16.h5", features=rows, paths=index.paths, hashes=index.hashes,
                       classes=index.classes, identity=half_identity, attrs={"complete": True})
    cli = shutil.which("fit-head") or "fit-head"
    result = {}
    for label, store in (("float32", pets_store), ("float16", half)):
        out = work / f"f16-{label}"
        subprocess.run([cli, "--features", str(store), "--model", "logreg", "-o", str(out)],
                       check=True, capture_output=True)
        metrics = json.loads(next(out.rglob("metrics.json")).read_text())
        result[label] = {"MB": Path(store).stat().st_size / 1e6, "metrics": metrics}
    del h5py
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--weights-file", help="realistic VGG16 weights for the pets-1k heads and float16 sections")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default=str(HERE / "results" / "bench.json"))
    args = parser.parse_args()
    only = set(args.only.split(","))
    sizes = dict(pets=200 if args.quick else 1000, large=16 if args.quick else 64,
                 memory=[100, 300] if args.quick else [100, 1000, 5000],
                 rows=5000 if args.quick else 25000, ceiling_batches=2 if args.quick else 8)
    report: dict = {"machine": machine(), "sizes": sizes}
    from headstart.extract.backbone import Backbone, WeightsSpec

    backbone = Backbone(WeightsSpec("none", 0)) if only & {"ceiling", "e2e"} else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "ceiling" in only:
            report["ceiling"] = bench_ceiling(backbone, args.batch_size, sizes["ceiling_batches"])
        if "e2e" in only:
            report["e2e"] = bench_e2e(backbone, work, sizes["pets"], sizes["large"], args.batch_size)
            if "ceiling" in report:
                for entry in report["e2e"].values():
                    entry["ratio_to_ceiling"] = entry["images_per_s"] / report["ceiling"]["best"]
        if "memory" in only:
            report["memory_peak_rss_mb"] = bench_memory(work, sizes["memory"], args.batch_size)
        pets_store = None
        if args.weights_file and only & {"heads", "float16"}:
            from headstart.extract import extract_features

            pets_store = work / "pets-real.h5"
            extract_features(PETS, pets_store, weights=args.weights_file, progress=False,
                             log=lambda line: None)
        if "heads" in only:
            report["heads_wall_s"] = bench_heads(work, sizes["rows"], pets_store)
        if "store" in only:
            report["store"] = bench_store(work, sizes["rows"])
        if "float16" in only:
            report["float16"] = bench_float16(work, pets_store)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
