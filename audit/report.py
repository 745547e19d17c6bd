"""report.html: one self-contained page (thumbnails and the histogram are data URIs).

No script, no stylesheet or font from elsewhere, no server: the file opens in any
browser, offline, and can be mailed. Every name from the store (paths, class names) is
HTML-escaped. Sections, in order: header (store identity, split, thresholds with how
they were derived, a histogram of nearest-neighbour cosine with the threshold drawn on
it, counts, a 2-D map of the rows as inline SVG), same bytes with different labels,
near duplicates and leakage (across splits first), likely label errors, outliers, what
the audit cannot see. Each section shows at most `max_shown` groups or images;
issues.csv has all of them.
"""

from __future__ import annotations

import io
import os
from html import escape
from pathlib import Path

import numpy as np

from headstart.audit.issues import Issue, counts
from headstart.audit.run import Audit
from headstart.audit.thresholds import nearest_other_bytes
from headstart.audit.thumbnails import data_uri, thumbnail
from headstart.classify.split import SPLITS

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}
h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:16px} table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top;font-size:13px} th{background:#f4f4f4}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 14px}
.groups{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.group{border:1px solid #bbb;border-radius:6px;padding:6px;background:#fafafa}
.group .cards{margin:0}
figure{margin:0;width:168px;font-size:12px;background:#fff;border:1px solid #ddd;padding:3px}
figure img{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
figcaption{overflow-wrap:anywhere;line-height:1.3} .test{color:#a00;font-weight:bold}
.more{color:#555;font-style:italic} .note{color:#444;font-size:14px;max-width:900px}
.num{text-align:right}
.map{border:1px solid #ccc;background:#fff} .map .tip{display:none;pointer-events:none}
.map g.f:hover .tip{display:inline} .map g.f:hover path{stroke-width:4}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:13px;margin:4px 0 10px}
.legend svg{vertical-align:middle}
"""


def plural(n: int, noun: str) -> str:
    """'1 group', '3 groups', '1,204 images'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


class _Page:
    """Builds the page; caches each row's thumbnail (a row can appear in several sections)."""

    def __init__(self, audit: Audit, max_shown: int, thumbnails: bool):
        self.audit, self.max_shown, self.thumbnails = audit, max_shown, thumbnails
        self.cache: dict[int, str] = {}
        self.parts: list[str] = []

    def add(self, html: str) -> None:
        self.parts.append(html)

    def thumb(self, row: int) -> str:
        if row not in self.cache:
            a = self.audit
            self.cache[row] = (thumbnail(a.source_dir, a.paths[row], a.hashes[row])
                               if self.thumbnails else "")
        return self.cache[row]

    def card(self, row: int, *lines: str) -> str:
        a = self.audit
        split = SPLITS[a.assignment[row]]
        split_html = f'<span class="{escape(split)}">{escape(split)}</span>'
        text = "<br>".join([escape(a.paths[row]), f"{split_html} &middot; "
                            f"{escape(a.classes[a.labels[row]])}", *lines])
        return (f'<figure><img src="{self.thumb(row)}" alt="{escape(a.paths[row])}" '
                f'width="160" height="160"><figcaption>{text}</figcaption></figure>')

    def more(self, shown: int, total: int, noun: str) -> None:
        if total > shown:
            self.add(f'<p class="more">... and {total - shown:,} more {noun} in issues.csv.</p>')


def histogram(audit: Audit) -> str:
    """PNG data URI: nearest-neighbour cosine of sha256-unique images, thresholds marked."""
    from matplotlib.figure import Figure

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
    ax.axvline(1 - t.copy, color="#c44e52", linestyle="--",
               label=f"copy (within and across splits): cosine >= {1 - t.copy:.4f}")
    ax.set_xlabel("cosine similarity to the nearest image with other bytes")
    ax.set_ylabel("images")
    fig.legend(loc="outside upper center", ncols=2, frameon=False)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    return data_uri(out.getvalue(), "image/png")


def _header(page: _Page, found: list[Issue]) -> None:
    a = page.audit
    identity = a.store["identity"]
    split_counts = ", ".join(f"{name} {int((a.assignment == s).sum()):,}"
                             for s, name in enumerate(SPLITS))
    classes = ", ".join(f"{escape(c)} {n:,}" for c, n in a.store["class_counts"].items())
    rows = [
        ("store", escape(a.store["path"])),
        ("images", f"{a.store['n_images']:,} ({classes}); {a.store['dim']:,} features each"),
        ("features", escape(f"{identity['model']} {identity['layer']}, weights "
                            f"{identity['weights']}, stored as {identity['dtype']}")),
        ("image folder", escape(str(a.source_dir or "not recorded"))),
        ("split", escape(f"as fit-head --seed {a.settings['seed']} --split "
                         f"{a.settings['split']}: ") + split_counts),
        ("neighbours", escape(f"k = {a.settings['k']}, {a.neighbours.method}")),
        ("label check", escape(f"{a.settings['folds']} out-of-fold logreg heads, C = "
                               f"{a.settings['C']:g}, folds grouped by sha256 and "
                               "copy group (copy threshold)")),
    ]
    page.add("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
             + "</table>")
    t = a.thresholds.record()
    page.add("<h3>Thresholds (derived from this store)</h3><table><tr><th>threshold</th>"
             "<th>cosine distance</th><th>cosine</th><th>how it was derived</th></tr>")
    for name, item in t.items():
        cosine = f"{1 - item['value']:.4f}"
        source = f" (source: {escape(item['source'])})" if "source" in item else ""
        page.add(f"<tr><td>{escape(name.replace('_', ' '))}</td><td class=num>"
                 f"{item['value']:.4f}</td><td class=num>{cosine}</td>"
                 f"<td>{escape(item['derived'])}{source}</td></tr>")
    page.add(f"<tr><td>outlier fence</td><td colspan=2 class=num>score &gt; "
             f"{a.outliers.fence:.3f}</td><td>Q3 + 1.5 &times; IQR of the outlier scores (Tukey's "
             "fence)</td></tr></table>")
    page.add(f'<img src="{histogram(a)}" alt="histogram of nearest-neighbour cosine">')
    c = counts(a, found)
    leaky = c["leak"][_LEAKY]
    summary = [
        ("same bytes, different labels", f"{plural(c['conflict']['groups'], 'group')}, "
                                         f"{plural(c['conflict']['images'], 'image')}"),
        ("copies across splits", f"{plural(c['leak']['groups'], 'group')}, "
         f"{plural(c['leak']['images'], 'image')}; {plural(leaky, 'test image')} with a copy "
         "in train or validation"),
        ("copies within a split", f"{plural(c['duplicate']['groups'], 'group')}, "
         f"{plural(c['duplicate']['images'], 'image')} beyond the first of each group"),
        ("likely label errors", plural(c["label"]["images"], "image")),
        ("outliers", plural(c["outlier"]["images"], "image")),
    ]
    page.add("<h3>Found</h3><table>" + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary) + "</table>")
    _map(page, found)


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


def map_svg(page: _Page, found: list[Issue]) -> str:
    """Inline SVG of `audit.map`: one path per shown row (data-row, data-label, data-split,
    data-finding attributes; a title for the tooltip), coloured by label, shaped by split,
    flagged rows ringed in their first finding's colour and drawn last, each with its
    thumbnail shown on hover (CSS only, no script)."""
    a = page.audit
    m = a.map
    width, height = MAP_SIZE
    kinds: dict[int, list[str]] = {}
    for issue in found:
        kinds.setdefault(issue.row, [])
        if issue.kind not in kinds[issue.row]:
            kinds[issue.row].append(issue.kind)
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
        fill = CLASS_COLOURS[label % len(CLASS_COLOURS)]
        row_kinds = kinds.get(row, [])
        title = escape(f"{a.paths[row]} - {a.classes[label]}, {SPLITS[split]}"
                       + (f"; {', '.join(row_kinds)}" if row_kinds else ""))
        attrs = (f'data-row="{row}" data-label="{escape(a.classes[label])}" '
                 f'data-split="{SPLITS[split]}" data-finding="{" ".join(row_kinds)}"')
        if not row_kinds:
            plain.append(f'<path d="{_marker(split, x, y, 3)}" fill="{fill}" '
                         f'fill-opacity="0.55" {attrs}><title>{title}</title></path>')
            continue
        first = row_kinds[0]
        tip = ""
        thumbs_per_kind[first] = thumbs_per_kind.get(first, 0) + 1
        uri = page.thumb(row) if thumbs_per_kind[first] <= page.max_shown else ""
        if uri:
            size = 120
            tx = min(max(x + 10, 0), width - size)
            ty = min(max(y - size - 10, 0), height - size)
            tip = (f'<image class="tip" href="{uri}" x="{tx:.0f}" y="{ty:.0f}" '
                   f'width="{size}" height="{size}"/>')
        ringed.append(f'<g class="f"><path d="{_marker(split, x, y, 5)}" fill="{fill}" '
                      f'stroke="{FINDING_COLOURS[first]}" stroke-width="2.5" {attrs}>'
                      f"<title>{title}</title></path>{tip}</g>")
    return (f'<svg class="map" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
            + "".join(plain) + "".join(ringed) + "</svg>")


def _map(page: _Page, found: list[Issue]) -> None:
    a = page.audit
    m = a.map
    if m is None:
        return
    how = ("PCA of the unit-length rows to 2 axes" if m.method == "pca"
           else "t-SNE of a 50-component PCA of the unit-length rows")
    explained = (f" (the axes explain {100 * m.explained[0]:.1f}% and "
                 f"{100 * m.explained[1]:.1f}% of the variance)" if m.explained else "")
    sampled = (f"all {len(m.rows):,} images" if len(m.rows) == len(a.labels) else
               f"{len(m.rows):,} of {len(a.labels):,} images (a random {m.fitted_on:,}, "
               "which the projection was fitted on, and every flagged image)")
    page.add(f"<h3>Map of the store</h3><p class=\"note\">{escape(how)}{explained}: "
             f"{sampled}. Colour: label; shape: split; a coloured ring: a finding (hover for "
             "the path and the image). Near points have similar features; a point amid the "
             "other class is worth a look.</p>")
    swatch = '<svg width="14" height="14"><path d="{d}" fill="{fill}" stroke="{stroke}" ' \
             'stroke-width="{sw}"/></svg> {text}'
    items = [swatch.format(d=_marker(0, 7, 7, 5), fill=CLASS_COLOURS[c % len(CLASS_COLOURS)],
                           stroke="none", sw=0, text=escape(name))
             for c, name in enumerate(a.classes)]
    items += [swatch.format(d=_marker(s, 7, 7, 4.5), fill="#999", stroke="none", sw=0,
                            text=name) for s, name in enumerate(SPLITS)]
    shown = set(m.rows.tolist())
    c = counts(a, found)
    for kind, colour in FINDING_COLOURS.items():
        on_map = len({i.row for i in found if i.kind == kind} & shown)
        items.append(swatch.format(d=_marker(0, 7, 7, 4.5), fill="#fff", stroke=colour, sw=2.5,
                                   text=f"{kind} ({on_map:,} of {c[kind]['images']:,} shown)"))
    page.add('<div class="legend">' + "".join(f"<span>{i}</span>" for i in items) + "</div>")
    page.add(map_svg(page, found))


def _conflicts(page: _Page) -> None:
    a = page.audit
    page.add(f"<h2>1. Same bytes, different labels ({plural(len(a.conflicts), 'group')}, "
             f"{plural(sum(len(g) for g in a.conflicts), 'image')})</h2>")
    page.add('<p class="note">Files with identical bytes (one sha256) stored under more than '
             "one class: at least one label is wrong. Keep one copy, in the right class.</p>")
    if not a.conflicts:
        page.add("<p>None.</p>")
    page.add('<div class="groups">')
    for group in a.conflicts[:page.max_shown]:
        page.add('<div class="group"><div class="cards">'
                 + "".join(page.card(int(r), f"sha256 {a.hashes[r][:12]}") for r in group)
                 + "</div></div>")
    page.add("</div>")
    page.more(min(len(a.conflicts), page.max_shown), len(a.conflicts), "groups")


def _group_cards(page: _Page, group: np.ndarray) -> str:
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
        cards.append(page.card(row, escape(note)))
    return '<div class="group"><div class="cards">' + "".join(cards) + "</div></div>"


def _leakage(page: _Page) -> None:
    a = page.audit
    leak, dup = a.leak_groups(), [g for g in a.duplicate_groups()
                                  if len(np.unique(a.assignment[g])) == 1]
    page.add("<h2>2. Near duplicates and leakage</h2>")
    t = a.thresholds
    page.add('<p class="note">Two images are copies up to cosine distance '
             f"{t.copy:.4f} (cosine at least {1 - t.copy:.4f}), in one split or in two; "
             "identical bytes always. Groups are chains of such pairs. A group across splits "
             "lets a model be tested on an image it was trained on; within a split a copy "
             "doubles that photo's weight, and the first image of the group is the one kept. "
             "The audit never re-splits: fit-head --exclude leaves the train and validation "
             "members out and keeps the test split as it is.</p>")
    if a.head:
        h = a.head
        page.add(f"<h3>Test accuracy of the head in {escape(h['path'])} ({escape(h['kind'])})"
                 "</h3><table><tr><th>test images</th><th class=num>n</th>"
                 "<th class=num>accuracy</th></tr>")
        for key, label in (("all_test", "all"), ("leak_free_test",
                                                  "without a copy in train or validation"),
                           ("leaky_test", "with a copy in train or validation")):
            page.add(f"<tr><td>{label}</td><td class=num>{h[key]['n']:,}</td>"
                     f"<td class=num>{_pct(h[key]['accuracy'])}</td></tr>")
        page.add("</table>")
    page.add(f"<h3>Across splits ({plural(len(leak), 'group')}, "
             f"{plural(sum(len(g) for g in leak), 'image')}; test images with a copy "
             f"in train or validation: {len(a.leakage.leaky_test):,})</h3>")
    if len(a.leakage.i):
        top = ", ".join(f"{a.leakage.cosine[n]:.4f}" for n in range(min(5, len(a.leakage.i))))
        page.add(f'<p class="note">Highest cosines across splits: {top}.</p>')
    page.add('<div class="groups">')
    for group in leak[:page.max_shown]:
        page.add(_group_cards(page, group))
    page.add("</div>")
    page.more(min(len(leak), page.max_shown), len(leak), "groups")
    page.add(f"<h3>Within one split ({plural(len(dup), 'group')}, "
             f"{plural(sum(len(g) for g in dup), 'image')})</h3>")
    page.add('<div class="groups">')
    for group in dup[:page.max_shown]:
        page.add(_group_cards(page, group))
    page.add("</div>")
    page.more(min(len(dup), page.max_shown), len(dup), "groups")
    if not leak and not dup:
        page.add("<p>None.</p>")


def _labels(page: _Page, found: list[Issue]) -> None:
    a = page.audit
    flagged = [i for i in found if i.kind == "label"]
    page.add(f"<h2>3. Likely label errors ({plural(len(flagged), 'image')})</h2>")
    page.add('<p class="note">Confident learning (Northcutt et al., 2021) on out-of-fold '
             "probabilities: each image is judged by a head that never saw it or its near "
             "duplicates. Most likely wrong first. Check each one: a model can be confidently "
             "wrong, and an image may show both classes.</p><div class=cards>")
    for issue in flagged[:page.max_shown]:
        row, given, other = issue.row, a.labels[issue.row], issue.suggested
        votes = ", ".join(f"{escape(c)} {n}" for c, n in
                          zip(a.classes, a.neighbour_labels[row].tolist(), strict=True) if n)
        page.add(page.card(
            row, f"suggested <b>{escape(a.classes[other])}</b>",
            escape(f"p({a.classes[given]}) {a.proba[row, given]:.3f}, "
                   f"p({a.classes[other]}) {a.proba[row, other]:.3f}"),
            f"neighbours: {votes}"))
    page.add("</div>")
    page.more(min(len(flagged), page.max_shown), len(flagged), "images")


def _outliers(page: _Page) -> None:
    o = page.audit.outliers
    page.add(f"<h2>4. Outliers ({plural(len(o.flagged), 'image')})</h2>")
    page.add('<p class="note">Images that belong to no class (blank frames, text cards, '
             "scenes without the subject): distance to the nearest class centroid plus "
             f"distance to the {page.audit.settings['k']}th nearest typical image (one near "
             "a class centroid), each over its median; flagged above "
             f"{o.fence:.3f}. Strangest first; the highest scores below "
             "the fence follow, unflagged, for a look.</p><div class=cards>")
    order = np.argsort(-o.score, kind="stable")[:page.max_shown]
    for row in order:
        mark = "" if o.score[row] > o.fence else " (below the fence)"
        page.add(page.card(int(row), escape(f"score {o.score[row]:.2f}{mark}"),
                           escape(f"centroid {o.centroid[row]:.3f}, k-th typical neighbour "
                                  f"{o.neighbour[row]:.3f}")))
    page.add("</div>")
    page.more(min(len(o.flagged), page.max_shown), len(o.flagged), "flagged images")


BLIND_SPOTS = [
    "Horizontal flips, crops and other edits that change what the backbone sees: their "
    "cosine to the original is far lower than a re-encode's or a resize's and usually "
    "below the copy threshold, so such copies are not reported.",
    "Pairs outside each image's k nearest neighbours (k = {k}): a group of more than "
    "{k} near-identical copies may be split into several groups.",
    "Label errors the out-of-fold heads share: a class the features cannot tell apart, or "
    "a mistake repeated across many images, looks like the norm.",
    "Images that were skipped at extraction (unreadable files): they have no row; "
    "`features-info --skipped` lists them.",
    "Outliers are relative to this store: a whole folder of wrong images forms its own "
    "cluster and looks typical.",
]


def render(audit: Audit, found: list[Issue], *, max_shown: int = 50,
           thumbnails: bool = True) -> str:
    """The whole page as a string (see the module docstring)."""
    page = _Page(audit, max_shown, thumbnails)
    name = escape(audit.source.name)
    page.add(f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Audit of {name}"
             f"</title><style>{STYLE}</style></head><body><h1>Data audit of {name}</h1>")
    _header(page, found)
    _conflicts(page)
    _leakage(page)
    _labels(page, found)
    _outliers(page)
    page.add("<h2>What this audit cannot see</h2><ul class=note>" + "".join(
        f"<li>{escape(line.format(k=audit.settings['k']))}</li>" for line in BLIND_SPOTS)
        + "</ul>")
    page.add(f'<p class="more">Written by audit-features in {audit.seconds.get("total", 0):.1f} '
             "s; every flagged image is in issues.csv, everything else in audit.json. No file "
             "was changed or deleted.</p></body></html>")
    return "\n".join(page.parts)


def write_report(audit: Audit, found: list[Issue], path: Path, **options) -> Path:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(render(audit, found, **options), encoding="utf-8")
    os.replace(tmp, path)
    return path
