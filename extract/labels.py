"""Label sources other than folders: a CSV file, a regular expression on file names.

`LabelSpec` holds the label options of `extract-features` and checks them before any
work. The readers return each image's label, the label source the store records (the
CSV's name, columns and sha256, or the pattern), and notices naming what was left out.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from headstart import spreadsheet
from headstart.errors import LabelsError, UsageError
from headstart.extract.walk import Walk, listed
from headstart.words import count

FILE_COLUMNS = ("file", "filename", "file_name", "path", "filepath", "image", "image_id",
                "img", "id", "name")
LABEL_COLUMNS = ("label", "class", "class_name", "category", "breed", "target", "species", "y")


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


def name_labels(root: Path, regex: str, walk: Walk) -> tuple[dict[str, str], str, list[str]]:
    """(labels, label source, notices): each image's class is the regex's first group."""
    pattern = re.compile(regex)
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
                       f"--labels-from-name {regex!r} does not match: {listed(unmatched)}")
    if not labels:
        raise LabelsError(
            f"--labels-from-name {regex!r} matches none of the {len(walk.found):,} image names "
            f"in '{root}' (e.g. {listed(walk.found)}); the class must be the first group, as in "
            r"'^(cat|dog)\.' for cat.0.jpg."
        )
    return labels, f"file names: {regex}", notices


def csv_labels(root: Path, spec: LabelSpec, walk: Walk) -> tuple[dict[str, str], str,
                                                                list[str]]:
    """(labels, label source, notices) from the CSV file of `spec`; see the README."""
    raw = Path(spec.csv).read_bytes()
    rows, file_col, label_col = _read_label_csv(raw, spec)
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
    notices = [f"{what}: {listed(names)}" for names, what in (
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
            f"e.g. {listed([k for k, _ in rows][:3])}; images are e.g. {listed(walk.found[:3])});"
            " name the columns with --file-column and --label-column, or check the folder."
        )
    digest = hashlib.sha256(raw).hexdigest()
    source = (f"csv {name} (file column '{file_col}', label column '{label_col}') "
              f"sha256:{digest}")
    return labels, source, notices


def _read_label_csv(raw: bytes, spec: LabelSpec) -> tuple[list[tuple[str, str]], str, str]:
    """(file, label) rows, and the names of the two columns used; detects a header row."""
    try:
        text = spreadsheet.decoded(raw)
    except UnicodeDecodeError:
        raise LabelsError(f"'{spec.csv}' is not UTF-8 text; save it as a UTF-8 CSV.") from None
    table = spreadsheet.table(text)
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
