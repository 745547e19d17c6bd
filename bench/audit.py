"""Benchmark audit-features: speed and memory, faiss recall, quality on a planted corpus.

    python bench/audit.py                                  # speed and faiss (about 10 minutes)
    python bench/audit.py --only quality --weights-file vgg16.weights.h5
    python bench/audit.py --rows 25000 --faiss-rows 100000 --only speed,faiss

Sections:
  speed    a synthetic 25,000 x 4096 float32 store (clustered, fc2-like rows): the whole
           `audit-features` process, wall time and peak RSS (goals: 90 s, 3 GB on 2 cores),
           and the seconds of each step from audit.json.
  faiss    a synthetic 100,000 x 4096 set: the faiss path's recall of the exact 10 nearest
           neighbours, measured on 2,000 sampled rows (exact neighbours of those rows
           against all rows), and its time; then a 1M-row estimate, stated as one.
  calibration  where the audit's measured settings come from, on a set disjoint from the
           planted corpus (bench/corpus.py --calibration-for): the distance/median ratio of
           40 re-encoded and resized copies (-> the copy factor 0.5) and the outlier ranks
           of 10 other non-pet images among the corpus's photos under candidate scores
           (-> centroid + k-th typical neighbour, Tukey's 1.5 x IQR fence); then the same
           ranks for 30 held-out non-pet images (bench/corpus.py build_holdout), made
           after the score was chosen.
  quality  the planted corpus of bench/corpus.py, extracted with --weights-file (VGG16 with
           pretrained conv layers, see shared/tools/pretrained_vgg16_weights.py): recall and
           precision of each kind against the goals (copies within and across splits
           apart), and fit-head's test accuracy without each kind of flagged image.
  map      the report's map on the corpus (and --pets-store): PCA and t-SNE, seconds and
           how well each keeps the classes apart.
Prints markdown tables and writes bench/results/audit.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import cli, cpu_name  # noqa: E402 - bench/run.py, beside this file

RESULTS = HERE / "results"
SECTIONS = ("speed", "faiss", "calibration", "quality", "map")


def machine() -> dict:
    """What the numbers depend on, and how busy the machine was when they were taken."""
    import numpy

    return {"cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
                               1),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "load_average_at_start": os.getloadavg()[0]}


def fc2_like(n: int, dim: int, seed: int = 0, centres: int = 200, latent: int = 64,
             block: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, dim) rows: clustered, non-negative, about half zeros, like fc2 rows; and
    int64 (n,) labels: each cluster belongs to one of two classes, 5% of labels flipped."""
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    means = rng.standard_normal((centres, latent)).astype(np.float32) * 1.5
    out = np.empty((n, dim), dtype=np.float32)
    cluster = rng.integers(0, centres, n)
    for start in range(0, n, block):
        m = min(block, n - start)
        z = means[cluster[start:start + m]] + rng.standard_normal((m, latent), dtype=np.float32)
        rows = z @ projection + 0.3 * rng.standard_normal((m, dim), dtype=np.float32)
        out[start:start + m] = np.maximum(rows, 0)
    labels = cluster % 2
    flip = rng.random(n) < 0.05
    labels[flip] = 1 - labels[flip]
    return out, labels


