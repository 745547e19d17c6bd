"""Benchmark headstart on this machine: one run, one table, one JSON file.

    python bench/run.py                       # everything (about 20 minutes on 2 CPU cores)
    python bench/run.py --quick               # smaller sizes, a few minutes
    python bench/run.py --only ceiling,e2e    # some sections
    python bench/run.py --weights-file vgg16.weights.h5   # pets-1k heads, float16, precision
                                                          # on realistic features

Sections: ceiling (bare fc2 model, three ways of calling it), e2e (extract-features at
the default precision on pets-1k and on large photos, as a ratio to the ceiling), auto
(the default --precision auto against --precision float32, end to end), host (the
pipeline without a model on photos of PetImages' sizes and phone photos, 1 and 2
decoding workers), memory (peak RSS of extract-features for growing image counts),
heads (fit-head wall time), store (size and load time per dtype, compression and chunk
shape), float16 (accuracy cost of storing half precision), precision (rows of
mixed-precision inference against float32), accuracy (pets-1k heads on float32 rows
against rows of the auto precision; needs --weights-file).
Ratios are computed within the run, because absolute numbers on a shared machine drift.
Prints markdown tables and writes bench/results/bench.json and bench.md.
"""

from __future__ import annotations

import argparse
import contextlib
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
# Photos to extract: class sub-folders of JPEGs; --photos overrides.
PETS = HERE.parent.parent / "shared" / "data" / "pets-1k"
SECTIONS = ("ceiling", "e2e", "auto", "host", "memory", "heads", "store", "float16",
            "precision", "batching", "accuracy")


def cli(name: str) -> str:
    """The installed command next to this interpreter, so a bare `python bench/run.py` works."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.exists() else shutil.which(name) or name


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def machine() -> dict:
    """CPU model, cores, TensorFlow build and GPUs: what the numbers depend on."""
    from headstart.tf_quiet import import_keras

    import_keras()
    import tensorflow as tf

    from headstart.extract.precision import BF16_FLAGS, choose, cpu_flags, this_machine

    build = tf.sysconfig.get_build_info()
    flags = cpu_flags()
    return {
        "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
        "cpu_flags": sorted(f for f in flags if f in {*BF16_FLAGS, "avx2", "avx512f"}),
        "auto_precision": choose(this_machine()).line(),
        "python": platform.python_version(),
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


def bench_ceiling(backbone, batch_size: int, batches: int,
                  ways: tuple[str, ...] = ("compiled tf.function", "eager model(x)",
                                           "predict_on_batch")) -> dict:
    """images/s of the bare fc2 model on pre-decoded, pre-processed batches."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (batch_size, 224, 224, 3), dtype=np.uint8)
    x = backbone._preprocess(pixels.astype(np.float32))
    tensor = tf.constant(x)
    model = backbone.model
    calls = {
        "compiled tf.function": lambda: backbone._forwards[0](tensor).numpy(),
        "eager model(x)": lambda: model(tensor, training=False).numpy(),
        "predict_on_batch": lambda: model.predict_on_batch(x),
    }
    result = {}
    for name in ways:
        call = calls[name]
        seconds = timed(lambda call=call: [call() for _ in range(batches)], repeat=2)
        result[name] = batch_size * batches / seconds
    result["best"] = max(result.values())
    return result


def bench_auto(work: Path, count: int, rounds: int = 2) -> dict:
    """extract-features images/s at --precision auto and at float32 on the same photos.

    The two alternate (float32, auto, float32, auto, ...) so drift on a shared machine
    falls on both; the ratio of each round and the best rate of each are reported.
    """
    from headstart.extract import extract_features
    from headstart.extract.backbone import Backbone, WeightsSpec

    folder = subset(work / "auto-pets", count)
    models = {p: Backbone(WeightsSpec("none", 0), precision=p) for p in ("float32", "auto")}
    auto = models["auto"].identity.precision
    rates: dict[str, list[float]] = {"float32": [], auto: []}
    for round_ in range(rounds):
        for name, model in models.items():
            summary = extract_features(folder, work / f"auto-{name}-{round_}.h5",
                                       weights="none", model=model, progress=False,
                                       log=lambda line: None)
            rates[model.identity.precision].append(summary.images_per_s)
    ratios = [a / f for a, f in zip(rates[auto], rates["float32"], strict=True)]
    return {"images": count, "auto": auto, "images_per_s": rates,
            "ratio_per_round": ratios, "ratio_of_best": max(rates[auto]) / max(rates["float32"])}


