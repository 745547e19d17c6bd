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
known system files and hidden folders are passed over silently.

Links: a directory link is followed unless its target is the dataset root, an ancestor
of the link, inside another class folder (it would relabel those images), or, in the
layouts without class folders, somewhere the scan reaches anyway (it would duplicate
them). File links are labelled by where the link sits; a dangling one is catalogued and
then skipped as unreadable.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from headstart.errors import FolderError, LabelsError, UsageError
from headstart.extract.formats import image_extensions, is_image_name, left_out_kind
from headstart.words import count

SPLIT_NAMES = {"train": "train", "training": "train", "val": "validation",
               "valid": "validation", "validation": "validation", "dev": "validation",
               "test": "test", "testing": "test"}
FILE_COLUMNS = ("file", "filename", "file_name", "path", "filepath", "image", "image_id",
                "img", "id", "name")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "breed", "target", "species", "y")
LISTED = 5  # names listed in a message before "and N more"


@dataclass(frozen=True)
class LabelSpec:
    """Where labels come from; the default is folders (class folders or pre-split folders)."""

    csv: str | None = None  # --labels CSV
    file_column: str | None = None  # --file-column NAME (default: detected)
    label_column: str | None = None  # --label-column NAME (default: detected)
    regex: str | None = None  # --labels-from-name REGEX
    unlabelled: bool = False  # --unlabelled

    def check(self) -> None:
        """Raise UsageError for conflicting or malformed options, before any work."""
        chosen = [flag for flag, on in (("--labels", self.csv), ("--labels-from-name", self.regex),
                                        ("--unlabelled", self.unlabelled)) if on]
        if len(chosen) > 1:
            raise UsageError(f"Choose one label source, not {' and '.join(chosen)}.")
        if (self.file_column or self.label_column) and not self.csv:
            raise UsageError("--file-column and --label-column go with --labels CSV.")
        if self.csv and not Path(self.csv).is_file():
            raise UsageError(f"Label file '{self.csv}' does not exist; pass the path of a CSV "
                             "file with a file column and a label column.")
        if self.regex is not None:
            try:
                pattern = re.compile(self.regex)
            except re.error as error:
                raise UsageError(f"--labels-from-name {self.regex!r} is not a valid regular "
                                 f"expression ({error}).") from None
            if pattern.groups < 1:
                raise UsageError(f"--labels-from-name {self.regex!r} has no group; put the class "
                                 r"in parentheses, e.g. '^(cat|dog)\.'.")


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

    @property
    def labelled(self) -> bool:
        return self.label_source != "none"

    @property
    def given_splits(self) -> bool:
        return self.splits is not None

    def class_of(self, relative: str) -> str | None:
        return self.labels.get(relative)


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
    if spec.csv:
        return _with_csv_labels(root, spec)
    if spec.regex is not None:
        return _with_name_labels(root, spec.regex)
    if spec.unlabelled:
        walk = _Walk(root)
        walk.tree(Path("."), flat=True)
        files = sorted(walk.found)
        return Catalog(root, files, dict.fromkeys(files), [], "none", None, walk.stats,
                       walk.ignored, walk.left_out)
    return _from_folders(root)


