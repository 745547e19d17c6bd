"""Walking an image folder: which files are images, which links to follow, what to count.

Links: a directory link is followed unless its target is the dataset root, an ancestor
of the link, inside another class folder (it would relabel those images), or, in the
layouts without class folders, somewhere the scan reaches anyway (it would duplicate
them). File links are labelled by where the link sits; a dangling one is catalogued and
then skipped as unreadable. Names that are not valid UTF-8 are reported, never stored.
"""

from __future__ import annotations

import os
from collections import Counter
from operator import attrgetter
from pathlib import Path

from headstart.errors import FolderError
from headstart.extract.formats import is_image_name, left_out_kind

LISTED = 5  # names listed in a message before "and N more"


class Walk:
    """A recursive scan that follows links only where they cannot relabel or duplicate."""

    def __init__(self, root: Path, units: list[Path] | None = None):
        self.root = root
        self.real_root = Path(os.path.realpath(root))
        self.units = units or []  # real paths of class folders (layouts that label by folder)
        self.found: list[str] = []
        self.stats: dict[str, tuple[int, int]] = {}
        self.ignored: list[tuple[str, str]] = []
        # folders that could not be read now ("Dog/", "Dog/sub/"): what the store holds
        # under them is kept, not taken for deleted
        self.unreadable: list[str] = []
        self.left_out: Counter = Counter()
        self.top_level_images: list[str] = []

    def tree(self, start: Path, *, flat: bool = False, unit: Path | None = None) -> list[str]:
        """Images under root/start (relative paths); files at root level only when `flat`."""
        before = len(self.found)
        seen: set[tuple[int, int]] = set()
        self._directory(self.root / start, seen, flat=flat, unit=unit,
                        prefix=self._prefix(self.root / start))
        return self.found[before:]

    def _directory(self, directory: Path, seen: set, *, flat: bool, unit: Path | None,
                   prefix: str) -> None:
        """prefix: the relative path of `directory` plus "/" ("" for the root), so that an
        entry's relative path is one concatenation (relpath per file was most of a no-op
        re-run's time on 100,000 files)."""
        try:
            info = os.stat(directory)
            entries = sorted(os.scandir(directory), key=attrgetter("name"))
        except OSError as error:
            self.unreadable_folder(self._relative(directory) + "/",
                                   f"cannot read folder ({error.strerror}), not scanned")
            return
        key = (info.st_dev, info.st_ino)
        if key in seen:
            self.ignored.append((self._relative(directory) + "/", "not followed: symlink loop"))
            return
        seen.add(key)
        at_root = directory == self.root and not flat
        found, stats = self.found, self.stats
        for entry in entries:  # once per file of the folder: kept lean
            name = entry.name
            relative = prefix + name
            if not name.isascii() and not valid_utf8(name):
                self.ignored.append((printable(relative), "name is not valid UTF-8; rename it"))
                continue
            if entry.is_dir():  # follows links
                if name.startswith("."):
                    continue
                if entry.is_symlink():
                    why = self._refuse_link(Path(entry.path), unit=unit, flat=flat)
                    if why:
                        self.ignored.append((relative + "/", why))
                        continue
                self._directory(Path(entry.path), seen, flat=flat, unit=unit,
                                prefix=relative + "/")
            elif unreachable_link(entry):
                self.unreadable_folder(relative + "/", UNREACHABLE)
            elif is_image_name(name):
                if at_root:
                    self.top_level_images.append(relative)
                    continue
                found.append(relative)
                stats[relative] = stat_of(entry)
            elif kind := left_out_kind(name):
                self.left_out[kind] += 1

    def unreadable_folder(self, relative: str, why: str) -> None:
        """Report a folder that cannot be read now; its stored rows are kept."""
        self.ignored.append((relative, why))
        self.unreadable.append(relative)

    def _refuse_link(self, link: Path, *, unit: Path | None, flat: bool) -> str | None:
        """Why a directory link must not be followed, or None to follow it."""
        target = Path(os.path.realpath(link))
        shown = os.path.relpath(target, self.real_root)
        inside_root = within(target, self.real_root)
        shown = shown if inside_root else str(target)
        if target == self.real_root:
            return "not followed: leads to the dataset root"
        real_parent = Path(os.path.realpath(link.parent))
        if within(real_parent, target):
            return f"not followed: symlink loop, leads to '{shown}', which contains the link"
        for other in self.units:
            if other != unit and within(target, other):
                return (f"not followed: leads to '{shown}', inside another class folder "
                        "(its images would get this folder's label)")
        if flat and inside_root and not any(part.startswith(".") for part in
                                             target.relative_to(self.real_root).parts):
            return f"not followed: leads to '{shown}', which is scanned anyway"
        return None

    def _relative(self, path: str | Path) -> str:
        return Path(os.path.relpath(path, self.root)).as_posix()

    def _prefix(self, directory: Path) -> str:
        relative = self._relative(directory)
        return "" if relative == "." else relative + "/"


UNREACHABLE = "link to a folder that cannot be reached now (not mounted?), not scanned"


def unreachable_link(entry: os.DirEntry) -> bool:
    """A link that leads nowhere now and is not named like an image: a folder on a disk
    that is not mounted (os.scandir's is_dir() is False for it), whose stored rows stay."""
    return (entry.is_symlink() and not is_image_name(entry.name)
            and not os.path.exists(entry.path))


def stat_of(entry: os.DirEntry) -> tuple[int, int]:
    try:
        info = entry.stat()
        return info.st_size, info.st_mtime_ns
    except OSError:  # a dangling link: catalogued, then skipped as unreadable
        return -1, -1


def within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def listed(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:LISTED])
    return shown + (f" and {len(names) - LISTED:,} more" if len(names) > LISTED else "")


def subfolders(folder: Path) -> list[os.DirEntry]:
    try:
        return sorted((e for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")),
                      key=lambda e: e.name)
    except OSError as error:
        raise FolderError(f"Cannot read folder '{folder}' ({error.strerror}).") from None


def top_files(root: Path, walk: Walk) -> None:
    """Files directly in DIR: images are reported (not in a class), others counted."""
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() or unreachable_link(entry):  # the latter reported as unreadable
            continue
        if is_image_name(entry.name):
            walk.top_level_images.append(entry.name)
        elif kind := left_out_kind(entry.name):
            walk.left_out[kind] += 1


def flat_walk(root: Path) -> Walk:
    """Every image under `root`, at any depth (the layouts without class folders)."""
    walk = Walk(root)
    walk.tree(Path("."), flat=True)
    return walk
