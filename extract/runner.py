"""An extraction run: check every option, catalog, plan, embed, then finish the store.

    summary = extract_features("PetImages", "features.h5", weights="none")

Three ways to run the same work, sharing every piece:

* `extract_features(...)`: one process (all its GPUs): plan against the store, embed
  what is missing into part files, then `consolidate` (one file, or a new shard).
* `extract_features(..., shard=(I, N))`: shard I of N of a sharded run (Slurm job
  arrays, or by hand); agrees with the other workers through the plan written once
  (`headstart.features.shards`), writes only its own shard file; `merge-features`
  stitches the finished shards.
* `headstart.extract.ray_engine.extract_with_ray(...)`: the shards on a Ray cluster.

Each is resumable: a kill loses at most the uncommitted `flush_rows` images.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from headstart.errors import Interrupted, StoreError, UsageError
from headstart.extract import images
from headstart.extract.backbone import WeightsSpec
from headstart.extract.catalog import Catalog, scan
from headstart.extract.decode import hash_files
from headstart.extract.job import (
    Job,
    Summary,
    check_output,
    decide_precision,
    matching_identity,
    provenance,
    run_summary,
    store_summary,
)
from headstart.extract.loop import LoopResult, extract_into
from headstart.extract.plan import Work, classes_with_kept, plan_work
from headstart.extract.precision import AUTO, Decision, follow
from headstart.extract.walk import listed
from headstart.features import (
    PartWriter,
    consolidate,
    exclusive_lock,
    open_store,
    part_files,
    read_records,
    schema,
    store_files,
)
from headstart.features.journal import remove_stale_temporaries
from headstart.features.shards import ShardPlan, current_plan, plan_path, publish_plan
from headstart.features.stitch import next_generation, shards_dir
from headstart.words import count, shown


def extract_features(directory: str | Path, output: str | Path = "features.h5", *,
                     shard: tuple[int, int] | None = None, model=None,
                     log: Callable[[str], None] | None = None, **options) -> Summary:
    """Extract a row for every image under `directory` not yet in `output`.

    options: backbone, layer, weights, seed, dtype, precision, labels (a LabelSpec),
        batch_size (per GPU), workers, flush_rows, compression, verify, progress, command.
    shard: (I, N) to run shard I of N of a sharded extraction instead.
    model: an already loaded Backbone to reuse (it must make rows of the same identity).
    Raises UsageError, FolderError, LabelsError, WeightsError, StoreError,
    StoreBusyError; Interrupted after a Ctrl-C (everything computed is committed).
    """
    job = Job.checked(directory, output, **options)
    log = log or log_above_progress_bar
    if shard is not None:
        return run_shard(job, *shard, model=model, log=log)
    return run(job, model=model, log=log)


def run(job: Job, *, model=None, log: Callable[[str], None] = print) -> Summary:
    """The single-process run; see the module docstring."""
    started = time.perf_counter()
    images.MAX_FILE_BYTES = job.max_file_mb << 20  # what read_file reads, in this process
    catalog = scan(job.directory, job.labels)
    check_output(job.output)
    spec = job.weights_spec()
    _report_catalog(catalog, log)
    with exclusive_lock(job.output):
        remove_stale_temporaries(job.output)
        _refuse_unmerged_plan(job.output)
        decision = decide_precision(job, model=model)
        job = job.decided(decision)
        identity = matching_identity(job, spec, model)
        records = read_records(store_files(job.output), identity, catalog.label_source,
                               writing_after=True)
        work = plan_work(catalog, records, hash_files=_hasher(catalog, job.workers),
                         verify=job.verify)
        catalog = _keeping_unreadable(catalog, records, work, log)
        if work.nothing_to_do and not part_files(job.output) and job.output.exists():
            return run_summary(job, catalog, started, up_to_date=True, hashed=work.hashed)
        loop = None
        if work.todo:
            log(decision.line())
            log(f"extracting {len(work.todo)} of {len(catalog.files)} images in "
                f"'{catalog.root}' with {identity.model} {identity.layer}, weights "
                f"{identity.weights}")
            model = model or job.build_model(spec)
            writer = PartWriter(job.output, identity=identity, classes=catalog.classes,
                                attrs=provenance(job, catalog, spec),
                                flush_rows=job.flush_rows, given_splits=catalog.given_splits)
            loop = _embed(job, catalog.root, work, writer, model, log)
            if loop.stopped:
                _interrupted(job.output, records, loop, len(work.todo))
        present = {**work.present, **(loop.hashes if loop else {})}
        finished = consolidate(
            job.output, identity=identity, classes=catalog.classes, present=present,
            attrs={**provenance(job, catalog, spec), "complete": True},
            compression=job.compression, given_splits=catalog.given_splits,
            refresh=work.refresh, single_file_limit=job.single_file_limit, known=records)
        summary = run_summary(job, catalog, started, loop=loop, dropped=finished.dropped,
                           hashed=work.hashed)
        return summary


def run_shard(job: Job, index: int, count: int, *, model=None,
              log: Callable[[str], None] = print,
              advance: Callable[[int], None] | None = None) -> Summary:
    """Shard `index` of `count`: agree on the plan, extract this shard's slice, finish its file."""
    started = time.perf_counter()
    images.MAX_FILE_BYTES = job.max_file_mb << 20  # also in each Ray actor that runs a shard
    if not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: the index must run from 0 to {count - 1}.")
    check_output(job.output)
    spec = job.weights_spec()
    job, decision, plan = agree_on_plan(job, count, spec, model, log)
    if plan is None:
        return store_summary(job, started, up_to_date=True, shard=f"{index}/{count}")
    identity = matching_identity(job, spec, model)  # the plan's: ensure_plan checked it
    target = plan.shard(job.output, index)
    with exclusive_lock(target):
        remove_stale_temporaries(target)
        records = read_records(store_files(target), identity, plan.label_source,
                               writing_after=True)
        todo = [entry for entry in plan.slice(index) if entry.path not in records]
        complete = target.exists() and not part_files(target) and _complete(target)
        if complete and not todo:
            return store_summary(job, started, up_to_date=True, shard=f"{index}/{count}",
                                  store=target)
        loop = None
        if todo:
            log(decision.line())
            log(f"shard {index}/{count}: extracting {len(todo)} of {len(plan.slice(index))} "
                f"images with {identity.model} {identity.layer}")
            model = model or job.build_model(spec)
            writer = PartWriter(target, identity=identity, classes=plan.classes,
                                attrs=plan.attrs, flush_rows=job.flush_rows,
                                given_splits=plan.given_splits)
            work = Work(todo, {})
            loop = _embed(job, job.directory, work, writer, model, log, advance=advance)
            if loop.stopped:
                _interrupted(target, records, loop, len(todo))
        consolidate(target, identity=identity, classes=plan.classes, present=None,
                    attrs={**plan.attrs, "complete": True, "shard": f"{index}/{count}",
                           "generation": plan.generation},
                    compression=job.compression, given_splits=plan.given_splits,
                    single_file_limit=1 << 62, known=records)
        summary = store_summary(job, started, shard=f"{index}/{count}", store=target)
        if loop:
            summary.added, summary.skipped_now = loop.added, loop.skipped
            summary.images_per_s = (loop.added + loop.skipped) / max(summary.elapsed_s, 1e-9)
        return summary