def find_images(inputs) -> list[Path]:
    """Files as given, plus the images found recursively (sorted) in any folders given."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p.name)
                            and not any(part.startswith(".") for part in
                                        p.relative_to(item).parts))
        else:
            found.append(item)
    return found


# ---- walking ----------------------------------------------------------------------------

class _Walk:
    """A recursive scan that follows links only where they cannot relabel or duplicate."""

    def __init__(self, root: Path, units: list[Path] | None = None):
        self.root = root
        self.real_root = Path(os.path.realpath(root))
        self.units = units or []  # real paths of class folders (layouts that label by folder)
        self.found: list[str] = []
        self.stats: dict[str, tuple[int, int]] = {}
        self.ignored: list[tuple[str, str]] = []
        self.left_out: Counter = Counter()
        self.top_level_images: list[str] = []

    def tree(self, start: Path, *, flat: bool = False, unit: Path | None = None) -> list[str]:
        """Images under root/start (relative paths); files at root level only when `flat`."""
        before = len(self.found)
        seen: set[tuple[int, int]] = set()
        self._directory(self.root / start, seen, flat=flat, unit=unit)
        return self.found[before:]

    def _directory(self, directory: Path, seen: set, *, flat: bool, unit: Path | None) -> None:
        try:
            info = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            self.ignored.append((self._relative(directory) + "/",
                                 f"cannot read folder ({error.strerror}), not scanned"))
            return
        key = (info.st_dev, info.st_ino)
        if key in seen:
            self.ignored.append((self._relative(directory) + "/", "not followed: symlink loop"))
            return
        seen.add(key)
        for entry in entries:
            relative = self._relative(entry.path)
            if not _valid_utf8(entry.name):
                self.ignored.append((_printable(relative),
                                     "name is not valid UTF-8; rename it"))
                continue
            if entry.is_dir():  # follows links
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    why = self._refuse_link(Path(entry.path), unit=unit, flat=flat)
                    if why:
                        self.ignored.append((relative + "/", why))
                        continue
                self._directory(Path(entry.path), seen, flat=flat, unit=unit)
            elif is_image_name(entry.name):
                if directory == self.root and not flat:
                    self.top_level_images.append(relative)
                    continue
                self.found.append(relative)
                self.stats[relative] = _stat(entry)
            elif kind := left_out_kind(entry.name):
                self.left_out[kind] += 1

    def _refuse_link(self, link: Path, *, unit: Path | None, flat: bool) -> str | None:
        """Why a directory link must not be followed, or None to follow it."""
        target = Path(os.path.realpath(link))
        shown = os.path.relpath(target, self.real_root)
        inside_root = _within(target, self.real_root)
        shown = shown if inside_root else str(target)
        if target == self.real_root:
            return "not followed: leads to the dataset root"
        real_parent = Path(os.path.realpath(link.parent))
        if _within(real_parent, target):
            return f"not followed: symlink loop, leads to '{shown}', which contains the link"
        for other in self.units:
            if other != unit and _within(target, other):
                return (f"not followed: leads to '{shown}', inside another class folder "
                        "(its images would get this folder's label)")
        if flat and inside_root and not any(part.startswith(".") for part in
                                             target.relative_to(self.real_root).parts):
            return f"not followed: leads to '{shown}', which is scanned anyway"
        return None

    def _relative(self, path: str | Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    try:
        info = entry.stat()
        return info.st_size, info.st_mtime_ns
    except OSError:  # a dangling link: catalogued, then skipped as unreadable
        return -1, -1


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _listed(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:LISTED])
    return shown + (f" and {len(names) - LISTED:,} more" if len(names) > LISTED else "")


def _subfolders(folder: Path) -> list[os.DirEntry]:
    try:
        return sorted((e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
                      key=lambda e: e.name)
    except OSError as error:
        raise FolderError(f"Cannot read folder '{folder}' ({error.strerror}).") from None


# ---- class folders and pre-split folders ------------------------------------------------

def _from_folders(root: Path) -> Catalog:
    top = _subfolders(root)
    splits = [e for e in top if e.name.lower() in SPLIT_NAMES]
    notices: list[str] = []
    if splits:
        problem = _presplit_problem(root, top, splits)
        if problem is None:
            return _from_split_folders(root, splits)
        notices.append(problem)
    walk = _Walk(root, units=[Path(os.path.realpath(e.path)) for e in top])
    classes, labels = [], {}
    for entry in top:
        if not _valid_utf8(entry.name):
            walk.ignored.append((_printable(entry.name) + "/",
                                 "folder name is not valid UTF-8; rename it"))
            continue
        found = walk.tree(Path(entry.name), unit=Path(os.path.realpath(entry.path)))
        if found:
            classes.append(entry.name)
            labels.update(dict.fromkeys(found, entry.name))
        else:
            walk.ignored.append((entry.name + "/", "class folder holds no images"))
    _top_files(root, walk)
    for path in walk.top_level_images:
        walk.ignored.append((path, "image at the top level, not in a class folder"))
    if not classes:
        raise FolderError(_no_images_message(root, walk.top_level_images))
    notices += _nfc_clashes(classes)
    files = sorted(labels)
    return Catalog(root, files, labels, classes, "folders", None, walk.stats, walk.ignored,
                   walk.left_out, notices)


def _top_files(root: Path, walk: _Walk) -> None:
    """Files directly in DIR: images are reported (not in a class), others counted."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            continue
        if is_image_name(entry.name):
            walk.top_level_images.append(entry.name)
        elif kind := left_out_kind(entry.name):
            walk.left_out[kind] += 1


