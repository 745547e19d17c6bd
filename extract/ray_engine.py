"""`extract-features --engine ray`: the shards of a sharded extraction on a Ray cluster.

The driver plans (the same plan file shard workers use under Slurm), starts one
long-lived actor per GPU (`num_gpus=1`, its share of the CPUs for decoding), or on a
cluster without GPUs one per group of `cpus_per_worker` CPUs, and hands each actor whole
shards. An actor loads the backbone once and runs the ordinary shard worker
(`headstart.extract.runner.run_shard`), reading images from the shared file system and
writing its shard file there, so pixels never travel through Ray's object store. One
progress bar counts images over all actors. An actor that dies (OOM-kill, node loss)
is replaced and its shard retried, resuming from the shard's committed parts; shards
still failing after `retries` are listed with the command that retries them. When all
shards are done the driver stitches them (`merge_shards`).

Needs the optional extra: `pip install "headstart[ray]"`, and a file system every node
sees (the image folder and the store's folder).
"""

from __future__ import annotations

import functools
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from headstart.errors import StoreError, missing_extra
from headstart.extract import precision as precisions
from headstart.extract.job import Job, Summary, decide_precision, store_summary
from headstart.extract.runner import agree_on_plan, log_above_progress_bar, run_shard
from headstart.features.shards import current_plan, merge_shards, shard_status


def _import_ray():
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray", "--engine ray") from None
    return ray


def extract_with_ray(directory: str | Path, output: str | Path = "features.h5", *,
                     address: str | None = None, shards: int | None = None,
                     cpus_per_worker: int | None = None, retries: int = 2,
                     model_factory: Callable | None = None,
                     log: Callable[[str], None] | None = None, **options) -> Summary:
    """Extract `directory` into `output` with Ray actors; see the module docstring.

    address: an existing cluster ("auto", "ray://host:10001"); default: the Ray already
        initialised in this process, else a new local one.
    shards: how many shards to plan (default: 4 per actor; an unmerged plan keeps its own).
    model_factory: builds the backbone in each actor, called as
        model_factory(weights_spec, backbone=, layer=, dtype=, precision=, batch_size=)
        (default: Backbone); precision is the one decided for the store, never auto.
    options: as for extract_features. Raises MissingExtraError without Ray, StoreError
    when shards still fail after `retries` retries (finished shards are kept).
    """
    ray = _import_ray()
    job = Job.checked(directory, output, **options)
    log = log or log_above_progress_bar
    started = time.perf_counter()
    own_cluster = not ray.is_initialized()
    if own_cluster:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        spec = job.weights_spec()
        layout = _actor_layout(ray, cpus_per_worker)
        existing = current_plan(job.output)
        count = existing.count if existing else (shards or 4 * layout["actors"])
        job, decision, plan = agree_on_plan(job, count, spec, None, log,
                                            decide=_decide_on_a_worker(ray, layout))
        if plan is None:
            return store_summary(job, started, up_to_date=True)
        pending = [s.index for s in shard_status(job.output, plan) if s.state != "done"]
        remaining = sum(len(plan.slice(i)) for i in pending)
        log(decision.line())
        log(f"ray: {layout['actors']} workers ({layout['describe']}) for {len(pending)} of "
            f"{plan.count} shards, {remaining:,} images")
        failed, workers = _run_shards(ray, job, plan.count, pending, remaining, layout,
                                      model_factory, retries, log)
        if failed:
            listed = "; ".join(f"shard {i}: {why}" for i, why in sorted(failed.items()))
            raise StoreError(
                f"{len(failed)} of {plan.count} shards failed after {retries} retries "
                f"({listed}); run the same command again to retry them (finished shards are "
                f"kept), or one at a time with `extract-features ... --shard I/{plan.count}`.")
        merged = merge_shards(job.output)
        summary = store_summary(job, started)
        summary.added = remaining
        summary.images_per_s = remaining / max(summary.elapsed_s, 1e-9)
        summary.notices.append(f"ray: {len(workers)} workers, {merged['shards']} shard files")
        summary.workers = workers
        return summary
    finally:
        if own_cluster:
            ray.shutdown()


