"""One extraction run described and reported: its options (checked before any work), the
provenance it records, and the summary it ends with.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from headstart import __version__
from headstart.errors import StoreError, UsageError
from headstart.extract import precision as precisions
from headstart.extract.backbone import Backbone, WeightsSpec, pipeline_identity
from headstart.extract.backbones import DEFAULT_BACKBONE, backbone_info
from headstart.extract.catalog import Catalog
from headstart.extract.images import MAX_FILE_BYTES
from headstart.extract.labels import LabelSpec
from headstart.extract.loop import LoopResult
from headstart.features import SINGLE_FILE_LIMIT, open_store, schema
from headstart.features.journal import recorded_precision
from headstart.features.shards import ShardPlan, plan_path
from headstart.options import Choice, Range, check_options

OPTIONS = {
    "batch_size": Range(int, 1), "workers": Range(int, 1, 256), "flush_rows": Range(int, 1),
    "dtype": Choice(schema.STORAGE_DTYPES), "precision": Choice(precisions.CHOICES),
    "compression": Choice(schema.COMPRESSIONS), "seed": Range(int, 0),
    "single_file_limit": Range(int, 0), "max_file_mb": Range(int, 1),
}
FLAGS = {"flush_rows": "--flush-every", "single_file_limit": "single_file_limit",
         "max_file_mb": "--max-file-size"}


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
    precision: str = precisions.AUTO
    labels: LabelSpec = field(default_factory=LabelSpec)
    batch_size: int = 32
    workers: int | None = None
    flush_rows: int = 256
    compression: str = "none"
    verify: bool = False
    single_file_limit: int = SINGLE_FILE_LIMIT
    max_file_mb: int = MAX_FILE_BYTES >> 20  # larger image files are skipped with a reason
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
            info = backbone_info(options["backbone"])
            options["backbone"] = info.preset or info.name
            weights = options.get("weights", "imagenet")
            if info.preset and weights != "imagenet":
                raise UsageError(
                    f"--weights {weights} is for keras.applications backbones; a KerasHub "
                    "preset carries its own weights: pass another preset, or a preset "
                    "folder, as --backbone."
                )
        job = cls(Path(directory), Path(output), **options)
        job.labels.check()
        return job

    def weights_spec(self) -> WeightsSpec:
        return WeightsSpec.parse(self.weights, self.seed)

    def identity(self, spec: WeightsSpec) -> schema.Identity:
        """The rows' identity; needs a decided precision (see `decided`)."""
        if self.precision == precisions.AUTO:
            raise RuntimeError("decide the precision first (Job.decided)")
        return pipeline_identity(spec.identity_string(), self.dtype, self.precision,
                                 backbone=self.backbone, layer=self.layer)

    def build_model(self, spec: WeightsSpec):
        return Backbone(spec, backbone=self.backbone, layer=self.layer, dtype=self.dtype,
                        precision=self.precision, batch_size=self.batch_size)

    def decided(self, decision: precisions.Decision) -> Job:
        """This job with the precision `decision` names (a no-op for an explicit one)."""
        return replace(self, precision=decision.precision)


def decide_precision(job: Job, *, model=None, plan: ShardPlan | None = None,
                     hardware: Callable[[], precisions.Hardware] | None = None
                     ) -> precisions.Decision:
    """The precision of this run's rows, and why.

    Explicit --precision: itself (a store of another precision refuses it later, naming
    both). auto: the precision recorded by the shard plan under way, else by the store or
    its committed parts, else that of a backbone given (`model`), else the choice for
    `hardware()` (default: this machine; `headstart.extract.precision.choose`).
    Raises StoreError for an unreadable store.
    """
    if job.precision != precisions.AUTO:
        return precisions.Decision(job.precision, "--precision")
    if plan is not None:
        return precisions.follow(plan.schema_identity.precision,
                                 str(plan_path(job.output, plan.generation)))
    recorded = recorded_precision(job.output)
    if recorded is not None:
        return precisions.follow(recorded[0], str(recorded[1]))
    if model is not None:
        return precisions.Decision(model.identity.precision, "the backbone given")
    return precisions.choose((hardware or precisions.this_machine)())


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


def matching_identity(job: Job, spec: WeightsSpec, model) -> schema.Identity:
    identity = job.identity(spec)
    if model is not None and model.identity != identity:
        raise UsageError("the backbone given makes other rows: "
                         f"{'; '.join(model.identity.differences(identity))}")
    return identity


def check_output(output: Path) -> None:
    if output.is_dir():
        raise StoreError(f"Output '{output}' is a directory; "
                         f"pass a file name such as {output}/features.h5.")
    try:  # as fit-head and audit-features do for theirs
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"Cannot create the output folder '{output.parent}' "
                         f"({error.strerror}); choose another -o location.") from None
    probe = output.parent / f".{output.name}.writable-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise StoreError(
            f"Cannot write to '{output.parent}' ({error.strerror}); choose another -o location."
        ) from None


def library_versions(preset: bool = False) -> dict[str, str]:
    """Versions of everything that shapes the numbers, recorded with the store (keras-hub's
    too for a KerasHub preset)."""
    from importlib.metadata import version

    names = ("tensorflow", "keras", "numpy", "h5py", "pillow") + (("keras-hub",) if preset
                                                                  else ())
    return {f"version_{name.replace('-', '_')}": version(name) for name in names}


def provenance(job: Job, catalog: Catalog, spec: WeightsSpec) -> dict:
    preset = backbone_info(job.backbone).preset
    return {
        "source_dir": str(catalog.root.resolve()),
        "seed": spec.seed,
        # A KerasHub store records its preset (folder or handle) here, for predict/export.
        "weights_path": spec.path or preset or "",
        "tool": "headstart",
        "tool_version": __version__,
        "command": job.command or "",
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        schema.LABEL_SOURCE: catalog.label_source,
        **library_versions(preset=bool(preset)),
    }


def run_summary(job: Job, catalog: Catalog, started: float, *, loop: LoopResult | None = None,
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
