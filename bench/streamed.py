"""Benchmark fit-head on stores larger than its memory budget (the streamed linear probe).

    python bench/streamed.py                       # every section (about 70 minutes, 2 cores)
    python bench/streamed.py --only agree          # some sections
    python bench/streamed.py --quick               # small stores, a few minutes

The stores are synthetic, shaped like ImageNet's pooled features: float16, 2,048 columns,
non-negative, one cluster per class in a 96-dimensional latent space projected to the
2,048 columns (ReLU of a random projection plus noise), so classes overlap as real
features do (a linear probe reaches about 78% with 1,000 classes). Built class by class
(`make_store`), rows in path order as extract-features writes them; not checked in.

Sections (each fit-head run is a process of its own, timed and with its peak resident
memory from the kernel's accounting, wait4's ru_maxrss):
  agree  100,000 rows of 100 classes, which fit in memory: `fit-head --model logreg` in
         memory (scikit-learn) and streamed (--memory 1G); each walks over C on its own.
         Goals: test accuracy within 0.2 points, log loss within 1%, at the same C.
  scale  128,000 and 320,000 rows of 1,000 classes with --memory 4G: time and peak memory
         of --model logreg (its walk over C included) and --model softmax. Goals: the
         same peak at both sizes and at most 8 GB; time per row the same.
  walk   the 128,000-row store: the walk over C on every train row against the walk on
         the 50,000-row subsample resumed on every row (what fit-head does): the C each
         picks, and the passes over the rows each took.
Writes bench/results/streamed.json and streamed.md after every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SECTIONS = ("agree", "scale", "walk")
LATENT = 96
DIM = 2048


def class_rows(label: int, n: int, classes: int, spread: float, seed: int = 0) -> np.ndarray:
    """float16 rows (n, DIM) of one class: ReLU(latent @ P + noise) around its centre."""
    rng = np.random.default_rng([seed, 1])
    projection = (rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)
    centre = np.random.default_rng([seed, 2, classes, label]).standard_normal(LATENT)
    own = np.random.default_rng([seed, 3, classes, label])
    latent = (centre + spread * own.standard_normal((n, LATENT))).astype(np.float32)
    noise = 0.3 * own.standard_normal((n, DIM), dtype=np.float32)
    return np.maximum(latent @ projection + noise, 0).astype(np.float16)


def make_store(path: Path, n: int, classes: int, spread: float) -> Path:
    """A complete labelled store of n rows (n // classes per class), written a class at a
    time so memory stays flat; the image hashes (which decide the split) are sha256 of
    the paths."""
    from headstart.extract.backbone import pipeline_identity
    from headstart.features.schema import LABEL_SOURCE
    from headstart.features.store_file import atomic_store, create_layout, write_index

    if path.exists():
        return path
    per = n // classes
    names = [f"c{c:04d}" for c in range(classes)]
    paths = [f"{name}/{i:07d}.jpg" for name in names for i in range(per)]
    identity = pipeline_identity("synthetic (seed 0)", "float16")
    with atomic_store(path, expected_bytes=len(paths) * DIM * 2) as out:
        dataset = create_layout(out, n_rows=len(paths), dim=DIM, identity=identity)
        for c in range(classes):
            dataset[c * per:(c + 1) * per] = class_rows(c, per, classes, spread)
        write_index(out, paths=paths, hashes=[hashlib.sha256(p.encode()).hexdigest()
                                              for p in paths],
                    classes=names, labels=[p.split("/")[0] for p in paths])
        out.attrs.update({"complete": True, LABEL_SOURCE: "folders"})
    return path


# fit-head's own entry point, run with `python -c`; SUBSAMPLE_ROWS=0 makes the walk over C
# read every train row (the `walk` section's reference).
FIT_HEAD = ("import sys; import headstart.classify.streamed as s; s.SUBSAMPLE_ROWS = {rows}; "
            "from headstart.classify.cli import fit_head_main; "
            "sys.exit(fit_head_main(sys.argv[1:]))")


def machine() -> dict:
    """bench/run.py's description of this machine, found by a child process: importing
    TensorFlow here would swell this process, and Linux counts a child's resident memory
    from the moment it is forked, before it runs fit-head (ru_maxrss survives exec)."""
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); from run import machine; "
            "print(json.dumps(machine()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured(command: list[str]) -> dict:
    """Wall seconds and peak resident MB (the kernel's, wait4) of one process; the tail of
    its stderr if it failed."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            return {"failed": err.read().decode(errors="replace").strip()[-400:],
                    "wall_s": seconds}
    return {"wall_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def fit(store: Path, out: Path, model: str, *extra: str, subsample_rows: int | None = None
        ) -> dict:
    """One fit-head process, with the numbers its metrics.json keeps."""
    from headstart.classify.streamed import SUBSAMPLE_ROWS

    rows = SUBSAMPLE_ROWS if subsample_rows is None else subsample_rows
    result = measured([sys.executable, "-c", FIT_HEAD.format(rows=rows), "--features",
                       str(store), "--model", model, "-o", str(out), "--no-plots", "-q",
                       *extra])
    if "failed" in result:
        return result
    metrics = json.loads((out / model / "metrics.json").read_text())
    selection = metrics["selection"]

    def fits(records) -> list[dict]:
        return [{k: r.get(k) for k in ("C", "rows", "passes", "n_iter", "val_loss")}
                for r in records or []]

    result.update(
        fit_s=metrics["fit_seconds"], memory=metrics["memory"],
        n_train=metrics["train"]["n"], test_accuracy=metrics["test"]["accuracy"],
        test_log_loss=metrics["test"]["log_loss"],
        **({"C": selection["C"], "n_iter": selection["n_iter"],
            "walk": fits(selection["grid"]), "every_row": fits(selection.get("every_row"))}
           if "C" in selection else
           {"best_epoch": selection["best_epoch"], "epochs_run": selection["epochs_run"]}))
    return result


def markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores']} cores, bf16 flags: "
           f"{', '.join(m['cpu_flags']) or 'none'}, {m['memory_gb']} GB.", ""]
    for section in SECTIONS:
        runs = report.get(section)
        if not runs:
            continue
        out += [f"### {section}", "",
                "| run | wall s | fit s | peak RSS MB | streamed | C / epochs | test accuracy "
                "| test log loss |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, r in runs.items():
            if "failed" in r:
                out.append(f"| {name} | failed: {r['failed'][-120:]} | | | | | | |")
                continue
            choice = (f"C={r['C']:g}" if "C" in r else
                      f"{r.get('best_epoch')} of {r.get('epochs_run')}")
            out.append(f"| {name} | {r['wall_s']:.0f} | {r.get('fit_s', 0):.0f} | "
                       f"{r['peak_rss_mb']:.0f} | {r.get('memory', {}).get('streamed')} | "
                       f"{choice} | {r.get('test_accuracy', 0):.2%} | "
                       f"{r.get('test_log_loss', 0):.4f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small stores (a few minutes)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--models", default="logreg,softmax", help="heads of the scale section")
    parser.add_argument("--output", default=str(HERE / "results" / "streamed.json"))
    parser.add_argument("--workdir", default=None,
                        help="where the stores are kept between runs (default: a temp dir)")
    args = parser.parse_args()
    only, quick = set(args.only.split(",")), args.quick
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d")}
    if output.is_file():  # --only: keep the other sections of an earlier run on this machine
        earlier = json.loads(output.read_text())
        if earlier.get("machine") == report["machine"]:
            report = {**earlier, **report}

    def save(section: str, name: str, result: dict) -> None:  # after every run
        report.setdefault(section, {})[name] = result
        output.write_text(json.dumps(report, indent=2, default=str))
        output.with_suffix(".md").write_text(markdown(report))
        print(f"{section}: {name}: {json.dumps(result, default=str)[:300]}", flush=True)

    # --quick: stores small enough that budgets under their in-memory need stream them
    scale, scale_memory = ((32_000, 64_000), "1G") if quick else ((128_000, 320_000), "4G")
    agree_rows, agree_memory = (10_000, "256M") if quick else (100_000, "1G")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(args.workdir or tmp)
        if "agree" in only:
            store = make_store(work / f"agree-{agree_rows}.h5", agree_rows, 100, spread=3.0)
            save("agree", "in memory", fit(store, work / "agree-memory", "logreg"))
            save("agree", f"streamed, --memory {agree_memory}",
                 fit(store, work / "agree-streamed", "logreg", "--memory", agree_memory))
        if "scale" in only:
            for n in scale:
                store = make_store(work / f"scale-{n}.h5", n, 1000, spread=2.0)
                for model in args.models.split(","):
                    save("scale", f"{n:,} rows: {model}",
                         fit(store, work / f"scale-{n}-{model}", model, "--memory", scale_memory))
        if "walk" in only:
            store = make_store(work / f"scale-{scale[0]}.h5", scale[0], 1000, spread=2.0)
            save("walk", f"{scale[0]:,} rows: walk on every row",
                 fit(store, work / "walk-every", "logreg", "--memory", scale_memory,
                     subsample_rows=0))
            same = report.get("scale", {}).get(f"{scale[0]:,} rows: logreg")
            save("walk", f"{scale[0]:,} rows: walk on the subsample",
                 same if same and "failed" not in same and not quick else
                 fit(store, work / "walk-sub", "logreg", "--memory", scale_memory,
                     subsample_rows=10_000 if quick else None))
    print(markdown(report))


if __name__ == "__main__":
    main()
