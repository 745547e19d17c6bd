"""Sharded extraction, store side: the plan every shard worker agrees on, and the merge.

A sharded run (`extract-features --shard I/N`, Slurm job arrays, Ray) is one generation
of shards. Its plan, `features.h5.shards/plan-gGGGGGG.json`, is written once: the first
worker to start scans the folder and publishes the plan with an atomic hard link, which
fails for every later worker, and they all read the winner's. The plan fixes the classes
(labels index into them), the label source, the pipeline, the images to extract (sorted
by path) and the stored rows to drop (files deleted or changed since). Shard I of N owns
the contiguous slice `todo[I*n//N : (I+1)*n//N]`, so workers need not talk to each other,
images already stored are never reassigned, and images added later go to the next
generation. A worker writes only its own files (`gGGGGGG-sIIIII-of-NNNNN.h5` with its own
parts and lock), so a shard re-run by a scheduler's retry, or after a kill, resumes.

`merge_shards` checks that every shard of the plan is present, complete and made by
the same pipeline, then writes `features.h5` as a virtual dataset over them (no row
copied) or, with copy=True, as one self-contained file sorted by path; then it deletes
the plan. Stitched rows are in plan order, which for a new store is the order of a
single-process run: sorted by path.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headstart import faults
from headstart.errors import StoreBusyError, StoreError
from headstart.features import schema
from headstart.features.journal import Entry, read_records
from headstart.features.lock import exclusive_lock
from headstart.features.reader import open_h5, part_files, shard_files, writers_of
from headstart.features.stitch import (
    PLAN_PATTERN,
    referenced_shards,
    refreshed,
    remove_unreferenced_shards,
    shard_path,
    shards_dir,
    stitch,
    write_rows_file,
)

PLAN_FORMAT = "headstart-shard-plan"
MERGED = schema.MERGED_GENERATION  # attribute of a store written by merge_shards


@dataclass
class ShardPlan:
    """What one generation of shard workers extracts; see the module docstring."""

    generation: int
    count: int  # N: how many shards
    identity: dict  # schema.Identity as attributes
    classes: list[str]
    label_source: str
    given_splits: bool
    todo: list[Entry]  # images to extract, sorted by path
    drop: list[str] = field(default_factory=list)  # stored paths to leave out of the merge
    refresh: list[Entry] = field(default_factory=list)  # stored rows with a newer stat
    attrs: dict = field(default_factory=dict)  # provenance for every shard file
    created_utc: str = ""

    def slice(self, index: int) -> list[Entry]:
        """The images shard `index` owns: a contiguous slice of the sorted todo list."""
        n = len(self.todo)
        return self.todo[index * n // self.count:(index + 1) * n // self.count]

    def shard(self, store: str | Path, index: int) -> Path:
        return shard_path(store, self.generation, index, self.count)

    @property
    def schema_identity(self) -> schema.Identity:
        return schema.Identity.from_attrs(self.identity)


def plan_path(store: str | Path, generation: int) -> Path:
    return shards_dir(store) / f"plan-g{generation:06d}.json"


def current_plan(store: str | Path) -> ShardPlan | None:
    """The unmerged plan of `store`, if a sharded run is under way (or was interrupted)."""
    directory = shards_dir(store)
    if not directory.is_dir():
        return None
    plans = sorted(p for p in directory.iterdir() if PLAN_PATTERN.search(p.name))
    if len(plans) > 1:
        raise StoreError(f"'{directory}' holds {len(plans)} unmerged plans ({plans[0].name}, "
                         "...); run `merge-features` for the oldest or delete the stale one.")
    return read_plan(plans[0]) if plans else None


def read_plan(path: Path) -> ShardPlan:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != PLAN_FORMAT:
            raise ValueError("not a shard plan")
        data.pop("format")
        data["todo"] = [Entry(*e) for e in data["todo"]]
        data["refresh"] = [Entry(*e) for e in data["refresh"]]
        return ShardPlan(**data)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise StoreError(f"'{path}' is not a readable shard plan ({error}); delete it and start "
                         "the sharded run again.") from None


def publish_plan(store: str | Path, plan: ShardPlan) -> ShardPlan:
    """Write `plan` unless another worker already did; return the plan that won.

    The plan is written under a temporary name, fsynced, and hard-linked to its final
    name: link() fails if the name exists, atomically, also on NFS.
    """
    directory = shards_dir(store)
    directory.mkdir(parents=True, exist_ok=True)
    target = plan_path(store, plan.generation)
    plan.created_utc = plan.created_utc or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = directory / f".{target.name}.tmp-{os.getpid()}"
    data = {"format": PLAN_FORMAT, **asdict(plan)}
    created = False
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, target)
            created = True
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    # A worker that planned after another published (and so chose a later generation)
    # withdraws its own plan: the oldest unmerged plan is the one every worker follows.
    plans = sorted(p for p in directory.iterdir() if PLAN_PATTERN.search(p.name))
    if created and plans and plans[0] != target:
        target.unlink()
        plans.remove(target)
    if not plans:
        raise StoreError(f"The shard plan '{target}' vanished while it was being written.")
    return read_plan(plans[0])


@dataclass(frozen=True)
class ShardStatus:
    index: int
    path: Path
    state: str  # "done", "running" (a worker holds its lock now), "interrupted", "missing"
    rows: int = 0


def shard_status(store: str | Path, plan: ShardPlan) -> list[ShardStatus]:
    """Where each shard of the plan stands, read from the files alone."""
    statuses = []
    for index in range(plan.count):
        path = plan.shard(store, index)
        if path.exists():
            with open_h5(path) as handle:
                complete = bool(handle.attrs.get("complete", False))
                rows = handle[schema.FEATURES].shape[0]
            if complete and not part_files(path):
                statuses.append(ShardStatus(index, path, "done", rows))
                continue
        if path.exists() or part_files(path):
            state = "running" if writers_of(path) else "interrupted"
        else:
            state = "missing"
        statuses.append(ShardStatus(index, path, state))
    return statuses


def merge_shards(store: str | Path, *, copy: bool = False, attrs: dict | None = None) -> dict:
    """Stitch the finished shards of the current plan into `store`; see the module docstring.

    Raises StoreError naming the shards still missing (and how to run them), or a shard
    made by another pipeline; StoreBusyError while another writer holds the store.
    Returns a summary: rows, shards, generation, copied.
    """
    store = Path(store)
    with exclusive_lock(store):
        plan = current_plan(store)
        if plan is None:
            raise StoreError(f"No sharded run to merge for '{store}' (no plan in "
                             f"'{shards_dir(store)}'); start one with `extract-features DIR -o "
                             f"{store} --shard I/N`.")
        before = referenced_shards(store)
        if merged_generation(store) == plan.generation:  # a merge killed after its commit
            return _finish_merge(store, plan, before, copy)
        statuses = shard_status(store, plan)
        waiting = [s for s in statuses if s.state != "done"]
        if waiting and all(s.state == "running" for s in waiting):
            raise StoreBusyError(
                f"{len(waiting)} of {plan.count} shards of '{store}' are still being written "
                f"by running workers (shard {','.join(str(s.index) for s in waiting)}); merge "
                "once they finish.")
        if waiting:
            indices = ",".join(str(s.index) for s in waiting)
            raise StoreError(
                f"{len(waiting)} of {plan.count} shards of '{store}' are not finished "
                f"(shard {indices}: {waiting[0].state}); run them with `extract-features ... "
                f"--shard I/{plan.count}` (Slurm: `sbatch --array={indices} ...`), then merge "
                "again."
            )
        identity = plan.schema_identity
        shards = [s.path for s in statuses]
        for shard in shards:  # same pipeline, rows exactly its slice
            read_records([shard], identity)
        drop = set(plan.drop)
        refresh = {e.path: e for e in plan.refresh}
        top_attrs = {**plan.attrs, **(attrs or {}), "complete": True,
                     schema.LABEL_SOURCE: plan.label_source, MERGED: plan.generation}
        faults.point("merge:checked")
        old_skipped = _old_skipped(store, drop)
        new_skipped = [s for shard in shards for s in _skipped_of(shard)]
        skipped = sorted({s.path: s for s in old_skipped + new_skipped}.values())
        if copy:
            _copy_merge(store, shards, drop, refresh, plan, identity, skipped, top_attrs)
        else:
            def keep(path: str, row: int) -> bool:
                return path not in drop

            stitch(store, keep_old=keep, new_shards=shards, identity=identity,
                   classes=plan.classes, skipped=skipped, attrs=top_attrs,
                   given_splits=plan.given_splits, refresh=refresh)
        faults.point("merge:committed")
        return _finish_merge(store, plan, before | set(shards), copy)


def merged_generation(store: Path) -> int | None:
    """The generation of shards whose merge wrote `store` (None: not written by a merge)."""
    if not store.exists():
        return None
    with open_h5(store) as handle:
        value = handle.attrs.get(MERGED)
    return int(value) if value is not None else None


def _finish_merge(store: Path, plan: ShardPlan, candidates: set[Path], copy: bool) -> dict:
    """Remove the merged plan, then the shard files of this store it no longer reads."""
    plan_path(store, plan.generation).unlink(missing_ok=True)
    faults.point("merge:plan-removed")
    remove_unreferenced_shards(store, candidates)
    with open_h5(store) as handle:
        rows = handle[schema.FEATURES].shape[0]
        count = len(shard_files(handle[schema.FEATURES], store))
    return {"rows": rows, "shards": count, "generation": plan.generation,
            "copied": count == 0 and copy}


def _skipped_of(file: Path) -> list[schema.Skipped]:
    from headstart.features.reader import read_index

    with open_h5(file) as handle:
        return read_index(handle).skipped


def _old_skipped(store: Path, drop: set[str]) -> list[schema.Skipped]:
    if not store.exists():
        return []
    return [s for s in _skipped_of(store) if s.path not in drop]


def _copy_merge(store: Path, shards: list[Path], drop: set[str], refresh: dict[str, Entry],
                plan: ShardPlan, identity: schema.Identity, skipped: list, attrs: dict) -> int:
    files = ([store] if store.exists() else []) + shards
    records = read_records(files, identity)
    kept = {p: r for p, r in records.items() if r.row is not None and p not in drop}
    for path, entry in refresh.items():
        if path in kept:
            kept[path] = refreshed(kept[path], entry)
    rows = [(p, kept[p]) for p in sorted(kept)]
    write_rows_file(store, files, rows, identity=identity, classes=plan.classes,
                    skipped=skipped, attrs=attrs, given_splits=plan.given_splits)
    return len(rows)
