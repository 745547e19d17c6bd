"""Benchmark scaling out: shards, Ray, virtual-dataset stores, appends and no-op re-runs.

    python bench/scale.py                   # everything (about 30 minutes on 2 CPU cores)
    python bench/scale.py --quick           # smaller sizes, a few minutes
    python bench/scale.py --only vds,noop   # some sections

Sections (each a ratio measured within this one run, because absolute numbers on a
shared machine drift):
  shards  2 shard processes pinned to 1 core each (taskset) vs 1 process on 2 cores, same
          photos, merge included (goal: >= 0.9)
  ray     `--engine ray` (a local Ray it starts itself) vs the plain local path
  vds     a synthetic store of R x 4096 float32 rows as one file vs stitched over 10, 100
          and 1,000 shard files: stitch time, full sequential read (goal: >= 0.8 x one file)
  append  100 new photos appended to stores of 25,000 and 250,000 rows, twice, the sizes
          interleaved and the faster of each size's two reported (goal: the same time
          within 20%), with the store-side part timed separately
  noop    a re-run of `extract-features` on an unchanged 25,000-image folder (goal: < 2 s)
Writes bench/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import PETS, cli, machine  # noqa: E402 - the shared helpers of bench/run.py

SECTIONS = ("shards", "ray", "vds", "append", "noop")


def photos(target: Path, count: int, offset: int = 0) -> Path:
    """`count` real photos (copies, distinct names) in class folders under `target`."""
    files = sorted(PETS.rglob("*.jpg"))
    for i in range(offset, offset + count):
        src = files[i % len(files)]
        dst = target / src.parent.name / f"{i:06d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return target


def wall(command: list[str], **kwargs) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   **kwargs)
    return time.perf_counter() - start


def bench_shards(work: Path, count: int) -> dict:
    folder = photos(work / "pets", count)
    extract = cli("extract-features")
    common = ["--weights", "none", "-q"]
    one = wall([extract, str(folder), "-o", str(work / "one.h5"), *common])
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    start = time.perf_counter()
    workers = [subprocess.Popen(["taskset", "-c", str(i), extract, str(folder), "-o",
                                 str(work / "two.h5"), "--shard", f"{i}/2", "--workers", "1",
                                 *common], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for i in range(2)]
    for process in workers:
        if process.wait() != 0:
            raise RuntimeError(process.stderr.read().decode())
    subprocess.run([cli("merge-features"), str(work / "two.h5")], check=True,
                   stdout=subprocess.DEVNULL)
    two = time.perf_counter() - start
    return {"images": count, "one process, 2 cores: s": one,
            "2 shard processes, 1 core each, with merge: s": two,
            "throughput ratio (2 shards / 1 process)": one / two}


def bench_ray(work: Path, count: int) -> dict:
    folder = photos(work / "pets-ray", count)
    extract = cli("extract-features")
    common = ["--weights", "none", "-q"]
    local = wall([extract, str(folder), "-o", str(work / "local.h5"), *common])
    ray = wall([extract, str(folder), "-o", str(work / "ray.h5"), "--engine", "ray", *common])
    return {"images": count, "local: s": local, "ray (starts a local Ray): s": ray,
            "throughput ratio (ray / local)": local / ray}


def fc2_block(start: int, n: int, dim: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(start)
    return np.maximum(rng.standard_normal((n, dim), dtype=np.float32), 0)


def write_rows(path: Path, start: int, n: int, *, paths=None, stats=None) -> Path:
    """A complete store of n fc2-like rows, written block by block (flat memory)."""
    from headstart.extract.backbone import pipeline_identity
    from headstart.features.schema import LABEL_SOURCE
    from headstart.features.store_file import atomic_store, create_layout, write_index

    identity = pipeline_identity("none (seed 0)")
    paths = paths or [f"a/{i:07d}.jpg" for i in range(start, start + n)]
    with atomic_store(path, expected_bytes=n * 4096 * 4) as out:
        dataset = create_layout(out, n_rows=n, dim=4096, identity=identity)
        for block in range(0, n, 8192):
            size = min(8192, n - block)
            dataset[block:block + size] = fc2_block(start + block, size)
        write_index(out, paths=paths, hashes=[f"{start + i:064x}" for i in range(n)],
                    classes=["a"], labels=["a"] * n,
                    sizes=[s[0] for s in stats] if stats else None,
                    mtimes=[s[1] for s in stats] if stats else None)
        out.attrs.update({"complete": True, LABEL_SOURCE: "folders"})
    return path


def read_all(path: Path) -> float:
    """Seconds to read every row in 4,096-row blocks through the reader (after a warm-up)."""
    from headstart.features import open_store

    def once() -> float:
        start = time.perf_counter()
        with open_store(path) as store:
            for _ in store.iter_chunks(rows=4096):
                pass
        return time.perf_counter() - start

    once()
    return min(once(), once())


def open_seconds(path: Path, checked: bool = True) -> float:
    """Best of 5 opens of a store (its shard files checked on every open), no rows read.

    checked=False skips the contents check of each file (features/contents.py), to
    measure what the check costs in the same run.
    """
    import headstart.features.reader as reader
    from headstart.features import open_store

    saved = reader.check_contents, reader.check_shard_rows, reader._open_file
    if not checked:  # as before the check: no shard file opened on open
        reader.check_contents = reader.check_shard_rows = lambda handle, path: None
        reader._open_file = lambda file, writing_after: (
            contextlib.nullcontext() if file != path else saved[2](file, writing_after))
    try:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            open_store(path).close()
            times.append(time.perf_counter() - start)
    finally:
        reader.check_contents, reader.check_shard_rows, reader._open_file = saved
    return min(times)


def bench_vds(work: Path, rows: int, counts: list[int]) -> dict:
    from headstart.features.reader import read_index
    from headstart.features.stitch import RowSources, shards_dir, write_virtual

    one = write_rows(work / "one.h5", 0, rows)
    result = {"rows": rows, "one file": {"read_s": read_all(one)}}
    from headstart.extract.backbone import pipeline_identity
    from headstart.features.journal import Entry
    from headstart.features.reader import open_h5

    identity = pipeline_identity("none (seed 0)")
    for count in counts:
        store = work / f"vds{count}.h5"
        directory = shards_dir(store)
        directory.mkdir()
        files, entries = [], []
        for i in range(count):
            start, stop = i * rows // count, (i + 1) * rows // count
            files.append(write_rows(directory / f"g000000-s{i:05d}-of-{count:05d}.h5", start,
                                    stop - start))
        os.sync()  # the kernel's write-back of the shards is not part of the stitch
        begin = time.perf_counter()
        segments = []
        for file in files:
            with open_h5(file) as handle:
                index = read_index(handle)
            n = len(index.paths)
            segments.append((RowSources([file.resolve()], np.zeros(n, np.int32), np.arange(n)),
                             np.arange(n)))
            entries += [Entry(p, h, "a") for p, h in zip(index.paths, index.hashes, strict=True)]
        write_virtual(store, segments, entries, identity=identity, classes=["a"], skipped=[],
                      attrs={"complete": True})
        stitch_s = time.perf_counter() - begin
        read_s = read_all(store)
        opened, unchecked = open_seconds(store), open_seconds(store, checked=False)
        result[f"{count} shards"] = {"stitch_s": stitch_s, "read_s": read_s,
                                     "read speed vs one file": result["one file"]["read_s"]
                                     / read_s, "open_s": opened,
                                     "open_s without the contents check": unchecked}
        shutil.rmtree(directory)
        store.unlink()
    one.unlink()
    return result


def tiny_folder(target: Path, count: int) -> tuple[list[str], list[tuple[int, int]]]:
    """`count` image files: hard links of a few small PNGs (cheap to make, real to scan;
    one PNG per 60,000 links, below ext4's limit of 65,000 links to a file)."""
    from PIL import Image

    (target / "a").mkdir(parents=True)
    paths, stats = [f"a/{i:07d}.png" for i in range(count)], []
    for first in range(0, count, 60_000):
        base = target.parent / f"{target.name}-base{first}.png"
        Image.new("RGB", (8, 8), (200, 100, first % 256)).save(base)
        info = os.stat(base)
        for path in paths[first:first + 60_000]:
            os.link(base, target / path)
            stats.append((info.st_size, info.st_mtime_ns))
    return paths, stats


def bench_append(work: Path, sizes: list[int], new: int) -> dict:
    """No-op re-runs and appends of `new` photos to a store of each size.

    The stores are built first, then the appends run interleaved (each size once, then
    each size again), so that a drift in the machine's speed, which changes the VGG16
    part by seconds, hits every size alike; the faster of each size's two appends is
    reported, as timeit does. The first append turns the one file into shards, the
    second adds a shard.
    """
    from PIL import Image

    from headstart.extract import extract_features
    from headstart.extract.backbone import pipeline_identity
    from headstart.features.stitch import shards_dir

    result: dict = {}
    folders, stores = {}, {}
    for size in sizes:
        folders[size] = work / f"folder{size}"
        paths, stats = tiny_folder(folders[size], size)
        stores[size] = write_rows(work / f"store{size}.h5", 0, size, paths=paths, stats=stats)
    os.sync()  # time the runs, not the kernel writing back the fixtures meanwhile

    def run(size: int) -> float:
        return wall([cli("extract-features"), str(folders[size]), "-o", str(stores[size]),
                     "--weights", "none", "-q"])

    for size in sizes:
        result[size] = dict.fromkeys(["no-op re-run s", "append 100 photos s", "both appends s",
                                      "store side of an append s", "new shard bytes (MB)",
                                      "top file (MB)"])
        result[size].update({"no-op re-run s": run(size), "both appends s": []})
    photos = sorted(PETS.rglob("*.jpg"))
    for batch in range(2):
        for size in sizes:
            for i, photo in enumerate(photos[batch * new:(batch + 1) * new]):
                shutil.copy(photo, folders[size] / "a" / f"new-{batch}-{i:03d}.jpg")
            result[size]["both appends s"].append(run(size))
            if batch == 0:  # what the first append wrote: its shard and the new top file
                store = stores[size]
                result[size]["new shard bytes (MB)"] = sum(
                    f.stat().st_size for f in shards_dir(store).glob("*")
                    if f.stat().st_nlink == 1 and f.stat().st_size < 50 << 20) / 1e6
                result[size]["top file (MB)"] = store.stat().st_size / 1e6

    class Free:  # the store-side part alone: the same append with a backbone that costs nothing
        identity = pipeline_identity("none (seed 0)")

        def embed(self, pixels):
            return np.zeros((len(pixels), 4096), np.float32)

    for size in sizes:
        for i in range(new):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(folders[size] / "a" / f"more-{i:03d}.png")
        begin = time.perf_counter()
        extract_features(folders[size], stores[size], weights="none", model=Free(),
                         progress=False, log=lambda line: None)
        result[size]["store side of an append s"] = time.perf_counter() - begin
        result[size]["append 100 photos s"] = min(result[size]["both appends s"])
    for size in sizes:
        shutil.rmtree(folders[size])
        shutil.rmtree(shards_dir(stores[size]), ignore_errors=True)
        stores[size].unlink()
    first, last = (result[s]["append 100 photos s"] for s in (sizes[0], sizes[-1]))
    result["ratio (largest / smallest)"] = last / first
    return result


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores visible, {m['memory_gb']} GB; "
           f"Python {m['python']}, TensorFlow {m['tensorflow']}.\n"]
    for key in ("shards", "ray"):
        if key in report:
            out += [f"| {key} | value |", "| --- | ---: |"]
            out += [f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
                    for k, v in report[key].items()]
            out.append("")
    if "vds" in report:
        vds = report["vds"]
        out += [f"| {vds['rows']:,} x 4096 float32 | stitch (s) | full read (s) | read speed "
                "vs one file |", "| --- | ---: | ---: | ---: |"]
        for k, v in vds.items():
            if isinstance(v, dict):
                out.append(f"| {k} | {v.get('stitch_s', 0):.2f} | {v['read_s']:.2f} | "
                           f"{v.get('read speed vs one file', 1.0):.2f} |")
        out.append("")
    if "append" in report:
        rows = {k: v for k, v in report["append"].items() if isinstance(v, dict)}
        columns = list(next(iter(rows.values())))
        out += ["| store rows | " + " | ".join(columns) + " |", "| ---: |" + " ---: |" * len(
            columns)]
        def cell(value) -> str:
            return " / ".join(f"{x:.2f}" for x in value) if isinstance(value, list) \
                else f"{value:.2f}"

        out += [f"| {int(k):,} | " + " | ".join(cell(v[c]) for c in columns) + " |"
                for k, v in rows.items()]
        out.append(f"\nappend time ratio, largest / smallest store: "
                   f"{report['append']['ratio (largest / smallest)']:.2f}\n")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--output", default=str(HERE / "results" / "scale.json"))
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    quick = args.quick
    report: dict = {"machine": machine()}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_file():  # --only: keep the other sections of an earlier run on this machine
        earlier = json.loads(output.read_text())
        if earlier.get("machine") == report["machine"]:
            report = {**earlier, **report}

    def save(section: str, result: dict) -> None:  # after each section: nothing measured is lost
        report[section] = result
        output.write_text(json.dumps(report, indent=2, default=str))
        output.with_suffix(".md").write_text(markdown(report))

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        if "shards" in only:
            save("shards", bench_shards(work / "shards", 100 if quick else 400))
        if "ray" in only:
            save("ray", bench_ray(work / "ray", 100 if quick else 400))
        if "vds" in only:
            (work / "vds").mkdir()
            save("vds", bench_vds(work / "vds", 20_000 if quick else 250_000,
                                  [10, 100, 1000]))
        if "append" in only or "noop" in only:
            (work / "append").mkdir()
            save("append", bench_append(work / "append",
                                        [2_500, 25_000] if quick else [25_000, 250_000], 100))
    print(markdown(report))


if __name__ == "__main__":
    main()
