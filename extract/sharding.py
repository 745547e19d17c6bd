"""Which shard this process runs: `--shard I/N`, or `--shard slurm` from a Slurm job array.

Slurm runs each task of `sbatch --array=0-(N-1)` as its own process with
SLURM_ARRAY_TASK_ID set (and SLURM_ARRAY_TASK_COUNT, _MIN and _MAX). The task id is the
shard index. The shard count comes from the plan once one exists, so re-running only the
failed tasks (`sbatch --array=3,7 ...`, where Slurm's count is 2) keeps N; before the
plan exists it is the array's size, which must then be a full 0..N-1 range.
"""

from __future__ import annotations

from collections.abc import Mapping

from headstart.errors import UsageError


def parse_shard(text: str) -> tuple[int, int] | str:
    """'3/10' -> (3, 10); 'slurm' -> 'slurm'. UsageError otherwise."""
    if text.strip().lower() == "slurm":
        return "slurm"
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/N (e.g. 0/10) or 'slurm', got {text!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: need N >= 1 and 0 <= I < N (shards count from 0).")
    return index, count


def slurm_shard(environ: Mapping[str, str], plan_count: int | None = None) -> tuple[int, int]:
    """(index, count) of this Slurm array task; see the module docstring."""
    task = environ.get("SLURM_ARRAY_TASK_ID")
    if task is None:
        raise UsageError("--shard slurm needs SLURM_ARRAY_TASK_ID: run it inside "
                         "`sbatch --array=0-(N-1)`, or give the shard as --shard I/N.")
    index = int(task)
    if plan_count is not None:
        count = plan_count
    else:
        low = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        high = int(environ.get("SLURM_ARRAY_TASK_MAX", task))
        count = int(environ.get("SLURM_ARRAY_TASK_COUNT", high - low + 1))
        if low != 0 or count != high + 1:
            raise UsageError(
                f"The first run of a sharded extraction needs a full array 0..N-1 (got "
                f"--array with ids {low}..{high}, {count} tasks); submit `sbatch --array=0-"
                f"{high}` so that N is known, then re-run single failed ids as needed.")
    if not 0 <= index < count:
        raise UsageError(f"SLURM_ARRAY_TASK_ID {index} is outside the plan's {count} shards "
                         f"(0..{count - 1}).")
    return index, count
