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
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from headstart import __version__
from headstart.errors import Interrupted, StoreError, UsageError
from headstart.extract.backbone import PRECISIONS, Backbone, WeightsSpec, pipeline_identity
from headstart.extract.backbones import DEFAULT_BACKBONE, backbone_info
from headstart.extract.catalog import Catalog, LabelSpec, scan
from headstart.extract.decode import hash_files
from headstart.extract.loop import LoopResult, extract_into
from headstart.extract.plan import Work, plan_work
from headstart.features import (
    SINGLE_FILE_LIMIT,
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
from headstart.features.shards import ShardPlan, current_plan, publish_plan
from headstart.features.stitch import next_generation, shards_dir
from headstart.options import Choice, Range, check_options

OPTIONS = {
    "batch_size": Range(int, 1), "workers": Range(int, 1, 256), "flush_rows": Range(int, 1),
    "dtype": Choice(schema.STORAGE_DTYPES), "precision": Choice(PRECISIONS),
    "compression": Choice(schema.COMPRESSIONS), "seed": Range(int, 0),
    "single_file_limit": Range(int, 0),
}
FLAGS = {"flush_rows": "--flush-every", "single_file_limit": "single_file_limit"}


@dataclass(frozen=True)
class Job:
    """Everything one extraction needs, checked on construction (see `Job.checked`)."""

    directory: Path
    output: Path
    backbone: str = DEFAULT_BACKBONE
    layer: str | None = None
    weights: str = "imagenet"
    seed: int = 0
    dtype: str = "float32"
    precision: str = "float32"
    labels: LabelSpec = field(default_factory=LabelSpec)
    batch_size: int = 32
    workers: int | None = None
    flush_rows: int = 256
    compression: str = "none"
    verify: bool = False
    single_file_limit: int = SINGLE_FILE_LIMIT
    progress: bool = True
    command: str | None = None

    @classmethod
    def checked(cls, directory, output, **options) -> Job:
        """A Job from keyword options; UsageError for any bad or unknown one, before any work."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown extraction options: {', '.join(unknown)}")
        check_options(options, OPTIONS, nullable=("workers",), flags=FLAGS)
        if "backbone" in options:
            options["backbone"] = backbone_info(options["backbone"]).name
        job = cls(Path(directory), Path(output), **options)
        job.labels.check()
        return job

    def weights_spec(self) -> WeightsSpec:
        return WeightsSpec.parse(self.weights, self.seed)

    def identity(self, spec: WeightsSpec) -> schema.Identity:
        return pipeline_identity(spec.identity_string(), self.dtype, self.precision,
                                 backbone=self.backbone, layer=self.layer)

    def build_model(self, spec: WeightsSpec):
        return Backbone(spec, backbone=self.backbone, layer=self.layer, dtype=self.dtype,
                        precision=self.precision)


@dataclass
class Summary:
    """What an extraction run did, for the final report."""

    output: Path
    rows: int
    added: int
    skipped: list[tuple[str, str]]
    skipped_now: int
    dropped: int
    ignored: list[tuple[str, str]]
    class_counts: dict[str, int]
    elapsed_s: float
    images_per_s: float
    size_bytes: int
    up_to_date: bool = False
    notices: list[str] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)
    label_source: str = "folders"
    shards: int = 0  # shard files the store spans (0: one file)
    shard: str | None = None  # "I/N" for a shard worker
    hashed: int = 0  # files hashed to check for changes
    workers: list = field(default_factory=list)  # Ray: each actor's pid, GPUs and shards


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
    catalog = scan(job.directory, job.labels)
    _check_output(job.output)
    spec = job.weights_spec()
    identity = matching_identity(job, spec, model)
    _report_catalog(catalog, log)
    with exclusive_lock(job.output):
        remove_stale_temporaries(job.output)
        _refuse_unmerged_plan(job.output)
        records = read_records(store_files(job.output), identity, catalog.label_source,
                               writing_after=True)
        work = plan_work(catalog, records, hash_files=_hasher(catalog, job.workers),
                         verify=job.verify)
        if work.nothing_to_do and not part_files(job.output) and job.output.exists():
            return _summary(job, catalog, started, up_to_date=True, hashed=work.hashed)
        loop = None
        if work.todo:
            log(f"extracting {len(work.todo)} of {len(catalog.files)} images in "
                f"'{catalog.root}' with {identity.model} {identity.layer}, weights "
                f"{identity.weights}")
            model = model or job.build_model(spec)
            writer = PartWriter(job.output, identity=identity, classes=catalog.classes,
                                attrs=_provenance(job, catalog, spec),
                                flush_rows=job.flush_rows, given_splits=catalog.given_splits)
            loop = _embed(job, catalog.root, work, writer, model, log)
            if loop.stopped:
                _interrupted(job.output, records, loop, len(work.todo))
        present = {**work.present, **(loop.hashes if loop else {})}
        finished = consolidate(
            job.output, identity=identity, classes=catalog.classes, present=present,
            attrs={**_provenance(job, catalog, spec), "complete": True},
            compression=job.compression, given_splits=catalog.given_splits,
            refresh=work.refresh, single_file_limit=job.single_file_limit)
        summary = _summary(job, catalog, started, loop=loop, dropped=finished.dropped,
                           hashed=work.hashed)
        return summary


def run_shard(job: Job, index: int, count: int, *, model=None,
              log: Callable[[str], None] = print,
              advance: Callable[[int], None] | None = None) -> Summary:
    """Shard `index` of `count`: agree on the plan, extract this shard's slice, finish its file."""
    started = time.perf_counter()
    if not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: the index must run from 0 to {count - 1}.")
    _check_output(job.output)
    spec = job.weights_spec()
    identity = matching_identity(job, spec, model)
    plan = ensure_plan(job, count, spec, identity, log)
    if plan is None:
        return store_summary(job, started, up_to_date=True, shard=f"{index}/{count}")
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
                    single_file_limit=1 << 62)
        summary = store_summary(job, started, shard=f"{index}/{count}", store=target)
        if loop:
            summary.added, summary.skipped_now = loop.added, loop.skipped
            summary.images_per_s = (loop.added + loop.skipped) / max(summary.elapsed_s, 1e-9)
        return summary