def make_petimages_like(target: Path, count: int, phone_share: float = 0.1) -> Path:
    """JPEGs of PetImages' sizes (500x375, quality 75, about 25 KB) and, every
    1/phone_share-th image, a 4032x3024 phone photo (quality 90, about 1.8 MB), made from
    the photos with a little sensor-like noise so files have realistic sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = sorted(PETS.rglob("*.jpg"))
    every = round(1 / phone_share) if phone_share else 0
    for i in range(count):
        src = files[i % len(files)]
        phone = bool(every) and i % every == every - 1
        size, noise, quality = ((4032, 3024), 4, 90) if phone else ((500, 375), 2, 75)
        with Image.open(src) as image:
            pixels = np.asarray(image.convert("RGB").resize(size, Image.BICUBIC), np.int16)
        pixels = pixels + rng.normal(0, noise, pixels.shape).astype(np.int16)
        dst = target / src.parent.name / f"{i:06d}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(dst, quality=quality)
    return target


class FreeBackbone:
    """A backbone that costs nothing: what is left is the host side (read, hash, decode,
    resize, batch, commit), the part that must keep a GPU fed."""

    replicas = 1

    def __init__(self):
        from headstart.extract.backbone import pipeline_identity

        self.identity = pipeline_identity("none (seed 0)")

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return np.zeros((len(pixels), 4096), np.float32)


@contextlib.contextmanager
def on_cores(count: int):
    """Run the block on the first `count` CPUs this process may use (threads started
    inside inherit it), so "per core" means one core, main thread included."""
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def bench_host(work: Path, count: int, rounds: int = 2) -> dict:
    """images/s of the whole pipeline with FreeBackbone and of decode_stream alone, on 1
    core with 1 decoding worker and on 2 cores with 2, on PetImages-sized photos alone and
    with 10% phone photos; the best of `rounds` alternating runs."""
    from headstart.extract import decode_stream, extract_features

    result = {}
    cores = min(2, len(os.sched_getaffinity(0)))
    for label, share in (("500x375 JPEGs", 0.0), ("500x375 + 10% 4032x3024", 0.1)):
        folder = make_petimages_like(work / f"host-{share}", count, share)
        files = sorted(folder.rglob("*.jpg"))
        for path in files:  # into the page cache: the disk is not what is measured
            path.read_bytes()
        rates: dict[str, list[float]] = {}
        for round_ in range(rounds):
            for n in range(1, cores + 1):
                with on_cores(n):
                    start = time.perf_counter()
                    done = sum(1 for _ in decode_stream(((str(f), f) for f in files),
                                                        workers=n))
                    decoded = done / (time.perf_counter() - start)
                    summary = extract_features(folder, work / f"host-{share}-{n}-{round_}.h5",
                                               weights="none", model=FreeBackbone(), workers=n,
                                               progress=False, log=lambda line: None)
                rates.setdefault(f"decode_stream, {n} core(s)", []).append(decoded)
                rates.setdefault(f"pipeline, {n} core(s)", []).append(summary.images_per_s)
        best = {k: max(v) for k, v in rates.items()}
        result[label] = {"images": count, "best_images_per_s": best, "all": rates}
        if cores == 2:
            result[label]["pipeline_2_over_1"] = (best["pipeline, 2 core(s)"]
                                                  / best["pipeline, 1 core(s)"])
    return result


def bench_batching(weights: str, count: int = 40) -> dict:
    """How far rows move with the batch shape, relative to the largest value: the same
    photos through fixed-shape backbones of batch 32 and 8, through the compiled model
    called on the last 8 photos alone (what an unpadded last batch was), and through the
    eager Keras call (what a Keras model outside headstart computes)."""
    from headstart.extract.backbone import Backbone, WeightsSpec
    from headstart.extract.images import decode_pixels

    files = sorted(PETS.rglob("*.jpg"))[:: max(1, 1000 // count)][:count]
    pixels = np.stack([decode_pixels(f.read_bytes()) for f in files])
    spec = WeightsSpec.parse(weights)
    result = {"images": len(pixels)}
    for precision in ("float32", "mixed_bfloat16"):
        b32, b8 = (Backbone(spec, precision=precision, batch_size=n) for n in (32, 8))
        rows = b32.embed(pixels)
        scale = float(np.abs(rows).max())
        import tensorflow as tf

        # The same compiled model without a fixed shape: what an unpadded last batch was.
        free_shape = tf.function(lambda x, model=b32.model: tf.cast(model(x, training=False),
                                                                    tf.float32))
        tail = free_shape(b32.preprocess(pixels[-8:])).numpy()
        result[precision] = {
            "batch 32, any grouping": float(np.abs(
                np.concatenate([b32.embed(pixels[i:i + 5]) for i in range(0, count, 5)])
                - rows).max()) / scale,
            "batch 8 vs batch 32": float(np.abs(b8.embed(pixels) - rows).max()) / scale,
            "compiled, 8 unpadded vs batch 32": float(np.abs(tail - rows[-8:]).max()) / scale,
            "eager model(x) vs compiled": float(np.abs(np.asarray(
                b32.model(b32.preprocess(pixels[-8:]), training=False), np.float32)
                - rows[-8:]).max()) / scale,
        }
    return result


def bench_accuracy(work: Path, weights: str | None) -> dict:
    """pets-1k test accuracy and log loss of both heads on float32 rows and on rows of the
    auto precision (same photos, same seed, so the same split)."""
    if not weights:
        return {"skipped": "needs --weights-file for realistic pets-1k features"}
    from headstart.extract import extract_features
    from headstart.extract.precision import choose, this_machine

    auto = choose(this_machine()).precision
    fit_head = cli("fit-head")
    result = {"auto": auto}
    for precision in dict.fromkeys(("float32", auto)):
        store = work / f"accuracy-{precision}.h5"
        summary = extract_features(PETS, store, weights=weights, precision=precision,
                                   progress=False, log=lambda line: None)
        out = work / f"accuracy-{precision}"
        subprocess.run([fit_head, "--features", str(store), "--model", "both", "-o", str(out),
                        "--no-plots", "-q"], check=True, capture_output=True)
        result[precision] = {"images_per_s": summary.images_per_s}
        for metrics in sorted(out.glob("*/metrics.json")):
            test = json.loads(metrics.read_text())["test"]
            result[precision][metrics.parent.name] = {"accuracy": test["accuracy"],
                                                     "log_loss": test.get("log_loss")}
    return result


def make_large_photos(target: Path, count: int) -> Path:
    """3000x2000 JPEGs made from the photos (upscaled), the same number per class."""
    from PIL import Image

    classes = sorted(p for p in PETS.iterdir() if p.is_dir())
    for folder in classes:
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for src in sorted(folder.rglob("*.jpg"))[: count // len(classes)]:
            with Image.open(src) as image:
                image.convert("RGB").resize((3000, 2000), Image.BICUBIC).save(
                    target / folder.name / src.name, quality=90)
    return target


def subset(target: Path, count: int) -> Path:
    """`count` images (symlinks), cycling through the photos when more are asked for than exist."""
    files = sorted(PETS.rglob("*.jpg"))
    for i in range(count):
        src = files[i % len(files)]
        dst = target / src.parent.name / f"{i:06d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src, dst)
    return target


def bench_e2e(backbone, work: Path, pets_count: int, large_count: int, batch_size: int,
              batches: int) -> dict:
    """extract-features images/s, each run bracketed by ceiling measurements.

    The ratio divides by the mean of the compiled-model rate just before and just after
    the run: on a shared machine the speed drifts over minutes, and a ceiling measured
    once at the start would turn that drift into a false ratio.
    """
    from headstart.extract import extract_features

    def ceiling() -> float:
        return bench_ceiling(backbone, batch_size, max(1, batches // 2),
                             ways=("compiled tf.function",))["best"]

    result = {}
    for name, folder in (("pets-1k (180x180 JPEG)", subset(work / "pets", pets_count)),
                         ("large photos (3000x2000 JPEG)",
                          make_large_photos(work / "large", large_count))):
        before = ceiling()
        summary = extract_features(folder, work / f"{len(result)}.h5", weights="none",
                                   batch_size=batch_size, model=backbone, progress=False,
                                   log=lambda line: None)
        around = (before + ceiling()) / 2
        result[name] = {"images": summary.added, "images_per_s": summary.images_per_s,
                        "ceiling_around": around,
                        "ratio_to_ceiling": summary.images_per_s / around}
    return result


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of a child process, from the kernel's own accounting."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command} failed with status {status}")
    return usage.ru_maxrss / 1024


def bench_memory(work: Path, sizes: list[int], batch_size: int) -> dict:
    cli_path = cli("extract-features")
    result = {}
    for count in sizes:
        folder = subset(work / f"mem{count}", count)
        result[count] = peak_rss_mb([cli_path, str(folder), "-o", str(work / f"mem{count}.h5"),
                                     "--weights", "none", "--batch-size", str(batch_size), "-q"])
    return result


def fc2_like(n: int, dim: int = 4096, seed: int = 0, separable: bool = True):
    """Rows like fc2 output: non-negative, about half zeros; two classes, lightly separable."""
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
    """Wall time of whole fit-head processes, and the fit time each head reports."""
    fit_head = cli("fit-head")
    stores = {f"synthetic {n:,} x 4096": synthetic_store(work / "heads.h5", n)}
    if pets_store is not None:
        stores["pets-1k"] = pets_store
    result = {}
    for label, store in stores.items():
        for model in ("logreg", "softmax", "both"):
            out = work / f"head-{model}"
            start = time.perf_counter()
            done = subprocess.run([fit_head, "--features", str(store), "--model", model, "-o",
                                   str(out)], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise RuntimeError(f"fit-head failed on {label}: {done.stderr.strip()[-300:]}")
            fits = {m.parent.name: json.loads(m.read_text())["fit_seconds"]
                    for m in sorted(out.glob("*/metrics.json"))}
            result[f"{label}: {model}"] = {"wall_s": seconds, "fit_s": fits}
    tiny = synthetic_store(work / "tiny.h5", 60)
    code = ("import sys; from headstart.classify.cli import fit_head_main; "
            "rc = fit_head_main(sys.argv[1:]); "
            "sys.stderr.write(f'tensorflow imported: {\"tensorflow\" in sys.modules}\\n'); "
            "sys.exit(rc)")
    for plots in ([], ["--no-plots"]):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code, "--features", str(tiny), "--model",
                               "logreg", "-o", str(work / "tiny-head"), *plots],
                              capture_output=True, text=True, check=True)
        label = "plots" if not plots else "--no-plots"
        result[f"60-row store: logreg, {label}"] = {
            "wall_s": time.perf_counter() - start,
            "tensorflow_imported": "tensorflow imported: True" in done.stderr}
    return result


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (needs root), so the next read comes from the disk."""
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def bench_store(work: Path, n: int) -> dict:
    import h5py

    from headstart.features import open_store

    result = {}
    for dtype in ("float32", "float16"):
        for compression in ("none", "lzf", "gzip"):
            path = synthetic_store(work / f"s-{dtype}-{compression}.h5", n, dtype, compression)
            cold = drop_page_cache()
            start = time.perf_counter()
            open_store(path).load_features()
            first = time.perf_counter() - start
            seconds = timed(lambda path=path: open_store(path).load_features(), repeat=2)
            result[f"{dtype}, {compression}"] = {"MB": path.stat().st_size / 1e6, "load_s": seconds,
                                                 "cold_load_s" if cold else "first_load_s": first}
    rows, _ = fc2_like(n)
    for chunk in (1, 16, 64, 256):
        path = work / f"chunk{chunk}.h5"
        start = time.perf_counter()
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("features", shape=(0, 4096), maxshape=(None, 4096),
                                  chunks=(chunk, 4096), dtype="f4")
            for i in range(0, n, 256):  # appended in commits of 256 rows, as extraction does
                ds.resize(min(i + 256, n), axis=0)
                ds[i:i + 256] = rows[i:i + 256]
        write_s = time.perf_counter() - start
        cold = drop_page_cache()
        with h5py.File(path, "r") as f:
            start = time.perf_counter()
            f["features"][...]
            first = time.perf_counter() - start
            load_s = timed(lambda f=f: f["features"][...], repeat=2)
            picks = np.sort(np.random.default_rng(0).choice(n, 512, replace=False))
            pick_s = timed(lambda f=f, picks=picks: f["features"][picks], repeat=1)
        result[f"chunk ({chunk}, 4096)"] = {
            "MB": path.stat().st_size / 1e6, "append_s": write_s, "load_s": load_s,
            "cold_load_s" if cold else "first_load_s": first, "512_random_rows_s": pick_s}
    return result