def _no_images_message(root: Path, top_level: list[str]) -> str:
    if top_level:
        return (
            f"No images found inside sub-folders of '{root}', but {len(top_level):,} images sit "
            f"at its top level ({_listed(top_level)}); put each class in its own sub-folder "
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


def _presplit_problem(root: Path, top: list[os.DirEntry], splits: list[os.DirEntry]) -> str | None:
    """Why split-named folders do not form a pre-split layout (None when they do)."""
    names = ", ".join(f"{e.name}/" for e in splits)
    for entry in splits:
        direct = [e.name for e in os.scandir(entry.path) if e.is_file() and is_image_name(e.name)]
        if direct or not _subfolders(Path(entry.path)):
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
    units = [Path(os.path.realpath(c.path)) for s in splits for c in _subfolders(Path(s.path))]
    walk = _Walk(root, units=units)
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
        for folder in _subfolders(Path(entry.path)):
            found = walk.tree(Path(entry.name) / folder.name,
                              unit=Path(os.path.realpath(folder.path)))
            if not found:
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
    _top_files(root, walk)
    for path in walk.top_level_images:
        walk.ignored.append((path, "image at the top level, not in a split folder"))
    classes = sorted(set().union(*per_split.values())) if per_split else []
    if not classes:
        raise FolderError(_no_images_message(root, walk.top_level_images))
    for split, present in sorted(per_split.items()):
        missing = [c for c in classes if c not in present]
        if missing:
            notices.append(f"class {_listed(missing)} has no images in the {split} split "
                           f"('{seen_split[split]}/')")
    notices += _nfc_clashes(classes)
    files = sorted(labels)
    return Catalog(root, files, labels, classes, "split folders", given, walk.stats,
                   walk.ignored, walk.left_out, notices)


# ---- labels from a CSV file or from file names ------------------------------------------

def _flat(root: Path) -> _Walk:
    walk = _Walk(root)
    walk.tree(Path("."), flat=True)
    return walk


def _with_name_labels(root: Path, regex: str) -> Catalog:
    pattern = re.compile(regex)
    walk = _flat(root)
    labels, unmatched = {}, []
    for path in walk.found:
        match = pattern.search(path.rsplit("/", 1)[-1])
        if match and match.group(1):
            labels[path] = match.group(1)
        else:
            unmatched.append(path)
    notices = []
    if unmatched:
        notices.append(f"left out {count(len(unmatched), 'image')} whose name "
                       f"--labels-from-name {regex!r} does not match: {_listed(unmatched)}")
    if not labels:
        raise LabelsError(
            f"--labels-from-name {regex!r} matches none of the {len(walk.found):,} image names "
            f"in '{root}' (e.g. {_listed(walk.found)}); the class must be the first group, as in "
            r"'^(cat|dog)\.' for cat.0.jpg."
        )
    files = sorted(labels)
    return Catalog(root, files, labels, sorted(set(labels.values())), f"file names: {regex}",
                   None, {p: walk.stats[p] for p in files}, walk.ignored, walk.left_out, notices)


def _with_csv_labels(root: Path, spec: LabelSpec) -> Catalog:
    raw = Path(spec.csv).read_bytes()
    rows, file_col, label_col = _read_label_csv(raw, spec)
    walk = _flat(root)
    by_path = {p: p for p in walk.found}
    by_name: dict[str, list[str]] = {}
    by_stem: dict[str, list[str]] = {}
    for path in walk.found:
        name = path.rsplit("/", 1)[-1]
        by_name.setdefault(name, []).append(path)
        by_stem.setdefault(os.path.splitext(name)[0], []).append(path)
    labels: dict[str, str] = {}
    missing, ambiguous, conflicting = [], [], []
    for key, label in rows:
        key = key.strip().replace("\\", "/").lstrip("./") if key.strip() else key
        matches = ([by_path[key]] if key in by_path else by_name.get(key)
                   or by_stem.get(key) or [])
        if not matches:
            missing.append(key)
        elif len(matches) > 1:
            ambiguous.append(key)
        elif labels.get(matches[0], label) != label:
            conflicting.append(key)
        else:
            labels[matches[0]] = label
    unlabelled = [p for p in walk.found if p not in labels]
    name = Path(spec.csv).name
    notices = [f"{what}: {_listed(names)}" for names, what in (
        (unlabelled, f"left out {count(len(unlabelled), 'image')} without a row in '{name}'"),
        (missing, f"{count(len(missing), 'row')} of '{name}' without a file under '{root}'"),
        (ambiguous, f"{count(len(ambiguous), 'row')} of '{name}' matching several files "
                    "(give paths relative to the folder instead)"),
        (conflicting, f"{count(len(conflicting), 'file')} with two different labels in "
                      f"'{name}' (the first is used)"),
    ) if names]
    if not labels:
        raise LabelsError(
            f"No image under '{root}' has a label in '{spec.csv}' (column '{file_col}' holds "
            f"e.g. {_listed([k for k, _ in rows][:3])}; images are e.g. {_listed(walk.found[:3])});"
            " name the columns with --file-column and --label-column, or check the folder."
        )
    digest = hashlib.sha256(raw).hexdigest()
    source = (f"csv {name} (file column '{file_col}', label column '{label_col}') "
              f"sha256:{digest}")
    files = sorted(labels)
    return Catalog(root, files, labels, sorted(set(labels.values())), source, None,
                   {p: walk.stats[p] for p in files}, walk.ignored, walk.left_out, notices)


def _read_label_csv(raw: bytes, spec: LabelSpec) -> tuple[list[tuple[str, str]], str, str]:
    """(file, label) rows, and the names of the two columns used; detects a header row."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelsError(f"'{spec.csv}' is not UTF-8 text; save it as a UTF-8 CSV.") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    table = [row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    if not table or max(len(r) for r in table) < 2:
        raise LabelsError(f"'{spec.csv}' needs at least two columns (file, label); "
                          f"found {max((len(r) for r in table), default=0)}.")
    first = [c.strip() for c in table[0]]
    lowered = [c.lower() for c in first]
    header = (spec.file_column in first or spec.label_column in first
              or any(c in FILE_COLUMNS or c in LABEL_COLUMNS for c in lowered))
    if not header and (spec.file_column or spec.label_column):
        raise LabelsError(f"'{spec.csv}' has no header row naming the columns "
                          f"{spec.file_column or spec.label_column!r}; its first row is {first}.")
    if header:
        file_i = _column(first, spec.file_column, FILE_COLUMNS, 0, spec.csv)
        label_i = _column(first, spec.label_column, LABEL_COLUMNS,
                          1 if file_i != 1 else 0, spec.csv)
        names = (first[file_i], first[label_i])
        body = table[1:]
    else:
        file_i, label_i, names, body = 0, 1, ("column 1", "column 2"), table
    rows = [(r[file_i], r[label_i].strip()) for r in body
            if len(r) > max(file_i, label_i) and r[label_i].strip()]
    return rows, names[0], names[1]


def _column(header: list[str], wanted: str | None, known: tuple[str, ...], fallback: int,
            source: str) -> int:
    if wanted is not None:
        if wanted not in header:
            raise LabelsError(f"'{source}' has no column '{wanted}'; its columns are {header}.")
        return header.index(wanted)
    lowered = [c.lower() for c in header]
    for name in known:
        if name in lowered:
            return lowered.index(name)
    return fallback