def timed_child(command: list[str]) -> tuple[float, float, dict]:
    """(wall s, peak RSS MB, details incl. CPU s) of a command run in a fresh Python parent."""
    probe = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(json.dumps({'wall': time.perf_counter() - t, 'rc': r.returncode, "
             "'rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
             "'cpu': resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime "
             "+ resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime, "
             "'out': r.stdout, 'err': r.stderr[-2000:]}))")
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True,
                            text=True, check=True)
    data = json.loads(result.stdout)
    if data["rc"] != 0:
        raise RuntimeError(f"{command} failed: {data['err']}")
    return data["wall"], data["rss_kb"] / 1024, data


def bench_speed(rows: int, dim: int, work: Path) -> dict:
    from headstart.features import Identity, write_store

    X, labels = fc2_like(rows, dim)
    classes = ["Cat", "Dog"]
    store = work / "speed.h5"
    identity = Identity("VGG16", "fc2", "none (seed 0)", 224, "bilinear",
                        "vgg16.preprocess_input", "float32")
    write_store(store, features=X, paths=[f"{classes[c]}/{i:06d}.jpg" for i, c in
                                          enumerate(labels)],
                hashes=[f"{i:064x}" for i in range(rows)], classes=classes, identity=identity,
                attrs={"complete": True, "seed": 0})
    del X
    out = work / "speed-audit"
    load = os.getloadavg()[0]
    wall, rss, details = timed_child([cli("audit-features"), "--features", str(store), "-o",
                                      str(out), "-q"])
    steps = json.loads((out / "audit.json").read_text())["seconds"]
    return {"rows": rows, "dim": dim, "wall_s": round(wall, 1), "peak_rss_mb": round(rss),
            "cpu_s": round(details["cpu"], 1), "load_average_before": load,
            "steps_s": steps, "goal_wall_s": 90, "goal_rss_mb": 3000}


def bench_faiss(rows: int, dim: int, queries: int = 2000, k: int = 10) -> dict:
    from headstart.audit import neighbours

    unit = neighbours.unit_rows(fc2_like(rows, dim, seed=1)[0])
    stages: dict = {}
    start = time.perf_counter()
    approx = neighbours.faiss_neighbours(unit, k, seconds=stages)
    faiss_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(rows, queries, replace=False))
    start = time.perf_counter()
    sims = unit[sample] @ unit.T
    sims[np.arange(queries), sample] = -np.inf
    top = np.argpartition(sims, -k, axis=1)[:, -k:]
    exact_sample_s = time.perf_counter() - start
    recall = float(np.mean([len(set(a) & set(e)) / k
                            for a, e in zip(approx.indices[sample], top, strict=True)]))
    nearest = np.take_along_axis(top, np.argmax(np.take_along_axis(sims, top, axis=1),
                                                axis=1)[:, None], axis=1)[:, 0]
    first = float(np.mean(approx.indices[sample, 0] == nearest))
    # 1M estimate (not measured): training works on a capped sample (constant); projecting,
    # adding and re-scoring grow with n; the IVF search with n * (n / lists) * nprobe and
    # lists ~ 4 sqrt(n), so n^1.5. The whole search stage is scaled by n^1.5 (an upper
    # bound: its re-scoring part grows with n only).
    scale = 1_000_000 / rows
    estimate = stages["train"] + stages["index"] * scale + stages["search"] * scale ** 1.5
    exact_full_s = exact_sample_s * rows / queries / 2  # symmetric: half the products
    return {"rows": rows, "dim": dim, "k": k, "queries": queries, "recall_at_k": recall,
            "nearest_found": first, "faiss_s": round(faiss_s, 1),
            "faiss_stages_s": {name: round(v, 1) for name, v in stages.items()},
            "exact_s_extrapolated_from_sample": round(exact_full_s, 1),
            "method": approx.method,
            "estimate_1m_faiss_s": round(estimate),
            "estimate_1m_exact_s": round(exact_full_s * scale ** 2),
            "estimate_1m_memory_gb": round(2 * 1_000_000 * dim * 4 / 2**30, 1)}


