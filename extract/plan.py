"""What an extraction run must do, decided from the catalog and the store's records alone.

Pure, apart from hashing the few files it must (injected as `hash_files`). A stored
file counts as unchanged when its size and modification time equal the recorded ones,
the first check git and rsync make; only files whose stat differs (or that were stored
without one) are hashed, and `verify=True` hashes every file. A file whose stat changed
but whose bytes did not keeps its row and gets the new stat recorded (`refresh`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from headstart.bulk import paused_gc
from headstart.extract import formats
from headstart.extract.catalog import Catalog
from headstart.features.journal import Entry, Record


@dataclass
class Work:
    """The outcome of planning one run."""

    todo: list[Entry]  # images to read, decode and embed, sorted by path (sha256 not yet known)
    present: dict[str, str]  # path -> sha256 of catalogued files already stored unchanged
    refresh: dict[str, Entry] = field(default_factory=dict)  # unchanged rows, newer stat/label
    gone: list[str] = field(default_factory=list)  # stored paths no longer in the catalog
    changed: list[str] = field(default_factory=list)  # stored paths whose bytes changed
    hashed: int = 0  # files hashed to decide
    # stored paths kept although they cannot be read now (a folder without permission, a
    # link to a disk not mounted, a file that vanished mid-scan): not taken for deleted
    unreadable: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.todo or self.gone or self.refresh)

    @property
    def drop(self) -> list[str]:
        """Stored paths whose rows must go: files deleted or changed since."""
        return sorted(self.gone + self.changed)


def catalog_entry(catalog: Catalog, path: str) -> Entry:
    """What the catalog knows of `path` (its sha256 is learnt when the file is read)."""
    size, mtime = catalog.stats.get(path, (-1, -1))
    split = catalog.splits.get(path, "") if catalog.splits else ""
    return Entry(path, "", catalog.labels.get(path), split, size, mtime)


def _retry(record: Record) -> bool:
    """Skipped files worth another try although unchanged: a decoder installed since."""
    return (record.row is None and record.reason == formats.HEIF_MISSING
            and formats.HEIF_AVAILABLE)


@paused_gc
def plan_work(catalog: Catalog, records: dict[str, Record], *,
              hash_files: Callable[[Sequence[str]], dict[str, str]],
              verify: bool = False) -> Work:
    """Compare the catalog with the store's records; see the module docstring."""
    todo, present, refresh, to_hash = [], {}, {}, []
    # Once per file of the folder: look up what is compared, build an Entry only if needed.
    stats, labels, splits = catalog.stats, catalog.labels, catalog.splits or {}
    for path in catalog.files:
        record = records.get(path)
        if record is None or (record.row is None and _retry(record)):
            todo.append(catalog_entry(catalog, path))
        elif not verify and record.size >= 0 and (record.size, record.mtime_ns) == stats.get(
                path, (-1, -1)):
            present[path] = record.sha256
            if record.row is not None and (record.label, record.split) != (
                    labels.get(path), splits.get(path, "")):
                refresh[path] = catalog_entry(catalog, path)._replace(sha256=record.sha256)
        else:
            to_hash.append(path)
    hashes = hash_files(to_hash) if to_hash else {}
    changed, unreadable = [], []
    for path in to_hash:
        record, entry = records[path], catalog_entry(catalog, path)
        if not hashes.get(path) and record.row is not None:  # stored, unreadable now
            present[path] = record.sha256
            unreadable.append(path)
        elif hashes.get(path) and hashes[path] == record.sha256:
            present[path] = record.sha256
            known = (record.size, record.mtime_ns) + (
                (record.label, record.split) if record.row is not None else (None, ""))
            wanted = (entry.size, entry.mtime_ns) + (
                (entry.label, entry.split) if record.row is not None else (None, ""))
            if known != wanted:
                refresh[path] = entry._replace(sha256=record.sha256)
        else:
            changed.append(path)
            todo.append(entry)
    gone = []
    prefixes = tuple(catalog.unreadable)
    for path in records:
        if path in catalog.labels:
            continue
        if prefixes and path.startswith(prefixes):
            present[path] = records[path].sha256
            unreadable.append(path)
        else:
            gone.append(path)
    todo.sort(key=lambda e: e.path)
    return Work(todo, present, refresh, sorted(gone), sorted(changed), len(to_hash),
                sorted(unreadable))


def classes_with_kept(catalog: Catalog, records: dict[str, Record], kept: Sequence[str]
                      ) -> list[str]:
    """The catalog's classes plus those of rows kept from folders unreadable now (sorted),
    so that a class whose folder cannot be read this run keeps its stored rows."""
    extra = {records[p].label for p in kept} - set(catalog.classes) - {None}
    return sorted(set(catalog.classes) | extra) if extra else catalog.classes