def ensure_plan(job: Job, count: int, spec: WeightsSpec, identity: schema.Identity,
                log: Callable[[str], None] = print) -> ShardPlan | None:
    """The plan of the sharded run under way, or a new one published for it.

    None when there is nothing to extract (the store is up to date). Raises UsageError
    when the plan under way has another number of shards.
    """
    plan = current_plan(job.output)
    if plan is None:
        if part_files(job.output):
            raise StoreError(
                f"'{job.output}' has an unfinished single-process extraction (parts in "
                f"'{job.output}.parts'); finish it with the same command without --shard first.")
        catalog = scan(job.directory, job.labels)
        _report_catalog(catalog, log)
        records = read_records(store_files(job.output), identity, catalog.label_source)
        work = plan_work(catalog, records, hash_files=_hasher(catalog, job.workers),
                         verify=job.verify)
        if work.nothing_to_do:
            return None
        candidate = ShardPlan(
            generation=next_generation(job.output), count=count, identity=identity.as_attrs(),
            classes=catalog.classes, label_source=catalog.label_source,
            given_splits=catalog.given_splits, todo=work.todo, drop=work.drop,
            refresh=list(work.refresh.values()), attrs=_provenance(job, catalog, spec))
        plan = publish_plan(job.output, candidate)
        log(f"plan of generation {plan.generation}: {len(plan.todo):,} images in {plan.count} "
            f"shards, in '{shards_dir(job.output)}'")
    if plan.count != count:
        raise UsageError(
            f"The sharded run of '{job.output}' under way has {plan.count} shards, not {count}; "
            f"run --shard I/{plan.count} (or finish and merge it before starting another).")
    if plan.schema_identity != identity:
        differences = "; ".join(plan.schema_identity.differences(identity))
        raise StoreError(f"The sharded run of '{job.output}' under way makes other rows "
                         f"({differences}); use the same options as its other shards.")
    return plan


def _complete(path: Path) -> bool:
    with open_store(path, require_complete=False) as store:
        return store.complete


def matching_identity(job: Job, spec: WeightsSpec, model) -> schema.Identity:
    identity = job.identity(spec)
    if model is not None and model.identity != identity:
        raise UsageError("the backbone given makes other rows: "
                         f"{'; '.join(model.identity.differences(identity))}")
    return identity


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
        log(f"ignored {path}: {why}")


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


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise StoreError(f"Output '{output}' is a directory; "
                         f"pass a file name such as {output}/features.h5.")
    if not output.parent.exists():
        raise StoreError(f"Output folder '{output.parent}' does not exist; create it first.")
    probe = output.parent / f".{output.name}.writable-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise StoreError(
            f"Cannot write to '{output.parent}' ({error.strerror}); choose another -o location."
        ) from None


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the numbers, recorded with the store."""
    from importlib.metadata import version

    return {f"version_{name}": version(name)
            for name in ("tensorflow", "keras", "numpy", "h5py", "pillow")}


def _provenance(job: Job, catalog: Catalog, spec: WeightsSpec) -> dict:
    return {
        "source_dir": str(catalog.root.resolve()),
        "seed": spec.seed,
        "weights_path": spec.path or "",
        "tool": "headstart",
        "tool_version": __version__,
        "command": job.command or "",
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        schema.LABEL_SOURCE: catalog.label_source,
        **library_versions(),
    }


def _summary(job: Job, catalog: Catalog, started: float, *, loop: LoopResult | None = None,
             dropped: int = 0, up_to_date: bool = False, hashed: int = 0) -> Summary:
    summary = store_summary(job, started, up_to_date=up_to_date)
    summary.ignored, summary.notices = catalog.ignored, catalog.notices
    summary.left_out, summary.dropped, summary.hashed = catalog.left_out, dropped, hashed
    if loop is not None:
        summary.added, summary.skipped_now = loop.added, loop.skipped
        summary.images_per_s = (loop.added + loop.skipped) / max(loop.elapsed_s, 1e-9)
    return summary


def store_summary(job: Job, started: float, *, up_to_date: bool = False,
                   shard: str | None = None, store: Path | None = None) -> Summary:
    store = store or job.output
    with open_store(store) as opened:
        counts, rows, skipped = opened.class_counts(), opened.n_rows, opened.skipped
        label_source, shards = opened.label_source, len(opened.shards)
        size = store.stat().st_size + sum(f.stat().st_size for f in opened.shards)
    return Summary(store, rows, 0, skipped, 0, 0, [], counts, time.perf_counter() - started,
                   0.0, size, up_to_date, label_source=label_source, shards=shards, shard=shard)