def _decide_on_a_worker(ray, layout: dict):
    """decide_precision judging the hardware of a machine the actors get (a GPU node's,
    not the driver's), asked only when neither the store nor a plan has decided."""
    def hardware() -> precisions.Hardware:
        probe = ray.remote(**layout["options"])(precisions.this_machine)
        return ray.get(probe.remote())

    return functools.partial(decide_precision, hardware=hardware)


def _actor_layout(ray, cpus_per_worker: int | None) -> dict:
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if gpus:
        per = max(1, cpus // gpus)
        return {"actors": gpus, "options": {"num_gpus": 1, "num_cpus": per},
                "describe": f"one per GPU, {per} CPUs each"}
    per = max(1, min(cpus, cpus_per_worker or cpus))
    actors = max(1, cpus // per)
    return {"actors": actors, "options": {"num_cpus": per},
            "describe": f"no GPUs: {per} CPUs each"}


def _worker_class(ray):
    @ray.remote
    class ShardWorker:
        """Loads the backbone once, then runs whole shards."""

        def __init__(self, job: Job, model_factory):
            import os

            spec = job.weights_spec()
            kwargs = dict(backbone=job.backbone, layer=job.layer, dtype=job.dtype,
                          precision=job.precision, batch_size=job.batch_size)
            self.job = job
            self.model = (model_factory or _default_factory)(spec, **kwargs)
            self.gpus = [str(g) for g in ray.get_gpu_ids()]
            self.pid = os.getpid()

        def where(self) -> dict:
            return {"pid": self.pid, "gpus": self.gpus}

        def run(self, index: int, count: int, progress) -> dict:
            summary = run_shard(self.job, index, count, model=self.model,
                                log=lambda line: None,
                                advance=lambda n: progress.add.remote(n))
            return {"index": index, "rows": summary.rows, "added": summary.added,
                    "pid": self.pid, "gpus": self.gpus}

    return ShardWorker


def _default_factory(spec, **kwargs):
    from headstart.extract.backbone import Backbone

    return Backbone(spec, **kwargs)


def _progress_class(ray):
    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self):
            self.done = 0

        def add(self, n: int) -> None:
            self.done += n

        def get(self) -> int:
            return self.done

    return Progress


def _run_shards(ray, job: Job, count: int, pending: list[int], total: int, layout: dict,
                model_factory, retries: int, log) -> tuple[dict[int, str], list[dict]]:
    """Run `pending` shards on a pool of actors; returns (failed shard -> why, workers)."""
    from ray.exceptions import RayActorError, RayTaskError

    worker_class = _worker_class(ray).options(**layout["options"], max_concurrency=1)
    progress = _progress_class(ray).remote()
    queue, attempts, failed = deque(pending), dict.fromkeys(pending, 0), {}
    idle = [worker_class.remote(job, model_factory)
            for _ in range(min(layout["actors"], len(pending)))]
    running: dict = {}  # future -> (actor, shard index)
    seen: dict[int, dict] = {}
    with tqdm(total=total, unit="img", desc="extracting (ray)", file=sys.stderr,
              disable=not job.progress, smoothing=0.1) as bar:
        while queue or running:
            while queue and idle:
                actor, index = idle.pop(), queue.popleft()
                running[actor.run.remote(index, count, progress)] = (actor, index)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            bar.update(ray.get(progress.get.remote()) - bar.n)
            for future in ready:
                actor, index = running.pop(future)
                try:
                    result = ray.get(future)
                    seen.setdefault(result["pid"], {"pid": result["pid"], "gpus": result["gpus"],
                                                    "shards": []})["shards"].append(index)
                    idle.append(actor)
                except RayActorError as error:  # the actor's process died: replace, retry
                    attempts[index] += 1
                    log(f"ray: the worker running shard {index} died ({type(error).__name__});"
                        f" {'retrying' if attempts[index] <= retries else 'giving up'}")
                    idle.append(worker_class.remote(job, model_factory))
                    if attempts[index] <= retries:
                        queue.append(index)
                    else:
                        failed[index] = "its worker died"
                except RayTaskError as error:  # the shard itself failed (disk full, ...)
                    idle.append(actor)
                    cause = error.cause if getattr(error, "cause", None) else error
                    failed[index] = str(cause).splitlines()[0] if str(cause) else repr(cause)
        bar.update(ray.get(progress.get.remote()) - bar.n)
    for actor in idle:
        ray.kill(actor)
    return failed, sorted(seen.values(), key=lambda w: w["pid"])