def agree_on_plan(job: Job, count: int, spec: WeightsSpec, model=None,
                  log: Callable[[str], None] = print, decide=decide_precision
                  ) -> tuple[Job, Decision, ShardPlan | None]:
    """(job with its precision decided, the decision, the plan every shard follows).

    With --precision auto, the plan under way decides; without one, this worker decides
    (`decide`) and publishes its plan, and if another worker published first, its
    precision is followed: shards on a cluster of mixed machines agree. The plan is None
    when the store is up to date. Raises as ensure_plan.
    """
    plan = current_plan(job.output)
    decision = decide(job, model=model, plan=plan)
    decided = job.decided(decision)
    plan = ensure_plan(decided, count, spec, decided.identity(spec), log,
                       follow_precision=job.precision == AUTO)
    if plan is not None and plan.schema_identity.precision != decided.precision:
        decision = follow(plan.schema_identity.precision,
                          str(plan_path(job.output, plan.generation)))
        decided = job.decided(decision)
    return decided, decision, plan


def ensure_plan(job: Job, count: int, spec: WeightsSpec, identity: schema.Identity,
                log: Callable[[str], None] = print, *, follow_precision: bool = False
                ) -> ShardPlan | None:
    """The plan of the sharded run under way, or a new one published for it.

    None when there is nothing to extract (the store is up to date). follow_precision:
    a plan under way in another precision is followed, not refused (--precision auto).
    Raises UsageError when the plan under way has another number of shards, StoreError
    when it makes other rows.
    """
    plan = current_plan(job.output)
    while plan is None:
        seen = _file_state(job.output)
        catalog = scan(job.directory, job.labels)
        _report_catalog(catalog, log)
        records = read_records(store_files(job.output), identity, catalog.label_source)
        work = plan_work(catalog, records, hash_files=_hasher(catalog, job.workers),
                         verify=job.verify)
        catalog = _keeping_unreadable(catalog, records, work, log)
        if work.nothing_to_do:
            return None
        candidate = ShardPlan(
            generation=next_generation(job.output), count=count, identity=identity.as_attrs(),
            classes=catalog.classes, label_source=catalog.label_source,
            given_splits=catalog.given_splits, todo=work.todo, drop=work.drop,
            refresh=list(work.refresh.values()), attrs=provenance(job, catalog, spec))
        # Published under the store's lock, so never while a single-process run writes
        # the store (it refuses a plan it finds under its lock); planned again if the
        # store changed while this worker scanned.
        with exclusive_lock(job.output, wait_s=PLANNING_WAIT_S):
            _refuse_parts(job.output)
            plan = current_plan(job.output)
            if plan is None and _file_state(job.output) == seen:
                plan = publish_plan(job.output, candidate)
                log(f"plan of generation {plan.generation}: {len(plan.todo):,} images in "
                    f"{plan.count} shards, in '{shards_dir(job.output)}'")
    if plan.count != count:
        raise UsageError(
            f"The sharded run of '{job.output}' under way has {plan.count} shards, not {count}; "
            f"run --shard I/{plan.count} (or finish and merge it before starting another).")
    theirs = plan.schema_identity
    if follow_precision:
        identity = replace(identity, precision=theirs.precision)
    if theirs != identity:
        differences = "; ".join(theirs.differences(identity))
        raise StoreError(f"The sharded run of '{job.output}' under way makes other rows "
                         f"({differences}); use the same options as its other shards.")
    return plan


