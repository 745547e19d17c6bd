"""From a folder to a catalog: every image with its label and given split, and what was left out.

Layouts (`LabelSpec` chooses; the default detects the first two):

* class folders      DIR/<class>/**/<image>
* pre-split folders  DIR/<split>/<class>/**/<image>, split names (any case) train/training,
                     val/valid/validation/dev, test/testing; each row records its split
* --labels CSV       images anywhere under DIR, labels from a CSV file (file, label)
* --labels-from-name images anywhere under DIR, label = first group of a regex on the name
* --unlabelled       images anywhere under DIR, no labels (for predict --features)

Every file below DIR ends as a catalogued image (later stored, or skipped with a reason),
as an entry reported once (`ignored`: links not followed, names that are not UTF-8,
empty class folders, stray images), or as a non-image counted by kind (`left_out`); only
known system files and hidden folders are passed over silently. How links are treated:
`headstart.extract.walk`; CSV and file-name labels: `headstart.extract.labels`.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from headstart.bulk import paused_gc
from headstart.errors import FolderError
from headstart.extract.formats import image_extensions, is_image_name, left_out_kind
from headstart.extract.labels import LabelSpec, csv_labels, name_labels
from headstart.extract.walk import (
    UNREACHABLE,
    Walk,
    flat_walk,
    listed,
    printable,
    subfolders,
    top_files,
    unreachable_link,
    valid_utf8,
)

SPLIT_NAMES = {"train": "train", "training": "train", "val": "validation",
               "valid": "validation", "validation": "validation", "dev": "validation",
               "test": "test", "testing": "test"}


@dataclass
class Catalog:
    """The images of a folder, each with its label (class name) and the split its folder gave.

    files: sorted relative paths ('/'-separated); labels / splits / stats: keyed by path.
    label_source: recorded in the store ("folders", "split folders", "csv ...",
    "file names ...", "none"); another one is refused when the store is extended.
    """

    root: Path
    files: list[str]
    labels: dict[str, str | None]
    classes: list[str]
    label_source: str
    splits: dict[str, str] | None = None
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # (size, mtime_ns)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why), reported once
    left_out: Counter = field(default_factory=Counter)  # non-image files by kind
    notices: list[str] = field(default_factory=list)  # warnings about the layout or labels
    unreadable: list[str] = field(default_factory=list)  # folders not readable now: "Dog/"

    @property
    def labelled(self) -> bool:
        return self.label_source != "none"

    @property
    def given_splits(self) -> bool:
        return self.splits is not None

    def class_of(self, relative: str) -> str | None:
        return self.labels.get(relative)


@paused_gc
def scan(root: str | Path, spec: LabelSpec | None = None) -> Catalog:
    """Catalog the images under `root` with labels from `spec` (default: folders).

    Raises FolderError for a missing or unusable folder, LabelsError when the label source
    labels no image, UsageError for malformed options.
    """
    spec = spec or LabelSpec()
    spec.check()
    root = Path(root)
    if not root.exists():
        raise FolderError(f"Image folder '{root}' does not exist.")
    if not root.is_dir():
        raise FolderError(f"'{root}' is a file; pass a folder with one sub-folder per class.")
    if spec.csv or spec.regex is not None or spec.unlabelled:
        walk = flat_walk(root)
        if spec.unlabelled:
            labels, source, notices = dict.fromkeys(walk.found), "none", []
        elif spec.csv:
            labels, source, notices = csv_labels(root, spec, walk)
        else:
            labels, source, notices = name_labels(root, spec.regex, walk)
        files = sorted(labels)
        classes = sorted({c for c in labels.values() if c is not None})
        return Catalog(root, files, labels, classes, source, None,
                       {p: walk.stats[p] for p in files}, walk.ignored, walk.left_out, notices,
                       walk.unreadable)
    return _from_folders(root)


def find_images(inputs, left_out: Counter | None = None) -> list[Path]:
    """Files as given, plus the images found recursively (sorted) in any folders given.

    left_out: counts, by kind ('.txt', 'hidden', ...; formats.left_out_kind), the files
    in those folders that are not images, as extract-features reports them.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            found.append(item)
            continue
        for path in sorted(p for p in item.rglob("*") if p.is_file()):
            hidden = any(part.startswith(".") for part in path.relative_to(item).parts)
            if is_image_name(path.name) and not hidden:
                found.append(path)
            elif left_out is not None and (kind := left_out_kind(path.name)):
                left_out["hidden" if hidden else kind] += 1
    return found


# ---- class folders and pre-split folders ---------------------------------------------------

def _from_folders(root: Path) -> Catalog:
    top = subfolders(root)
    splits = [e for e in top if e.name.lower() in SPLIT_NAMES]
    notices: list[str] = []
    if splits:
        problem = _presplit_problem(root, top, splits)
        if problem is None:
            return _from_split_folders(root, splits)
        notices.append(problem)
    walk = Walk(root, units=[Path(os.path.realpath(e.path)) for e in top])
    classes, labels = [], {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):  # class folders not mounted
        if unreachable_link(entry) and not entry.name.startswith("."):
            walk.unreadable_folder(entry.name + "/", UNREACHABLE)
    for entry in top:
        if not valid_utf8(entry.name):
            walk.ignored.append((printable(entry.name) + "/",
                                 "folder name is not valid UTF-8; rename it"))
            continue
        found = walk.tree(Path(entry.name), unit=Path(os.path.realpath(entry.path)))
        if found:
            classes.append(entry.name)
            labels.update(dict.fromkeys(found, entry.name))
        elif entry.name + "/" not in walk.unreadable:
            walk.ignored.append((entry.name + "/", "class folder holds no images"))
    top_files(root, walk)
    for path in walk.top_level_images:
        walk.ignored.append((path, "image at the top level, not in a class folder"))
    if not classes:
        raise FolderError(_no_images_message(root, walk.top_level_images))
    notices += _nfc_clashes(classes) + _case_twins(classes)
    files = sorted(labels)
    return Catalog(root, files, labels, classes, "folders", None, walk.stats, walk.ignored,
                   walk.left_out, notices, walk.unreadable)