def evaluate(truth: dict, paths: list[str], found: list, audit) -> dict:
    """Recall and precision of each kind against the planted truth."""
    rows = {p: i for i, p in enumerate(paths)}
    kinds = {p: t["kind"] for p, t in truth["rows"].items()}
    flagged: dict[str, set[int]] = {}
    for issue in found:
        flagged.setdefault(issue.kind, set()).add(issue.row)
    result = {}
    # Same bytes, different labels: every byte copy with its original, in one conflict group.
    planted = [(rows[p], rows[t["original"]]) for p, t in truth["rows"].items()
               if t["kind"] == "byte_copy"]
    groups = [set(g.tolist()) for g in audit.conflicts]
    hit = sum(any({a, b} <= g for g in groups) for a, b in planted)
    true_groups = sum(any({a, b} <= g for a, b in planted) for g in groups)
    result["conflict"] = {"planted": len(planted), "found": hit, "recall": hit / len(planted),
                          "flagged_groups": len(groups),
                          "precision": true_groups / max(len(groups), 1)}
    # Copies: copy and original in one reported group, across splits (leak) or within one
    # split (duplicate); group precision: the share of reported groups holding a planted pair.
    result.update(copy_quality(truth, rows, audit.leak_groups(), audit.duplicate_groups()))
    # Label errors: the flipped originals (the goal); wrong-class byte copies also count as
    # true errors in precision. Planted non-pet images have no right label: shown apart.
    flips = {rows[p] for p, k in kinds.items() if k == "flip"}
    wrong = flips | {rows[p] for p, k in kinds.items() if k == "byte_copy"}
    non_pet = {rows[p] for p, k in kinds.items() if k in ("blank", "text", "noise")}
    labels_ = flagged.get("label", set())
    result["label"] = {
        "planted_flips": len(flips), "found": len(labels_ & flips),
        "recall": len(labels_ & flips) / len(flips), "flagged": len(labels_),
        "flagged_non_pet": len(labels_ & non_pet),
        "precision": len(labels_ & wrong) / max(len(labels_), 1),
        "precision_without_non_pet": len(labels_ & wrong) / max(len(labels_ - non_pet), 1)}
    # Outliers: rank of every planted non-pet image by outlier score.
    rank = ranks_by_score(audit.outliers.score)
    top5 = int(np.ceil(0.05 * len(rank)))
    for kind in ("blank", "text", "noise"):
        members = [rows[p] for p, k in kinds.items() if k == kind]
        ranks = sorted(int(rank[r]) for r in members)
        result[kind] = {"planted": len(members), "in_top_5_percent": sum(r <= top5 for r in ranks),
                        "top_5_percent_is_rank": top5, "ranks": ranks,
                        "flagged": len(set(members) & flagged.get("outlier", set()))}
    outl = flagged.get("outlier", set())
    result["outlier_flags"] = {"flagged": len(outl), "non_pet": len(outl & non_pet),
                               "precision": len(outl & non_pet) / max(len(outl), 1)}
    return result


PRECISION = {"value": "float32"}  # extract-features --precision of the bench's stores


COPY_KINDS = {"across": ("reencode", "resize"), "within": ("reencode_within", "resize_within")}


def copy_quality(truth: dict, rows: dict[str, int], leak_groups: list, duplicate_groups: list,
                 kinds: dict = COPY_KINDS) -> dict:
    """Recall per planted copy kind and group precision, across and within splits.

    kinds: "across"/"within" -> the truth kinds planted there (a kind may be judged by
    where its pair landed instead: see `calibration_copies`). A pair is found when both
    rows are in one reported group, of either kind (a chain of a copy in the original's
    split and one in another split is one `leak` group); a group is a true one when it
    holds a planted pair (re-encode, resize, or a mirrored or cropped copy).
    """
    out = {}
    reported = [set(g.tolist()) for g in [*leak_groups, *duplicate_groups]]
    kind_of = {rows[p]: t["kind"] for p, t in truth["rows"].items() if p in rows}
    every = [(rows[p], rows[t["original"]]) for p, t in truth["rows"].items()
             if "original" in t and t["kind"] != "byte_copy"]  # copies and edits alike
    for where, groups in (("across", leak_groups), ("within", duplicate_groups)):
        groups = [set(g.tolist()) for g in groups]
        pairs = []
        for kind in kinds[where]:
            planted = [(rows[p], rows[t["original"]]) for p, t in truth["rows"].items()
                       if t["kind"] == kind]
            hit = sum(any({a, b} <= g for g in reported) for a, b in planted)
            out[f"{kind}_{where}" if not kind.endswith(where) else kind] = {
                "planted": len(planted), "found": hit,
                "recall": hit / max(len(planted), 1)}
            pairs += planted
        true = sum(any({a, b} <= g for a, b in every) for g in groups)
        found = sum(any({a, b} <= g for g in reported) for a, b in pairs)
        photos = [g for g in groups if not all(kind_of.get(r) in NON_PET for r in g)]
        true_photos = sum(any({a, b} <= g for a, b in every) for g in photos)
        out[f"copies_{where}"] = {"planted": len(pairs), "found": found,
                                  "recall": found / max(len(pairs), 1),
                                  "groups": len(groups), "groups_with_a_planted_pair": true,
                                  "group_precision": true / max(len(groups), 1),
                                  "groups_not_only_non_pets": len(photos),
                                  "group_precision_not_only_non_pets":
                                      true_photos / max(len(photos), 1)}
    return out


