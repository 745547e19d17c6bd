"""audit-features end to end on real photos: the page, its thumbnails, the CSV, the errors."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import IDENTITY, SAMPLE_PETS, make_store, write_image
from PIL import Image

from headstart.audit import issues, thumbnails
from headstart.audit.cli import main
from headstart.classify import fit_head
from headstart.classify.split import SPLITS, assign_splits
from headstart.features import open_store, sha256_file, write_store

ODD_NAME = 'Dog/copy <b>&"x".jpg'  # a file name that must be escaped in the page


def jpeg_bytes(path: Path, quality: int) -> bytes:
    out = io.BytesIO()
    with Image.open(path) as image:
        image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def split_of(data: bytes) -> int:
    import hashlib

    return int(assign_splits([hashlib.sha256(data).hexdigest()])[0])


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory):
    """The 28 sample photos, 120 small drawn images, and planted faults, with synthetic rows.

    Planted: a byte copy of a cat photo under Dog (with an odd name), a re-encoded copy of
    a dog photo that lands in another split (row = original + tiny noise), one photo whose
    file is deleted after extraction. Each row: its class centre plus noise, as features.
    """
    root = tmp_path_factory.mktemp("audit")
    folder = Path(shutil.copytree(SAMPLE_PETS, root / "pets",
                                  ignore=shutil.ignore_patterns("*.md")))
    rng = np.random.default_rng(0)
    for i in range(120):
        cls = ("Cat", "Dog")[i % 2]
        write_image(folder / cls / f"drawn-{i:03d}.png", size=(30 + i % 7, 20 + i % 5),
                    color=(i, 255 - i, (7 * i) % 256))
    shutil.copy(folder / "Cat" / "100.jpg", folder / ODD_NAME)
    source = folder / "Dog" / "1.jpg"
    for quality in range(40, 95):
        copy = jpeg_bytes(source, quality)
        if split_of(copy) != split_of(source.read_bytes()):
            break
    (folder / "Dog" / "1-reencoded.jpg").write_bytes(copy)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*"))
    centres = rng.standard_normal((2, 32)) * 3
    rows = {}
    for p in paths:
        label = 0 if p.startswith("Cat/") else 1
        rows[p] = np.maximum(centres[label] + rng.standard_normal(32), 0)
    rows[ODD_NAME] = rows["Cat/100.jpg"]
    rows["Dog/1-reencoded.jpg"] = rows["Dog/1.jpg"] + 1e-4 * rng.standard_normal(32)
    store = write_store(root / "features.h5", features=np.array([rows[p] for p in paths]),
                        paths=paths, hashes=[sha256_file(folder / p) for p in paths],
                        classes=["Cat", "Dog"], identity=IDENTITY,
                        attrs={"complete": True, "seed": 0, "source_dir": str(folder)})
    (folder / "Cat" / "100.jpg").unlink()  # moved away since extraction: a placeholder
    head = fit_head(store, model="logreg", out_dir=root / "heads", plots=False)
    assert main(["--features", str(store), "-o", str(root / "audit"), "--head",
                 str(head.out_dir), "-q"]) == 0
    return root


class Page(HTMLParser):
    """Collects headings, image sources and every URL-valued attribute of a page."""

    def __init__(self):
        super().__init__()
        self.h2: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "h2":
            self._in_h2 = True
            self.h2.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def test_report_is_one_self_contained_page_in_the_promised_order(photo_store):
    html = (photo_store / "audit" / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    with open(photo_store / "audit" / "issues.csv", newline="", encoding="utf-8") as handle:
        kinds = {}
        for line in csv.DictReader(handle):
            kinds.setdefault(line["path"], set()).add(line["issue"])
    assert not any({"conflict", "duplicate"} <= k for k in kinds.values()), \
        "a conflict is not also a duplicate"
    assert "script" not in page.tags and "link" not in page.tags
    assert all(url.startswith("data:image/") for url in page.urls), "no external fetch"
    order = ["Same bytes, different labels", "Near duplicates and leakage",
             "Likely label errors", "Outliers", "What this audit cannot see"]
    positions = [next(i for i, h in enumerate(page.h2) if h.startswith(name) or name in h)
                 for name in order]
    assert positions == sorted(positions)
    assert "1 group, 2 images" in page.h2[0]
    assert not re.search(r"\d+ pairs", html), "counts are in images and groups"
    assert "0.5 x median" in html and "in one split or in two" in html
    assert re.search(r"copies up to cosine distance \d\.\d{4} \(cosine at least \d\.\d{4}\)",
                     html)
    assert "built-in method" not in html and "object at 0x" not in html
    assert "`" not in html and "<code>features-info --skipped</code>" in html
    outliers = html.split("<h2>4. Outliers")[1].split("<h2>")[0]
    flagged, _, folded = outliers.partition('<details class="near">')
    assert flagged.count("<figure>") == sum("outlier" in k for k in kinds.values()) > 0
    assert 0 < folded.count("<figure>") <= 8 and "below the fence (not flagged" in folded


def test_every_thumbnail_decodes_and_is_at_most_160_pixels(photo_store):
    page = Page()
    page.feed((photo_store / "audit" / "report.html").read_text(encoding="utf-8"))
    thumbs = page.images[1:]  # the first is the histogram
    assert len(thumbs) >= 4
    for src in page.images:
        header, payload = src.split(",", 1)
        assert header in ("data:image/jpeg;base64", "data:image/png;base64")
        with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
            image.load()
            if src is not page.images[0]:
                assert max(image.size) <= 160
    histogram = Image.open(io.BytesIO(base64.b64decode(page.images[0].split(",", 1)[1])))
    assert histogram.size[0] > 300


def test_names_are_escaped(photo_store):
    html = (photo_store / "audit" / "report.html").read_text(encoding="utf-8")
    assert ODD_NAME not in html
    assert "copy &lt;b&gt;&amp;&#34;x&#34;.jpg" in html


class Tags(HTMLParser):
    """Every start tag and attribute name of a page."""

    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


HOSTILE = ['<script>alert(1)</script>', 'x" onmouseover="alert(2)', "</title><img src=x "
           "onerror=alert(3)>"]


def test_every_value_from_a_crafted_store_is_escaped(tmp_path):
    """A crafted store ran a script in report.html: hashes were written unescaped."""
    from helpers import IDENTITY, random_labels

    from headstart.audit import audit_store, write_audit
    from headstart.features.store_file import write_store

    X, _ = random_labels(n=300, dim=16, seed=3)
    y = np.arange(300) % 3
    classes = sorted(HOSTILE)
    labels = [classes[label] for label in y]  # class names and paths, each hostile
    paths = [f"{i:03d}{HOSTILE[i % 3]}.jpg" for i in range(len(y))]
    store = write_store(tmp_path / "features.h5", features=X, paths=paths,
                        hashes=[f"{i:064x}" for i in range(len(y))], classes=classes,
                        identity=IDENTITY, labels=labels,
                        attrs={"complete": True, "seed": 0,
                               "source_dir": '"><script>alert(4)</script>'})
    result = audit_store(store, seed=0, quiet=True)
    write_audit(result, tmp_path / "audit", thumbnails=True)
    html = (tmp_path / "audit" / "report.html").read_text(encoding="utf-8")
    page = Tags()
    page.feed(html)
    assert "script" not in page.tags
    assert not {a for a in page.attributes if a.startswith("on")}, page.attributes
    for value in HOSTILE:
        assert value not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_issues_csv_and_audit_json_hold_the_planted_faults(photo_store):
    with open(photo_store / "audit" / "issues.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
        assert tuple(reader.fieldnames) == issues.COLUMNS
    kinds = [line["issue"] for line in lines]
    assert kinds[:2] == ["conflict", "conflict"], "same bytes, different labels come first"
    conflict = {line["path"]: line for line in lines if line["issue"] == "conflict"}
    assert set(conflict) == {"Cat/100.jpg", ODD_NAME}
    assert conflict[ODD_NAME]["partner_path"] == "Cat/100.jpg"
    leak = {line["path"]: line for line in lines if line["issue"] == "leak"}
    assert set(leak) == {"Dog/1.jpg", "Dog/1-reencoded.jpg"}
    assert float(leak["Dog/1.jpg"]["score"]) > 0.999
    record = json.loads((photo_store / "audit" / "audit.json").read_text())
    assert record["counts"]["conflict"] == {"images": 2, "groups": 1}
    assert record["counts"]["leak"]["test_images_with_a_copy_in_train_or_validation"] <= 1
    copy = record["thresholds"]["copy"]
    assert copy["value"] == pytest.approx(0.5 * record["thresholds"]["median_nn_distance"]
                                          ["value"])
    head = record["head"]
    assert head["all_test"]["n"] == record["split"]["images"]["test"]
    assert head["leak_free_test"]["n"] + head["leaky_test"]["n"] == head["all_test"]["n"]
    assert head["leaky_test"]["n"] == record["counts"]["leak"][
        "test_images_with_a_copy_in_train_or_validation"]


def test_thumbnails_apply_exif_and_show_placeholders_for_moved_or_changed_files(tmp_path):
    from PIL import ImageChops

    photo = write_image(tmp_path / "rotated.jpg", size=(40, 20), fmt="JPEG",
                        exif=_orientation(6))
    digest = sha256_file(photo)

    def decode(uri: str) -> Image.Image:
        image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        image.load()
        return image

    upright = decode(thumbnails.thumbnail(tmp_path, "rotated.jpg", digest))
    assert upright.size[1] > upright.size[0], "EXIF orientation 6 shows the image portrait"
    placeholders = {
        "moved": thumbnails.thumbnail(tmp_path, "gone.jpg", digest),
        "changed": thumbnails.thumbnail(tmp_path, "rotated.jpg", "0" * 64),
        "no folder": thumbnails.thumbnail(None, "rotated.jpg", digest),
    }
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    placeholders["broken"] = thumbnails.thumbnail(tmp_path, "broken.jpg",
                                                  sha256_file(tmp_path / "broken.jpg"))
    images = {name: decode(uri) for name, uri in placeholders.items()}
    assert all(image.size == (160, 160) for image in images.values())
    assert ImageChops.difference(images["moved"].convert("RGB"),
                                 images["changed"].convert("RGB")).getbbox() is not None


def _orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def one_sentence(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].endswith("."), err
    return lines[0]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    rng = np.random.default_rng(1)
    X = np.maximum(rng.standard_normal((200, 16)), 0).astype(np.float32)
    return make_store(tmp_path_factory.mktemp("small") / "features.h5", X,
                      rng.integers(0, 2, 200), classes=["Cat", "Dog"])


@pytest.mark.parametrize("argv, expected", [
    (["--features", "nowhere.h5"], "No feature store at 'nowhere.h5'"),
    (["-k", "1"], "argument -k: must be >= 2"),
    (["--folds", "1"], "argument --folds: must be >= 2"),
    (["--split", "50/50"], "--split must be three positive numbers"),
    (["--head", "no-such-head"], "No head at 'no-such-head'"),
])
def test_bad_arguments_get_one_sentence_and_status_2(small_store, tmp_path, capsys, argv,
                                                     expected):
    if argv[0] != "--features":
        argv = ["--features", str(small_store), *argv]
    assert main([*argv, "-o", str(tmp_path / "out"), "-q"]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing is written before the arguments are checked"


def test_the_library_refuses_what_the_command_refuses(small_store):
    from headstart.audit import audit_store
    from headstart.errors import UsageError

    with pytest.raises(UsageError, match="-k must be >= 2"):
        audit_store(small_store, k=1)
    with pytest.raises(UsageError, match="--neighbours must be one of auto, exact, faiss"):
        audit_store(small_store, neighbours_method="annoy")


def test_output_path_that_is_a_file_is_refused(small_store, tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert main(["--features", str(small_store), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "is a file or a link, not a folder" in one_sentence(capsys.readouterr().err)


def test_missing_faiss_is_refused_with_the_install_command(small_store, tmp_path, capsys,
                                                           monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)
    assert main(["--features", str(small_store), "-o", str(tmp_path / "o"), "--neighbours",
                 "faiss", "-q"]) == 2
    assert 'pip install "headstart[faiss]"' in one_sentence(capsys.readouterr().err)


def test_a_head_fitted_on_other_classes_is_refused(small_store, tmp_path, capsys):
    rng = np.random.default_rng(2)
    other = make_store(tmp_path / "other.h5", rng.random((90, 16), dtype=np.float32),
                       np.arange(90) % 3)
    head = fit_head(other, model="logreg", out_dir=tmp_path / "heads", plots=False, C=1.0)
    assert main(["--features", str(small_store), "--head", str(head.out_dir), "-o",
                 str(tmp_path / "o"), "-q"]) == 2
    assert "give a head fitted on this store" in one_sentence(capsys.readouterr().err)


def test_a_sharded_store_gives_the_same_findings_as_one_file(tmp_path):
    """A store stitched from shards (a virtual dataset without chunks) is read the same."""
    from headstart.audit import audit_store
    from headstart.audit.issues import collect
    from headstart.features import Entry, PartWriter, consolidate, open_store

    rng = np.random.default_rng(4)
    X = np.maximum(rng.standard_normal((300, 16)) + 2 * (np.arange(300) % 2)[:, None], 0)
    X = X.astype(np.float32)
    X[250] = X[10]  # a copy in the second shard of a row in the first
    y = np.arange(300) % 2
    y[[5, 17, 40]] ^= 1
    classes = ["Cat", "Dog"]
    sharded = make_store(tmp_path / "sharded.h5", X[:200], y[:200], classes=classes)
    writer = PartWriter(sharded, identity=IDENTITY, classes=classes, attrs={})
    paths = [f"{classes[c]}/{i:05d}.jpg" for i, c in enumerate(y)]
    writer.add_rows(X[200:], [Entry(p, f"{i:064x}", p.split("/")[0])
                              for i, p in enumerate(paths) if i >= 200])
    writer.commit()
    consolidate(sharded, identity=IDENTITY, classes=classes, present=None,
                attrs={"complete": True, "seed": 0}, single_file_limit=0)
    with open_store(sharded) as store:
        assert store.features.is_virtual and store.features.chunks is None
    single = make_store(tmp_path / "single.h5", X, y, classes=classes)
    found = {}
    for name, path in (("sharded", sharded), ("single", single)):
        result = audit_store(path)
        found[name] = ({(result.paths[i.row], i.kind) for i in collect(result)},
                       result.thresholds.median_nn_distance)
    assert found["sharded"][0] == found["single"][0]
    copy = {kind for path, kind in found["single"][0] if path == "Cat/00250.jpg"}
    assert copy & {"leak", "duplicate"}
    assert found["sharded"][1] == pytest.approx(found["single"][1], rel=1e-6)


def test_a_float16_store_gives_the_findings_of_its_float32_twin(tmp_path):
    import dataclasses

    from headstart.audit import audit_store
    from headstart.audit.issues import collect

    rng = np.random.default_rng(5)
    X = np.maximum(rng.standard_normal((240, 32)) + 2 * (np.arange(240) % 2)[:, None], 0)
    X[100] = X[7] * 1.001
    y = np.arange(240) % 2
    y[[3, 30]] ^= 1
    half = dataclasses.replace(IDENTITY, dtype="float16")
    found = []
    for name, identity in (("full", IDENTITY), ("half", half)):
        store = make_store(tmp_path / f"{name}.h5", X.astype(np.float32), y, identity=identity)
        result = audit_store(store)
        assert result.neighbours.cosine.dtype == np.float32
        found.append({(result.paths[i.row], i.kind) for i in collect(result)})
    assert found[0] == found[1]


class MapPoints(HTMLParser):
    """The data-* attributes of every point of the page's map."""

    def __init__(self):
        super().__init__()
        self.points: list[dict] = []
        self._in_map = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg" and "map" in (attrs.get("class") or ""):
            self._in_map = True
        elif self._in_map and "data-row" in attrs:
            self.points.append(attrs)

    def handle_endtag(self, tag):
        if tag == "svg":
            self._in_map = False


def test_map_points_are_the_store_rows_with_their_label_split_and_findings(photo_store):
    page = MapPoints()
    page.feed((photo_store / "audit" / "report.html").read_text(encoding="utf-8"))
    with open_store(photo_store / "features.h5") as store:
        paths, labels, classes = store.paths, store.labels, store.classes
        split = assign_splits(store.hashes, seed=0)  # fit-head's default split
    rows = [int(p["data-row"]) for p in page.points]
    assert sorted(rows) == list(range(len(paths))), "a small store: every row, once"
    with open(photo_store / "audit" / "issues.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    kinds: dict[str, set[str]] = {}
    for line in lines:
        kinds.setdefault(line["path"], set()).add(line["issue"])
    for point in page.points:
        row = int(point["data-row"])
        assert point["data-label"] == classes[labels[row]]
        assert point["data-split"] == SPLITS[split[row]]
        assert set(point["data-finding"].split()) == kinds.get(paths[row], set())
    marked = {paths[int(p["data-row"])] for p in page.points if p["data-finding"]}
    assert marked == set(kinds) and {"conflict", "leak"} <= set().union(*kinds.values())