def _no_images_message(root: Path, top_level: list[str]) -> str:
    if top_level:
        return (
            f"No images found inside sub-folders of '{root}', but {len(top_level):,} images sit "
            f"at its top level ({listed(top_level)}); put each class in its own sub-folder "
            f"({root}/Cat, {root}/Dog), or label them with --labels CSV or --labels-from-name "
            "REGEX, or store them with --unlabelled."
        )
    extensions = ", ".join(sorted(image_extensions())[:12])
    return (
        f"No images found in '{root}' (looked for {extensions}, ... inside sub-folders). "
        "Expected one sub-folder per class, e.g. PetImages/Cat, PetImages/Dog."
    )


def _nfc_clashes(classes: list[str]) -> list[str]:
    """Warn about class names that differ only in Unicode normalisation (macOS vs Linux)."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(unicodedata.normalize("NFC", name), []).append(name)
    return [
        f"class folders {' and '.join(ascii(n) for n in names)} print the same ('{names[0]}') "
        "but are spelt with different Unicode code points (NFC vs NFD, e.g. typed on macOS "
        "and on Linux); they are stored as separate classes: rename one to merge them"
        for names in groups.values() if len(names) > 1
    ]


def _case_twins(classes: list[str]) -> list[str]:
    """Warn about class names that differ only in case ('Cat', 'cat', 'CAT'): on a
    case-sensitive file system they are separate folders, and separate classes."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(unicodedata.normalize("NFC", name).casefold(), []).append(name)
    twins = [names for names in groups.values()
             if len({unicodedata.normalize("NFC", n) for n in names}) > 1]
    return [
        f"class folders {', '.join(repr(printable(n)) for n in names[:-1])} and "
        f"{printable(names[-1])!r} differ only in case; they are stored as "
        f"{len(names)} separate classes: rename them to one spelling to merge them"
        for names in twins
    ]


def _presplit_problem(root: Path, top: list[os.DirEntry], splits: list[os.DirEntry]) -> str | None:
    """Why split-named folders do not form a pre-split layout (None when they do)."""
    names = ", ".join(f"{e.name}/" for e in splits)
    for entry in splits:
        direct = [e.name for e in os.scandir(entry.path) if e.is_file() and is_image_name(e.name)]
        if direct or not subfolders(Path(entry.path)):
            found = f"{len(direct):,} images directly inside" if direct else "no class folders"
            return (
                f"'{root}' has split folders ({names}) but '{entry.name}/' holds {found}, not "
                f"class folders, so each top folder is taken as a class. For flat folders "
                f"like Kaggle's dogs-vs-cats run `extract-features {root / entry.name} "
                rf"--labels-from-name '^(cat|dog)\.'` (or --labels CSV), or --unlabelled "
                "for a folder to predict."
            )
    others = [e.name for e in top if e.name.lower() not in SPLIT_NAMES]
    if others:
        return (f"'{root}' mixes split folders ({names}) with other folders "
                f"({', '.join(o + '/' for o in others)}); each is taken as a class. For a "
                f"pre-split layout keep only {names} at the top, each holding class folders.")
    return None


def _from_split_folders(root: Path, splits: list[os.DirEntry]) -> Catalog:
    units = [Path(os.path.realpath(c.path)) for s in splits for c in subfolders(Path(s.path))]
    walk = Walk(root, units=units)
    labels, given = {}, {}
    per_split: dict[str, set[str]] = {}
    seen_split: dict[str, str] = {}
    notices = []
    for entry in splits:
        split = SPLIT_NAMES[entry.name.lower()]
        if split in seen_split:
            notices.append(f"'{seen_split[split]}/' and '{entry.name}/' both give the "
                           f"{split} split; their images are combined")
        seen_split[split] = entry.name
        for folder in subfolders(Path(entry.path)):
            found = walk.tree(Path(entry.name) / folder.name,
                              unit=Path(os.path.realpath(folder.path)))
            if not found:
                if f"{entry.name}/{folder.name}/" not in walk.unreadable:
                    walk.ignored.append((f"{entry.name}/{folder.name}/",
                                         "class folder holds no images"))
                continue
            per_split.setdefault(split, set()).add(folder.name)
            labels.update(dict.fromkeys(found, folder.name))
            given.update(dict.fromkeys(found, split))
        for file in os.scandir(entry.path):
            if file.is_file() and is_image_name(file.name):
                walk.ignored.append((f"{entry.name}/{file.name}",
                                     "image directly in a split folder, not in a class folder"))
    top_files(root, walk)
    for path in walk.top_level_images:
        walk.ignored.append((path, "image at the top level, not in a split folder"))
    classes = sorted(set().union(*per_split.values())) if per_split else []
    if not classes:
        raise FolderError(_no_images_message(root, walk.top_level_images))
    for split, present in sorted(per_split.items()):
        missing = [c for c in classes if c not in present]
        if missing:
            notices.append(f"class {listed(missing)} has no images in the {split} split "
                           f"('{seen_split[split]}/')")
    notices += _nfc_clashes(classes) + _case_twins(classes)
    files = sorted(labels)
    return Catalog(root, files, labels, classes, "split folders", given, walk.stats,
                   walk.ignored, walk.left_out, notices, walk.unreadable)