def _keeping_unreadable(catalog: Catalog, records, work: Work,
                        log: Callable[[str], None]) -> Catalog:
    """The catalog with the classes of stored rows kept although unreadable now; says so."""
    if not work.unreadable:
        return catalog
    folders = sorted({p.rsplit("/", 1)[0] + "/" if "/" in p else p for p in work.unreadable})
    log(f"kept {count(len(work.unreadable), 'stored row')} of files that cannot be read now "
        f"(in {listed(folders)}); they are dropped only once the files are really gone")
    return replace(catalog, classes=classes_with_kept(catalog, records, work.unreadable))


# How long a worker waits for the store's lock while other workers publish (milliseconds
# each); a single-process run (or a merge) holds it longer, and the worker is refused.
PLANNING_WAIT_S = 10.0


def _refuse_parts(store: Path) -> None:
    if part_files(store):
        raise StoreError(
            f"'{store}' has an unfinished single-process extraction (parts in "
            f"'{store}.parts'); finish it with the same command without --shard first.")


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, modification time) of `path`, None if absent: changes with every write."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _complete(path: Path) -> bool:
    with open_store(path, require_complete=False) as store:
        return store.complete


def _hasher(catalog: Catalog, workers: int | None):
    def hash_paths(paths):
        return hash_files(((p, catalog.root / p) for p in paths), workers)
    return hash_paths


def _embed(job: Job, root: Path, work: Work, writer: PartWriter, model,
           log: Callable[[str], None], advance: Callable[[int], None] | None = None
           ) -> LoopResult:
    batch = job.batch_size * getattr(model, "replicas", 1)  # --batch-size is per device
    with tqdm(total=len(work.todo), unit="img", desc="extracting", file=sys.stderr,
              disable=not job.progress or advance is not None, smoothing=0.1) as bar, \
            _stop_on_sigint() as stop_requested:
        loop_start = time.perf_counter()
        result = extract_into(writer, root, work.todo, model, batch_size=batch,
                              workers=job.workers, advance=advance or bar.update, log=log,
                              stop_requested=stop_requested)
    result.elapsed_s = time.perf_counter() - loop_start
    return result


def _interrupted(target: Path, records: dict, loop: LoopResult, todo: int) -> None:
    stored = sum(1 for r in records.values() if r.row is not None) + loop.added
    raise Interrupted(
        f"Interrupted: {stored} images are stored in '{target}' and "
        f"{todo - loop.added - loop.skipped} remain; run the same command again to resume."
    )


def _refuse_unmerged_plan(output: Path) -> None:
    plan = current_plan(output)
    if plan is not None:
        raise StoreError(
            f"A sharded extraction of '{output}' is under way ({plan.count} shards, plan in "
            f"'{shards_dir(output)}'); finish its shards with --shard I/{plan.count} and run "
            f"`merge-features {output}` before extracting into it without --shard.")


def _report_catalog(catalog: Catalog, log: Callable[[str], None]) -> None:
    for notice in catalog.notices:
        log(f"warning: {notice}")
    for path, why in catalog.ignored:
        log(f"ignored {shown(path)}: {shown(why)}")


def log_above_progress_bar(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


@contextlib.contextmanager
def _stop_on_sigint():
    """First Ctrl-C asks the loop to stop after the current batch; a second one aborts."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        tqdm.write("stopping after the current batch (Ctrl-C again to abort at once)",
                   file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


