"""report.html: one self-contained page (thumbnails and the histogram are data URIs).

No script, no stylesheet or font from elsewhere, no server: the file opens in any
browser, offline, and can be mailed. The page is rendered from `templates/report.html`
by Jinja2 with autoescaping on: this module builds plain values (text, numbers, data
URIs) and nothing is marked safe, so every value taken from a store (paths, class
names, hashes, settings) is escaped wherever it lands (Jinja2 is the field's standard
engine; the one template keeps the page's markup in one place). Sections, in order:
header (store identity, split, thresholds with how they were derived, a histogram of
nearest-neighbour cosine with the threshold drawn on it, counts, a 2-D map of the rows
as inline SVG), same bytes with different labels,
near duplicates and leakage (across splits first), likely label errors, outliers, what
the audit cannot see. Each section shows at most `max_shown` groups or images;
issues.csv has all of them.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from headstart.audit.issues import Issue, counts
from headstart.audit.run import Audit
from headstart.audit.thresholds import nearest_other_bytes
from headstart.audit.thumbnails import data_uri, thumbnail
from headstart.classify.split import SPLITS


def plural(n: int, noun: str) -> str:
    """'1 group', '3 groups', '1,204 images'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


class _Page:
    """Builds the view; caches each row's thumbnail (a row can appear in several sections)."""

    def __init__(self, audit: Audit, max_shown: int, thumbnails: bool):
        self.audit, self.max_shown, self.thumbnails = audit, max_shown, thumbnails
        self.cache: dict[int, str] = {}

    def thumb(self, row: int) -> str:
        if row not in self.cache:
            a = self.audit
            self.cache[row] = (thumbnail(a.source_dir, a.paths[row], a.hashes[row])
                               if self.thumbnails else "")
        return self.cache[row]

    def card(self, row: int, *lines: str | dict) -> dict:
        """One image: thumbnail, path, split, label, then `lines` (text, or a dict with
        text / bold / after parts)."""
        a = self.audit
        return {"thumb": self.thumb(row), "path": a.paths[row],
                "split": SPLITS[a.assignment[row]], "label": a.classes[a.labels[row]],
                "lines": [{"text": "", "bold": "", "after": "",
                           **(line if isinstance(line, dict) else {"text": line})}
                          for line in lines]}

    def more(self, total: int, noun: str) -> str:
        """'12 more groups' when a section shows fewer than it has, else ''."""
        shown = min(total, self.max_shown)
        return f"{total - shown:,} more {noun}" if total > shown else ""


def _blind_spot(line: str | tuple[str, str, str], k: int) -> dict:
    """A BLIND_SPOTS entry as text, a command shown as code, and the text after it."""
    before, code, after = (line, "", "") if isinstance(line, str) else line
    return {"text": before.format(k=k), "code": code, "after": after}