def calibration_copies(pets, cal, truth_k: dict, truth_c: dict) -> dict:
    """The audit's copy rule on the corpus's rows plus the calibration set's: recall and
    group precision within and across splits (fit-head's default split) for the 40
    calibration copies, each judged by where it landed. Groups counted: those holding a
    calibration row."""
    from headstart.audit import duplicates, neighbours, thresholds
    from headstart.classify.split import assign_splits

    X = np.vstack([pets.features, cal.features])
    hashes = list(pets.hashes) + list(cal.hashes)
    paths = [f"corpus/{p}" for p in pets.paths] + list(cal.paths)
    found = neighbours.exact_neighbours(neighbours.unit_rows(X), 10)
    limits = thresholds.derive_thresholds(found, hashes)
    cluster = duplicates.clusters(len(X), hashes, duplicates.near_pairs(found, limits.copy))
    assignment = assign_splits(hashes, seed=0)
    rows = {p: i for i, p in enumerate(paths)}
    first_cal = len(pets.paths)
    groups = [g for g in duplicates.cluster_groups(cluster) if g.max() >= first_cal]
    leak = [g for g in groups if len(np.unique(assignment[g])) > 1]
    within = [g for g in groups if len(np.unique(assignment[g])) == 1]
    relabelled = {"rows": {f"corpus/{p}": {"kind": t["kind"] if t["kind"] in NON_PET
                                           else "corpus photo"}  # for group precision only
                           for p, t in truth_c["rows"].items()}}
    for p, t in truth_k["rows"].items():
        t = dict(t)
        if t["kind"] in ("reencode", "resize"):
            same = assignment[rows[p]] == assignment[rows[t["original"]]]
            t["kind"] = f"{t['kind']}_{'within' if same else 'across'}"
        relabelled["rows"][p] = t
    kinds = {"across": ("reencode_across", "resize_across"),
             "within": ("reencode_within", "resize_within")}
    result = copy_quality(relabelled, rows, leak, within, kinds)
    result["copy_threshold"] = limits.copy
    return result


def _extracted(folder: Path, weights: Path, build) -> tuple[Path, dict]:
    """FOLDER.h5 beside the folder, built and extracted once; and the folder's truth."""
    store = folder.with_suffix(".h5")
    if not (folder / "truth.json").exists():
        build()
    if not store.exists():
        subprocess.run([cli("extract-features"), str(folder), "-o", str(store), "--weights",
                        str(weights), "--precision", PRECISION["value"], "-q"], check=True)
    return store, json.loads((folder / "truth.json").read_text())