def bench_float16(work: Path, pets_store: Path | None) -> dict:
    """Test accuracy of logreg on the same images stored as float32 and as float16."""
    if pets_store is None:
        return {"skipped": "needs --weights-file for a realistic pets-1k store"}
    from dataclasses import replace

    from headstart.features import write_store
    from headstart.features.reader import open_h5, read_index

    with open_h5(pets_store) as f:
        index = read_index(f)
        rows = f["features"][...]
    half_identity = replace(index.identity, dtype="float16")
    half = write_store(work / "pets16.h5", features=rows, paths=index.paths, hashes=index.hashes,
                       classes=index.classes, identity=half_identity, attrs={"complete": True})
    fit_head = cli("fit-head")
    result = {}
    for label, store in (("float32", pets_store), ("float16", half)):
        out = work / f"f16-{label}"
        subprocess.run([fit_head, "--features", str(store), "--model", "logreg", "-o", str(out)],
                       check=True, capture_output=True)
        metrics = json.loads(next(out.rglob("metrics.json")).read_text())
        result[label] = {"MB": Path(store).stat().st_size / 1e6, "metrics": metrics}
    return result


def bench_precision(weights: str, count: int, batch_size: int) -> dict:
    """Rows of mixed precision against float32 on the same real photos, and relative speed.

    On a CPU only bfloat16 is tried (float16 arithmetic there is emulated and slow); where
    a GPU is visible, float16 too. Differences are relative to the largest float32 value.
    """
    import tensorflow as tf

    from headstart.extract.backbone import Backbone, WeightsSpec
    from headstart.extract.images import decode_pixels

    files = sorted(PETS.rglob("*.jpg"))[:: max(1, 1000 // count)][:count]
    pixels = np.stack([decode_pixels(f.read_bytes()) for f in files])
    spec = WeightsSpec.parse(weights)

    def embed_all(backbone):
        return np.concatenate([backbone.embed(pixels[i:i + batch_size])
                               for i in range(0, len(pixels), batch_size)])

    reference = Backbone(spec)
    exact = embed_all(reference)
    full_s = timed(lambda: embed_all(reference), repeat=1)
    scale = float(np.abs(exact).max())
    result = {"images": len(pixels), "weights": "pretrained file" if spec.path else weights}
    policies = ["mixed_bfloat16"] + (["mixed_float16"] if tf.config.list_physical_devices("GPU")
                                     else [])
    for precision in policies:
        backbone = Backbone(spec, precision=precision)
        rows = embed_all(backbone)
        cosine = np.sum(rows * exact, 1) / (np.linalg.norm(rows, axis=1)
                                             * np.linalg.norm(exact, axis=1) + 1e-12)
        result[precision] = {
            "max_abs_diff / max": float(np.abs(rows - exact).max()) / scale,
            "mean_abs_diff / max": float(np.abs(rows - exact).mean()) / scale,
            "max (1 - cosine to float32)": float(1 - cosine.min()),
            "speed vs float32": full_s / timed(lambda b=backbone: embed_all(b), repeat=1),
        }
    return result


def markdown(report: dict) -> str:
    """The report as the tables the README's Performance section shows."""
    out = []
    m = report["machine"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores visible, {m['memory_gb']} GB; "
               f"Python {m['python']}, TensorFlow {m['tensorflow']} "
               f"({'CUDA' if m['tf_cuda_build'] else 'CPU'} build); "
               f"GPUs: {', '.join(m['gpus']) or 'none'}; CPU flags: "
               f"{', '.join(m.get('cpu_flags', [])) or 'unknown'}; {m.get('auto_precision')}.\n")
    if "ceiling" in report:
        out += ["| bare fc2 model, pre-decoded batches | images/s |", "| --- | ---: |"]
        out += [f"| {k} | {v:.1f} |" for k, v in report["ceiling"].items() if k != "best"]
        out.append("")
    if "e2e" in report:
        out += ["| extract-features (end to end) | images | images/s | ceiling around it "
                "| ratio |", "| --- | ---: | ---: | ---: | ---: |"]
        for k, v in report["e2e"].items():
            out.append(f"| {k} | {v['images']} | {v['images_per_s']:.1f} | "
                       f"{v['ceiling_around']:.1f} | {v['ratio_to_ceiling']:.2f} |")
        out.append("")
    if "auto" in report:
        a = report["auto"]
        rates = a["images_per_s"]
        out += [f"| extract-features, {a['images']} pets-1k photos | images/s (each round) |",
                "| --- | --- |"]
        out += [f"| --precision {k} | " + ", ".join(f"{r:.1f}" for r in v) + " |"
                for k, v in rates.items()]
        out += [f"| auto ({a['auto']}) / float32 | "
                + ", ".join(f"{r:.2f}" for r in a["ratio_per_round"])
                + f" (best over best {a['ratio_of_best']:.2f}) |", ""]
    if "host" in report:
        out += ["| host side, no model | images | " + " | ".join(
            next(iter(report["host"].values()))["best_images_per_s"]) + " | pipeline 2 / 1 |",
            "| --- | ---: |" + " ---: |" * (len(next(iter(report["host"].values()))[
                "best_images_per_s"]) + 1)]
        for k, v in report["host"].items():
            out.append(f"| {k} | {v['images']} | " + " | ".join(
                f"{r:.0f}" for r in v["best_images_per_s"].values())
                + f" | {v.get('pipeline_2_over_1', float('nan')):.2f} |")
        out.append("")
    batching = report.get("batching", {})
    if "float32" in batching:
        columns = list(batching["float32"])
        out += [f"| rows, max difference / max ({batching['images']} photos) | "
                + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
        out += [f"| {p} | " + " | ".join(f"{batching[p][c]:.3g}" for c in columns) + " |"
                for p in ("float32", "mixed_bfloat16")]
        out.append("")
    acc = report.get("accuracy", {})
    if "float32" in acc:
        out += ["| pets-1k, test split | rows | logreg accuracy | logreg log loss "
                "| softmax accuracy | softmax log loss |", "| --- | --- |" + " ---: |" * 4]
        for k in dict.fromkeys(("float32", acc["auto"])):
            cells = [f"{acc[k][m]['accuracy']:.2%} | {acc[k][m]['log_loss']:.4f}"
                     for m in ("logreg", "softmax")]
            out.append(f"| {k} | {'auto' if k == acc['auto'] else ''} | "
                       + " | ".join(cells) + " |")
        out.append("")
    if "memory_peak_rss_mb" in report:
        mem = report["memory_peak_rss_mb"]
        first = next(iter(mem.values()))
        out += ["| extract-features, images | peak RSS (MB) | vs first |", "| ---: | ---: | ---: |"]
        out += [f"| {k} | {v:.0f} | {v / first:.3f} |" for k, v in mem.items()]
        out.append("")
    if "heads_wall_s" in report:
        out += ["| fit-head (whole process, plots included) | wall s | fit s (logreg) "
                "| fit s (softmax) |", "| --- | ---: | ---: | ---: |"]
        for k, v in report["heads_wall_s"].items():
            fits = [f"{v['fit_s'][m]:.1f}" if m in v.get("fit_s", {}) else "-"
                    for m in ("logreg", "softmax")]
            note = " (TensorFlow imported!)" if v.get("tensorflow_imported") else ""
            out.append(f"| {k}{note} | {v['wall_s']:.1f} | " + " | ".join(fits) + " |")
        out.append("")
    if "store" in report:
        rows = report["sizes"]["rows"]
        out += [f"| store, {rows:,} x 4096 | MB | load, cold cache (s) | load, cached (s) "
                "| append (s) | 512 random rows (s) |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for k, v in report["store"].items():
            cells = [f"{v[c]:.2f}" if c in v else "-"
                     for c in ("cold_load_s", "load_s", "append_s", "512_random_rows_s")]
            out.append(f"| {k} | {v['MB']:.0f} | " + " | ".join(cells) + " |")
        out.append("")
    f16 = report.get("float16", {})
    if "float32" in f16:
        out += ["| pets-1k store, logreg | MB | test accuracy | test log loss |",
                "| --- | ---: | ---: | ---: |"]
        for k in ("float32", "float16"):
            test = f16[k]["metrics"]["test"]
            out.append(f"| {k} | {f16[k]['MB']:.1f} | {test['accuracy']:.2%} | "
                       f"{test.get('log_loss', float('nan')):.4f} |")
        out.append("")
    precision = report.get("precision", {})
    policies = [k for k in precision if k.startswith("mixed")]
    if policies:
        columns = list(precision[policies[0]])
        out += [f"| precision ({precision['images']} photos) | " + " | ".join(columns) + " |",
                "| --- |" + " ---: |" * len(columns)]
        out += [f"| {p} | " + " | ".join(f"{precision[p][c]:.4g}" for c in columns) + " |"
                for p in policies]
        out.append("")
    return "\n".join(out)


def main() -> None:
    global PETS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--weights-file",
                        help="realistic VGG16 weights for the pets-1k heads and float16 sections")
    parser.add_argument("--photos", type=Path, default=PETS,
                        help="folder with one sub-folder of JPEGs per class (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", default=str(HERE / "results" / "bench.json"))
    args = parser.parse_args()
    PETS = args.photos
    if not PETS.is_dir():
        parser.error(f"No photo folder at '{PETS}'; pass --photos DIR (class folders of JPEGs).")
    only = set(args.only.split(","))
    sizes = dict(pets=200 if args.quick else 1000, large=16 if args.quick else 64,
                 memory=[100, 300] if args.quick else [100, 1000, 5000],
                 rows=5000 if args.quick else 25000, ceiling_batches=2 if args.quick else 8)
    report: dict = {"machine": machine(), "sizes": sizes}
    from headstart.extract.backbone import Backbone, WeightsSpec

    # The default precision (auto): what a user's run gets on this machine.
    backbone = (Backbone(WeightsSpec("none", 0), precision="auto")
                if only & {"ceiling", "e2e"} else None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "ceiling" in only:
            report["ceiling"] = bench_ceiling(backbone, args.batch_size, sizes["ceiling_batches"])
        if "e2e" in only:
            report["e2e"] = bench_e2e(backbone, work, sizes["pets"], sizes["large"],
                                      args.batch_size, sizes["ceiling_batches"])
        if "auto" in only:
            report["auto"] = bench_auto(work, 64 if args.quick else 192)
        if "host" in only:
            report["host"] = bench_host(work, 100 if args.quick else 600)
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
        if "precision" in only:
            report["precision"] = bench_precision(args.weights_file or "none",
                                                  32 if args.quick else 128, args.batch_size)
        if "batching" in only:
            report["batching"] = bench_batching(args.weights_file or "none")
        if "accuracy" in only:
            report["accuracy"] = bench_accuracy(work, args.weights_file)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"Written: {output} and {output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