def histogram(audit: Audit) -> str:
    """PNG data URI: nearest-neighbour cosine of sha256-unique images, thresholds marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    distance = nearest_other_bytes(audit.neighbours, audit.hashes)
    first = {}
    unique = np.array([first.setdefault(h, r) == r for r, h in enumerate(audit.hashes)])
    cosine = 1.0 - distance[unique & np.isfinite(distance)]
    t = audit.thresholds
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    ax = fig.add_subplot()
    if len(cosine):
        low = float(min(cosine.min(), 1 - t.copy - 0.02))
        ax.hist(cosine, bins=np.linspace(low, 1.0, 80), color="#4c72b0")
    ax.set_yscale("log")
    # Whole counts at the decades only: minor labels (2, 3, ... x 10^n) crowd a short axis.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=0.7)  # a bar of one image stands above the axis
    ax.axvline(1 - t.copy, color="#c44e52", linestyle="--",
               label=f"copy (within and across splits): cosine >= {1 - t.copy:.4f}")
    ax.set_xlabel("cosine similarity to the nearest image with other bytes")
    ax.set_ylabel("images")
    fig.legend(loc="outside upper center", ncols=2, frameon=False)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    return data_uri(out.getvalue(), "image/png")


def _header(page: _Page, found: list[Issue]) -> dict:
    a = page.audit
    identity = a.store["identity"]
    split_counts = ", ".join(f"{name} {int((a.assignment == s).sum()):,}"
                             for s, name in enumerate(SPLITS))
    classes = ", ".join(f"{c} {n:,}" for c, n in a.store["class_counts"].items())
    rows = [
        ("store", a.store["path"]),
        ("images", f"{a.store['n_images']:,} ({classes}); {a.store['dim']:,} features each"),
        ("features", f"{identity['model']} {identity['layer']}, weights "
                     f"{identity['weights']}, stored as {identity['dtype']}"),
        ("image folder", str(a.source_dir or "not recorded")),
        ("split", f"as fit-head --seed {a.settings['seed']} --split {a.settings['split']}: "
                  + split_counts),
        ("neighbours", f"k = {a.settings['k']}, {a.neighbours.method}"),
        ("label check", f"{a.settings['folds']} out-of-fold logreg heads, C = "
                        f"{a.settings['C']:g}, folds grouped by sha256 and copy group "
                        "(copy threshold)"),
    ]
    thresholds = [{"name": name.replace("_", " "), "value": f"{item['value']:.4f}",
                   "cosine": f"{1 - item['value']:.4f}", "derived": item["derived"],
                   "source": item.get("source")}
                  for name, item in a.thresholds.record().items()]
    c = counts(a, found)
    found_rows = [
        ("same bytes, different labels", f"{plural(c['conflict']['groups'], 'group')}, "
                                         f"{plural(c['conflict']['images'], 'image')}"),
        ("copies across splits", f"{plural(c['leak']['groups'], 'group')}, "
         f"{plural(c['leak']['images'], 'image')}; {plural(c['leak'][_LEAKY], 'test image')} "
         "with a copy in train or validation"),
        ("copies within a split", f"{plural(c['duplicate']['groups'], 'group')}, "
         f"{plural(c['duplicate']['images'], 'image')} beyond the first of each group"),
        ("likely label errors", plural(c["label"]["images"], "image")),
        ("outliers", plural(c["outlier"]["images"], "image")),
    ]
    return {"rows": rows, "thresholds": thresholds, "fence": f"{a.outliers.fence:.3f}",
            "histogram": histogram(a), "found": found_rows}


_LEAKY = "test_images_with_a_copy_in_train_or_validation"

CLASS_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                 "#ccb974", "#64b5cd", "#c44e52"]
FINDING_COLOURS = {"conflict": "#d62728", "leak": "#ff7f0e", "duplicate": "#9400d3",
                   "label": "#000000", "outlier": "#00a000"}
MAP_SIZE = (900, 560)  # SVG pixels
_MARGIN = 12


def _marker(split: int, x: float, y: float, r: float) -> str:
    """SVG path data: a circle (train), a square (validation) or a diamond (test)."""
    if split == 0:
        return f"M{x - r:.1f},{y:.1f}a{r:g},{r:g} 0 1,0 {2 * r:g},0a{r:g},{r:g} 0 1,0 {-2 * r:g},0"
    if split == 1:
        return f"M{x - r:.1f},{y - r:.1f}h{2 * r:g}v{2 * r:g}h{-2 * r:g}z"
    d = 1.35 * r
    return f"M{x:.1f},{y - d:.1f}l{d:.2f},{d:.2f}l{-d:.2f},{d:.2f}l{-d:.2f},{-d:.2f}z"


def _map(page: _Page, found: list[Issue]) -> dict | None:
    """The map section: its note, legend and points (see the template), or None."""
    a = page.audit
    m = a.map
    if m is None:
        return None
    kinds: dict[int, list[str]] = {}
    for issue in found:
        kinds.setdefault(issue.row, [])
        if issue.kind not in kinds[issue.row]:
            kinds[issue.row].append(issue.kind)
    legend = [{"d": _marker(0, 7, 7, 5), "fill": CLASS_COLOURS[c % len(CLASS_COLOURS)],
               "stroke": "none", "sw": 0, "text": name} for c, name in enumerate(a.classes)]
    legend += [{"d": _marker(s, 7, 7, 4.5), "fill": "#999", "stroke": "none", "sw": 0,
                "text": name} for s, name in enumerate(SPLITS)]
    shown = set(m.rows.tolist())
    c = counts(a, found)
    for kind, colour in FINDING_COLOURS.items():
        on_map = len({i.row for i in found if i.kind == kind} & shown)
        legend.append({"d": _marker(0, 7, 7, 4.5), "fill": "#fff", "stroke": colour,
                       "sw": 2.5, "text": f"{kind} ({on_map:,} of {c[kind]['images']:,} shown)"})
    width, height = MAP_SIZE
    return {
        "how": ("PCA of the unit-length rows to 2 axes" if m.method == "pca"
                else "t-SNE of a 50-component PCA of the unit-length rows"),
        "explained": (f" (the axes explain {100 * m.explained[0]:.1f}% and "
                      f"{100 * m.explained[1]:.1f}% of the variance)" if m.explained else ""),
        "sampled": (f"all {len(m.rows):,} images" if len(m.rows) == len(a.labels) else
                    f"{len(m.rows):,} of {len(a.labels):,} images (a random "
                    f"{m.fitted_on:,}, which the projection was fitted on, and every flagged "
                    "image)"),
        "legend": legend, "width": width, "height": height,
        "points": map_points(page, kinds),
    }


def map_points(page: _Page, kinds: dict[int, list[str]]) -> list[dict]:
    """One point per shown row: path data, colour by label, shape by split, flagged rows
    ringed in their first finding's colour and listed last, each with its thumbnail shown
    on hover (CSS only, no script)."""
    a = page.audit
    m = a.map
    width, height = MAP_SIZE
    xy = m.xy.astype(np.float64)
    low, high = (xy.min(axis=0), xy.max(axis=0)) if len(xy) else (np.zeros(2), np.ones(2))
    span = np.where(high > low, high - low, 1.0)
    box = np.array([width - 2 * _MARGIN, height - 2 * _MARGIN], dtype=np.float64)
    px = _MARGIN + (xy - low) / span * box
    px[:, 1] = height - px[:, 1]  # y up
    plain, ringed = [], []
    thumbs_per_kind: dict[str, int] = {}
    for pos, row in enumerate(m.rows.tolist()):
        x, y = px[pos]
        label, split = int(a.labels[row]), int(a.assignment[row])
        row_kinds = kinds.get(row, [])
        point = {"row": row, "label": a.classes[label], "split": SPLITS[split],
                 "finding": " ".join(row_kinds), "fill": CLASS_COLOURS[label % len(CLASS_COLOURS)],
                 "title": f"{a.paths[row]} - {a.classes[label]}, {SPLITS[split]}"
                          + (f"; {', '.join(row_kinds)}" if row_kinds else ""),
                 "ring": None, "tip": None}
        if not row_kinds:
            plain.append({**point, "d": _marker(split, x, y, 3)})
            continue
        first = row_kinds[0]
        thumbs_per_kind[first] = thumbs_per_kind.get(first, 0) + 1
        uri = page.thumb(row) if thumbs_per_kind[first] <= page.max_shown else ""
        if uri:
            size = 120
            point["tip"] = {"href": uri, "size": size,
                            "x": f"{min(max(x + 10, 0), width - size):.0f}",
                            "y": f"{min(max(y - size - 10, 0), height - size):.0f}"}
        ringed.append({**point, "d": _marker(split, x, y, 5), "ring": FINDING_COLOURS[first]})
    return plain + ringed


def _conflicts(page: _Page) -> dict:
    a = page.audit
    return {"title": f"{plural(len(a.conflicts), 'group')}, "
                     f"{plural(sum(len(g) for g in a.conflicts), 'image')}",
            "groups": [[page.card(int(r), f"sha256 {a.hashes[r][:12]}") for r in group]
                       for group in a.conflicts[:page.max_shown]],
            "more": page.more(len(a.conflicts), "groups")}


def _group_cards(page: _Page, group: np.ndarray) -> list[dict]:
    """One near-duplicate group: its first image, then each other with its cosine to it."""
    a = page.audit
    first = int(group[0])
    cards = [page.card(first, "kept: first of the group")]
    for row in group[1:]:
        row = int(row)
        linked = a.neighbours.indices[row] == first
        if a.hashes[row] == a.hashes[first]:
            note = "same bytes as the first"
        elif linked.any():
            note = f"cosine to the first {float(a.neighbours.cosine[row][linked][0]):.4f}"
        else:
            note = "linked to the first through another copy"
        cards.append(page.card(row, note))
    return cards


def _leakage(page: _Page) -> dict:
    a = page.audit
    leak, dup = a.leak_groups(), [g for g in a.duplicate_groups()
                                  if len(np.unique(a.assignment[g])) == 1]
    head = None
    if a.head:
        h = a.head
        head = {"path": h["path"], "kind": h["kind"], "rows": [
            {"label": label, "n": f"{h[key]['n']:,}", "accuracy": _pct(h[key]["accuracy"])}
            for key, label in (("all_test", "all"),
                               ("leak_free_test", "without a copy in train or validation"),
                               ("leaky_test", "with a copy in train or validation"))]}
    top = ", ".join(f"{a.leakage.cosine[n]:.4f}" for n in range(min(5, len(a.leakage.i))))
    return {
        "copy_distance": f"{a.thresholds.copy:.4f}",  # not "copy": a dict's own method
        "copy_cosine": f"{1 - a.thresholds.copy:.4f}",
        "head": head, "top": top,
        "across_title": f"{plural(len(leak), 'group')}, "
                        f"{plural(sum(len(g) for g in leak), 'image')}; test images with a "
                        f"copy in train or validation: {len(a.leakage.leaky_test):,}",
        "across": [_group_cards(page, g) for g in leak[:page.max_shown]],
        "across_more": page.more(len(leak), "groups"),
        "within_title": f"{plural(len(dup), 'group')}, "
                        f"{plural(sum(len(g) for g in dup), 'image')}",
        "within": [_group_cards(page, g) for g in dup[:page.max_shown]],
        "within_more": page.more(len(dup), "groups"),
    }


def _labels(page: _Page, found: list[Issue]) -> dict:
    a = page.audit
    flagged = [i for i in found if i.kind == "label"]
    cards = []
    for issue in flagged[:page.max_shown]:
        row, given, other = issue.row, a.labels[issue.row], issue.suggested
        votes = ", ".join(f"{c} {n}" for c, n in
                          zip(a.classes, a.neighbour_labels[row].tolist(), strict=True) if n)
        cards.append(page.card(
            row, {"text": "suggested ", "bold": a.classes[other]},
            f"p({a.classes[given]}) {a.proba[row, given]:.3f}, "
            f"p({a.classes[other]}) {a.proba[row, other]:.3f}",
            f"neighbours: {votes}"))
    return {"title": plural(len(flagged), "image"), "cards": cards,
            "more": page.more(len(flagged), "images")}


NEAR_MISSES = 8  # unflagged images of the highest scores shown, folded, after the flagged


def _outliers(page: _Page) -> dict:
    """The flagged images, strangest first (up to max_shown), then the NEAR_MISSES highest
    scores below the fence in a folded block."""
    o = page.audit.outliers
    order = np.argsort(-o.score, kind="stable")
    flagged = [int(row) for row in order if o.score[row] > o.fence]
    near = [int(row) for row in order if o.score[row] <= o.fence][:NEAR_MISSES]

    def card(row: int) -> dict:
        return page.card(row, {"text": "score ", "bold": f"{o.score[row]:.2f}"},
                         f"centroid {o.centroid[row]:.3f}, k-th typical neighbour "
                         f"{o.neighbour[row]:.3f}")

    return {"title": plural(len(flagged), "image"), "k": page.audit.settings["k"],
            "fence": f"{o.fence:.3f}", "cards": [card(row) for row in flagged[:page.max_shown]],
            "near": [card(row) for row in near],
            "more": page.more(len(flagged), "flagged images")}


BLIND_SPOTS = [
    "Horizontal flips, crops and other edits that change what the backbone sees: their "
    "cosine to the original is far lower than a re-encode's or a resize's and usually "
    "below the copy threshold, so such copies are not reported.",
    "Pairs outside each image's k nearest neighbours (k = {k}): a group of more than "
    "{k} near-identical copies may be split into several groups.",
    "Label errors the out-of-fold heads share: a class the features cannot tell apart, or "
    "a mistake repeated across many images, looks like the norm.",
    ("Images that were skipped at extraction (unreadable files): they have no row; ",
     "features-info --skipped", " lists them."),
    "Outliers are relative to this store: a whole folder of wrong images forms its own "
    "cluster and looks typical.",
]


@lru_cache(maxsize=1)
def _template():
    """The page template, with autoescaping on for every value (Jinja2)."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                     keep_trailing_newline=True)
    source = (files("headstart.audit") / "templates" / "report.html").read_text("utf-8")
    return environment.from_string(source)


def render(audit: Audit, found: list[Issue], *, max_shown: int = 50,
           thumbnails: bool = True) -> str:
    """The whole page as a string (see the module docstring)."""
    page = _Page(audit, max_shown, thumbnails)
    return _template().render(
        name=audit.source.name, header=_header(page, found), map=_map(page, found),
        conflicts=_conflicts(page), leakage=_leakage(page), labels=_labels(page, found),
        outliers=_outliers(page),
        blind_spots=[_blind_spot(line, audit.settings["k"]) for line in BLIND_SPOTS],
        seconds=f"{audit.seconds.get('total', 0):.1f}")


def write_report(audit: Audit, found: list[Issue], path: Path, **options) -> Path:
    """report.html, into the audit's staged folder (write.py replaces the folder whole)."""
    path.write_text(render(audit, found, **options), encoding="utf-8")
    return path