def bench_calibration(weights: Path, corpus_dir: Path, calibration_dir: Path,
                      holdout_dir: Path) -> dict:
    import corpus

    from headstart.audit import neighbours, thresholds
    from headstart.classify.dataset import load_dataset

    store_c, truth_c = _extracted(corpus_dir, weights, lambda: corpus.build(corpus_dir))
    store_k, truth_k = _extracted(calibration_dir, weights,
                                  lambda: corpus.build_calibration(calibration_dir, corpus_dir))
    pets, cal = load_dataset(store_c), load_dataset(store_k)
    median = thresholds.derive_thresholds(
        neighbours.exact_neighbours(neighbours.unit_rows(pets.features)),
        pets.hashes).median_nn_distance
    unit_k = neighbours.unit_rows(cal.features)
    row = {p: i for i, p in enumerate(cal.paths)}
    ratios = {kind: sorted(round((1 - float(unit_k[row[p]] @ unit_k[row[t["original"]]]))
                                 / median, 4)
                           for p, t in truth_k["rows"].items() if t["kind"] == kind)
              for kind in ("reencode", "resize")}
    edits = {kind: sorted(round((1 - float(unit_k[row[p]] @ unit_k[row[t["original"]]]))
                                / median, 4)
                          for p, t in truth_k["rows"].items() if t["kind"] == kind)
             for kind in ("hflip", "crop")}
    copies = calibration_copies(pets, cal, truth_k, truth_c)
    largest = max(max(r) for r in ratios.values())
    result = {"median_nn_distance_of_corpus": median, "ratios": ratios,
              "largest_ratio": largest,
              "factor_rule": "1.5 x largest, rounded up to 0.05",
              "factor": round(float(np.ceil(1.5 * largest / 0.05) * 0.05), 2),
              "caught_at_0.13": {k: sum(v <= 0.13 for v in r) for k, r in ratios.items()},
              "edits_not_seen": edits, "copies": copies}
    # Outliers: the corpus's photos (its planted non-pets left out) + the 10 other non-pets;
    # then the same photos + the 30 held-out non-pets, made after the score was chosen.
    kinds_c = np.array([truth_c["rows"][p]["kind"] for p in pets.paths])
    keep = ~np.isin(kinds_c, NON_PET)
    result["outliers"] = outlier_ranks(pets, kinds_c, keep, cal,
                                       np.array([truth_k["rows"][p]["kind"] for p in cal.paths]))
    store_h, truth_h = _extracted(holdout_dir, weights, lambda: corpus.build_holdout(holdout_dir))
    held = load_dataset(store_h)
    result["holdout"] = outlier_ranks(pets, kinds_c, keep, held,
                                      np.array([truth_h["rows"][p]["kind"] for p in held.paths]))
    return result


def outlier_ranks(pets, kinds_c: np.ndarray, keep: np.ndarray, extra, kinds_e: np.ndarray
                  ) -> dict:
    """Ranks of `extra`'s non-pet rows among the kept corpus rows under candidate scores."""
    from headstart.audit import neighbours, outliers

    add = np.isin(kinds_e, NON_PET)
    X = np.vstack([pets.features[keep], extra.features[add]])
    labels = np.concatenate([pets.labels[keep], extra.labels[add]])
    kinds = np.concatenate([kinds_c[keep], kinds_e[add]])
    unit = neighbours.unit_rows(X)
    found = neighbours.exact_neighbours(unit, 10)
    centroid = outliers.centroid_distance(unit, labels, 2)

    def combined(neighbour):  # the audit's own combination of the two distances
        return outliers.outlier_scores(centroid, neighbour).score

    nearest5 = found.distance[:, :5].mean(axis=1)
    candidates = {"5 nearest only": nearest5,
                  "centroid + mean of 5 nearest": combined(nearest5),
                  "centroid + k-th neighbour": combined(outliers.neighbour_distance(found)),
                  "centroid + k-th typical neighbour (chosen)": combined(
                      outliers.neighbour_distance(found, outliers.typical_rows(centroid)))}
    ranks = {}
    for name, score in candidates.items():
        rank = ranks_by_score(score)
        ranks[name] = {k: sorted(rank[kinds == k].tolist()) for k in NON_PET}
    chosen = candidates["centroid + k-th typical neighbour (chosen)"]
    junk = np.isin(kinds, NON_PET)
    fences = {}
    for f in (1.5, 3.0):
        flagged = chosen > outliers.tukey_fence(chosen, f)
        fences[str(f)] = {"flagged": int(flagged.sum()),
                          "non_pet_flagged": int((junk & flagged).sum())}
    return {"rows": len(X), "non_pet": int(junk.sum()),
            "top_5_percent_is_rank": int(np.ceil(0.05 * len(X))), "ranks": ranks,
            "fences": fences}


NON_PET = ["blank", "text", "noise"]


def ranks_by_score(score: np.ndarray) -> np.ndarray:
    """int64 (n,): each row's rank, 1 for the highest score (ties in row order)."""
    rank = np.empty(len(score), dtype=np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(1, len(score) + 1)
    return rank


def bench_quality(weights: Path, work: Path, corpus_dir: Path | None) -> dict:
    import corpus

    from headstart.audit import audit_store, write_audit
    from headstart.audit.issues import collect
    from headstart.classify import fit_head

    folder = corpus_dir or work / "corpus"
    store, truth = _extracted(folder, weights, lambda: corpus.build(folder))
    head = fit_head(store, model="logreg", out_dir=work / "heads", plots=False)
    start = time.perf_counter()
    audit = audit_store(store, head=head.out_dir)
    seconds = time.perf_counter() - start
    write_audit(audit, work / "corpus-audit")
    found = collect(audit)
    result = evaluate(truth, audit.paths, found, audit)
    result["thresholds"] = audit.thresholds.record()
    result["head"] = audit.head
    issues = work / "corpus-audit" / "issues.csv"
    result["exclude"] = {"before": head.metrics["test"]["accuracy"]}
    for kinds in ("duplicate", "label", "conflict,leak,duplicate,label,outlier"):
        fitted = fit_head(store, model="logreg", out_dir=None, exclude=issues,
                          exclude_kinds=kinds)
        result["exclude"][kinds] = {"test_accuracy": fitted.metrics["test"]["accuracy"],
                                    "test_n": fitted.metrics["test"]["n"],
                                    "excluded": fitted.metrics["excluded"]["images"]}
    result["audit_s"] = round(seconds, 1)
    result["rows"] = len(audit.paths)
    result["report"] = str(work / "corpus-audit" / "report.html")
    return result


def copy_rows(q: dict, where_from: str) -> list[str]:
    """Table rows: recall per planted copy kind, group precision, within and across splits."""
    out = []
    for where in ("across", "within"):
        g = q[f"copies_{where}"]
        for kind in ("reencode", "resize"):
            k = q[f"{kind}_{where}"]
            name = {"reencode": "JPEG q40 re-encode", "resize": "resized copy"}[kind]
            out.append(f"| {name} {where} splits ({where_from}) | {k['planted']} | "
                       f"{k['found']} | {k['recall']:.2f} | {g['group_precision']:.2f} "
                       f"({g['groups_with_a_planted_pair']} of {g['groups']} groups "
                       f"{where}); {g['group_precision_not_only_non_pets']:.2f} of the "
                       f"{g['groups_not_only_non_pets']} not only of non-pets | "
                       ">= 0.90 at >= 0.90 |")
    return out


def bench_map(stores: dict[str, Path], truths: dict[str, dict | None]) -> dict:
    """Each map method on each store: seconds, and how well the 2-D map keeps the classes
    apart (share of points whose 5 nearest points on the map mostly carry their class; the
    true class where a truth file has one, non-pet plants left out)."""
    from headstart.audit.embedding_map import MAP_METHODS, neighbour_agreement, project
    from headstart.classify.dataset import load_dataset

    out = {}
    for name, store in stores.items():
        data = load_dataset(store)
        truth = truths.get(name)
        if truth:
            classes = list(data.classes)
            true = [truth["rows"][p].get("true_class") for p in data.paths]
            keep = np.array([t is not None for t in true])
            labels = np.array([classes.index(t) if t else -1 for t in true])
        else:
            keep, labels = np.ones(len(data.labels), bool), data.labels
        out[name] = {"rows": len(data.labels)}
        for method in MAP_METHODS:
            m = project(data.features, method=method)
            out[name][method] = {"seconds": m.seconds, "agreement_5nn": round(
                neighbour_agreement(m.xy[keep[m.rows]], labels[m.rows][keep[m.rows]]), 4)}
    return out


def tables(results: dict) -> str:
    out = [f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
           f"{results['machine']['memory_gb']} GB; Python {results['machine']['python']}, "
           f"numpy {results['machine']['numpy']}; load average at start "
           f"{results['machine']['load_average_at_start']:.1f}.", ""]
    if "speed" in results:
        s = results["speed"]
        out += ["| audit-features, synthetic store | rows x dim | wall s (goal) | CPU s | peak "
                "RSS MB (goal) | neighbours s | labels s | load average before |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                f"| float32 | {s['rows']:,} x {s['dim']} | {s['wall_s']} ({s['goal_wall_s']}) | "
                f"{s.get('cpu_s', '-')} | {s['peak_rss_mb']:,} ({s['goal_rss_mb']:,}) | "
                f"{s['steps_s']['neighbours']} | {s['steps_s']['labels']} | "
                f"{s.get('load_average_before', float('nan')):.1f} |", ""]
    if "faiss" in results:
        f = results["faiss"]
        out += ["| faiss path, synthetic | rows x dim | recall@10 | nearest found | faiss s | "
                "exact s (from a sample) |", "| --- | ---: | ---: | ---: | ---: | ---: |",
                f"| {f['method']} | {f['rows']:,} x {f['dim']} | {f['recall_at_k']:.4f} | "
                f"{f['nearest_found']:.4f} | {f['faiss_s']} | "
                f"{f['exact_s_extrapolated_from_sample']} |", "",
                f"faiss stages (s): {f['faiss_stages_s']}.", "",
                f"1M-row estimate (not measured): faiss neighbours at most about "
                f"{f['estimate_1m_faiss_s']:,} s, exact about "
                f"{f['estimate_1m_exact_s']:,} s; the rows alone take "
                f"{f['estimate_1m_memory_gb']} GB in float32 (store + unit rows).", ""]
    if "calibration" in results:
        c = results["calibration"]
        out += [f"Calibration (disjoint from the planted corpus): copies lie at up to "
                f"{c['largest_ratio']:.3f} x the median nearest-neighbour distance "
                f"({c['median_nn_distance_of_corpus']:.4f}); {c['factor_rule']} = "
                f"{c['factor']}; 0.13 x would catch {c['caught_at_0.13']['reencode']} of 20 "
                f"re-encodes and {c['caught_at_0.13']['resize']} of 20 resized copies. "
                "Edits it does not see: mirrored copies at "
                f"{', '.join(map(str, c['edits_not_seen']['hflip']))} x the median, crops at "
                f"{', '.join(map(str, c['edits_not_seen']['crop']))}.", "",
                ""]
        if "copies" in c:
            out += ["| calibration copies (with the corpus's rows) | planted | found | recall "
                    "| group precision | goal |", "| --- | ---: | ---: | ---: | ---: | --- |",
                    *copy_rows(c["copies"], "calibration"), ""]
        for label, key in (("calibration", "outliers"), ("held out", "holdout")):
            if key not in c:
                continue
            o = c[key]
            out += [f"| outlier score ({label}: {o['non_pet']} non-pets among {o['rows']:,}) | "
                    "ranks of blank | text | noise |", "| --- | --- | --- | --- |"]
            for name, r in o["ranks"].items():
                out.append(f"| {name} | {r['blank']} | {r['text']} | {r['noise']} |")
            out += ["", "Fences on the chosen score: " + "; ".join(
                f"{f} x IQR flags {v['flagged']} ({v['non_pet_flagged']} of {o['non_pet']} "
                "non-pets)" for f, v in o["fences"].items()), ""]
    if "quality" in results:
        q = results["quality"]
        lab = q["label"]
        out += ["| planted kind | planted | found | recall | precision | goal |",
                "| --- | ---: | ---: | ---: | ---: | --- |",
                f"| same bytes, different labels | {q['conflict']['planted']} | "
                f"{q['conflict']['found']} | {q['conflict']['recall']:.2f} | "
                f"{q['conflict']['precision']:.2f} | all found |",
                *copy_rows(q, "corpus"),
                f"| label flips (5%) | {lab['planted_flips']} | {lab['found']} | "
                f"{lab['recall']:.2f} | {lab['precision']:.2f} "
                f"({lab['precision_without_non_pet']:.2f} without non-pets) | recall >= 0.5 "
                "at precision >= 0.8 |"]
        for kind in ("blank", "text", "noise"):
            o = q[kind]
            goal = "all in top 5%" if kind != "noise" else "(no goal)"
            out.append(f"| {kind} images (outlier rank) | {o['planted']} | "
                       f"{o['in_top_5_percent']} in top {o['top_5_percent_is_rank']} | "
                       f"ranks {', '.join(map(str, o['ranks']))} | - | {goal} |")
        ex = q.get("exclude")
        if ex:
            out += ["", "| fit-head --model logreg on the corpus | excluded from train+validation "
                    "| test accuracy (same test images) |", "| --- | ---: | ---: |",
                    f"| as it is | 0 | {100 * ex['before']:.2f}% |"]
            out += [f"| --exclude-kinds {kinds} | {v['excluded']} | "
                    f"{100 * v['test_accuracy']:.2f}% |"
                    for kinds, v in ex.items() if kinds != "before"]
        h = q.get("head") or {}
        if h:
            out += ["", f"Head test accuracy: {100 * h['all_test']['accuracy']:.2f}% on all "
                        f"{h['all_test']['n']} test images, "
                        f"{100 * h['leak_free_test']['accuracy']:.2f}% on the "
                        f"{h['leak_free_test']['n']} without a copy in train or validation."]
    if "map" in results:
        out += ["", "| map of the store | rows | PCA s | PCA 5-NN class agreement | t-SNE s | "
                "t-SNE 5-NN class agreement |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in results["map"].items():
            out.append(f"| {name} | {r['rows']:,} | {r['pca']['seconds']} | "
                       f"{r['pca']['agreement_5nn']:.3f} | {r['tsne']['seconds']} | "
                       f"{r['tsne']['agreement_5nn']:.3f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--faiss-rows", type=int, default=100_000)
    parser.add_argument("--weights-file", type=Path)
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="extract-features --precision for the corpus stores (mixed_bfloat16 "
                             "is several times faster on CPUs with AVX512-BF16)")
    parser.add_argument("--corpus", type=Path, help="the corpus folder (its store is "
                                                    "FOLDER.h5 beside it; built if missing)")
    parser.add_argument("--calibration", type=Path,
                        help="the calibration folder (FOLDER.h5 beside it; built if missing)")
    parser.add_argument("--pets-store", type=Path,
                        help="a store of the plain photo set, for the map section")
    parser.add_argument("--holdout", type=Path,
                        help="the held-out non-pet folder (FOLDER.h5 beside it; built if "
                             "missing)")
    args = parser.parse_args()
    sections = args.only.split(",")
    PRECISION["value"] = args.precision
    results = {"machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "audit.json"
    if path.exists():
        results = {**json.loads(path.read_text()), **results}
    with tempfile.TemporaryDirectory(prefix="headstart-bench-audit-") as tmp:
        work = Path(tmp)
        if "speed" in sections:
            results["speed"] = bench_speed(args.rows, args.dim, work)
        if "faiss" in sections:
            results["faiss"] = bench_faiss(args.faiss_rows, args.dim)
        if ("quality" in sections or "calibration" in sections) and not args.weights_file:
            parser.error("the quality and calibration sections need --weights-file")
        if "calibration" in sections:
            RESULTS.mkdir(exist_ok=True)
            results["calibration"] = bench_calibration(
                args.weights_file, args.corpus or RESULTS / "quality" / "corpus",
                args.calibration or RESULTS / "quality" / "calibration",
                args.holdout or RESULTS / "quality" / "holdout")
        if "quality" in sections:
            work_q = RESULTS / "quality"
            work_q.mkdir(exist_ok=True)
            results["quality"] = bench_quality(args.weights_file, work_q,
                                               args.corpus or work_q / "corpus")
        if "map" in sections:
            corpus_dir = args.corpus or RESULTS / "quality" / "corpus"
            stores = {"planted corpus": corpus_dir.with_suffix(".h5")}
            truths = {"planted corpus": json.loads((corpus_dir / "truth.json").read_text())}
            if args.pets_store:
                stores["photo set"] = args.pets_store
            results["map"] = bench_map(stores, truths)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(tables(results))


if __name__ == "__main__":
    main()
