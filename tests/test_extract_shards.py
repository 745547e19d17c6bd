"""Sharded extraction as Slurm runs it: N worker processes side by side, then one merge."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import FakeBackbone, fake_cli, folder_with_reference

from headstart.errors import StoreError, UsageError
from headstart.extract import extract_features
from headstart.extract.sharding import parse_shard, slurm_shard
from headstart.features import open_store, part_files
from headstart.features.cli import merge_main
from headstart.features.shards import current_plan, merge_shards
from headstart.features.stitch import shard_path

FAST = ["--weights", "none", "-q", "--batch-size", "2", "--flush-every", "4"]


def slurm_env(task: int, count: int, low: int = 0, high: int | None = None) -> dict:
    """The variables Slurm sets for one task of `sbatch --array=low-high`."""
    high = count - 1 if high is None else high
    return {**os.environ, "SLURM_JOB_ID": str(1000 + task), "SLURM_ARRAY_JOB_ID": "999",
            "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count),
            "SLURM_ARRAY_TASK_MIN": str(low), "SLURM_ARRAY_TASK_MAX": str(high),
            "SLURM_CPUS_PER_TASK": "1"}


def start_array(folder, out, count, tasks=None, env_count=None, low=0, high=None, delay=0.0):
    """Start the array's tasks at the same moment, as a scheduler with free nodes does."""
    tasks = range(count) if tasks is None else tasks
    processes = []
    for task in tasks:
        env = slurm_env(task, env_count or count, low, high)
        env["HEADSTART_FAKE_DELAY"] = str(delay)
        processes.append(subprocess.Popen(fake_cli(folder, "-o", out, "--shard", "slurm", *FAST),
                                          env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    return processes


def finish_all(processes) -> None:
    for process in processes:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err


def snapshot(path):
    with open_store(path) as store:
        return store.paths, store.load_features(), store.skipped, store.labels.tolist()


def assert_same(actual, expected):
    a, b = snapshot(actual), snapshot(expected)
    assert a[0] == b[0] and len(set(a[0])) == len(a[0])  # same paths, same order
    assert a[2] == b[2]  # same skipped records
    assert a[3] == b[3]
    np.testing.assert_array_equal(a[1], b[1])  # bit-identical with the exact fake backbone


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return folder_with_reference(tmp_path_factory.mktemp("sharded"), 40, "Cat/empty.jpg", b"")


def test_three_slurm_tasks_side_by_side_then_merge_equal_one_process(folder, tmp_path):
    folder, reference = folder
    out = tmp_path / "features.h5"
    finish_all(start_array(folder, out, 3))
    plan = current_plan(out)
    assert plan.count == 3 and len(plan.todo) == 41  # one plan, whoever wrote it
    assert [shard_path(out, 0, i, 3).exists() for i in range(3)] == [True] * 3
    assert merge_main([str(out)]) == 0
    assert current_plan(out) is None
    assert_same(out, reference)
    with open_store(out) as store:
        assert len(store.shards) == 3


def test_a_killed_task_is_named_by_merge_and_its_rerun_resumes(folder, tmp_path, capsys):
    folder, reference = folder
    out = tmp_path / "features.h5"
    processes = start_array(folder, out, 3, delay=0.05)
    victim = processes[1]
    target = shard_path(out, 0, 1, 3)
    deadline = time.time() + 120
    while not part_files(target):
        assert victim.poll() is None and time.time() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    finish_all([processes[0], processes[2]])
    assert merge_main([str(out)]) == 2
    err = capsys.readouterr().err
    assert "1 of 3 shards of" in err and "shard 1: interrupted" in err
    assert "sbatch --array=1" in err
    # `sbatch --array=1`: Slurm now says the array has 1 task; the plan keeps N = 3.
    finish_all(start_array(folder, out, 3, tasks=[1], env_count=1, low=1, high=1))
    assert merge_main([str(out)]) == 0
    assert_same(out, reference)


def test_a_task_run_twice_by_a_retry_changes_nothing(folder, tmp_path):
    folder, reference = folder
    out = tmp_path / "features.h5"
    finish_all(start_array(folder, out, 2))
    shard = shard_path(out, 0, 0, 2)
    before = shard.read_bytes()
    finish_all(start_array(folder, out, 2, tasks=[0]))
    assert shard.read_bytes() == before
    merge_shards(out)
    assert_same(out, reference)


def test_new_images_go_to_a_second_generation_of_shards(folder, tmp_path):
    folder, _ = folder
    work = tmp_path / "pets"
    shutil.copytree(folder, work)
    out = tmp_path / "features.h5"
    finish_all(start_array(work, out, 2))
    merge_shards(out)
    for i, source in enumerate(sorted(work.rglob("00[01]*.jpg"))[:5]):
        shutil.copy(source, source.with_name(f"added-{i}.jpg"))
    (work / "Dog" / "0001.jpg").unlink()
    finish_all(start_array(work, out, 2))
    assert current_plan(out).generation == 1
    merge_shards(out)
    single = tmp_path / "single.h5"
    shutil.copytree(folder, tmp_path / "again")  # the same history, in one process
    extract_features(tmp_path / "again", single, weights="none", model=FakeBackbone(),
                     progress=False, log=lambda line: None)
    for i, source in enumerate(sorted((tmp_path / "again").rglob("00[01]*.jpg"))[:5]):
        shutil.copy(source, source.with_name(f"added-{i}.jpg"))
    (tmp_path / "again" / "Dog" / "0001.jpg").unlink()
    extract_features(tmp_path / "again", single, weights="none", model=FakeBackbone(),
                     progress=False, log=lambda line: None, single_file_limit=0)
    assert_same(out, single)
    paths = snapshot(out)[0]
    assert "Dog/0001.jpg" not in paths and sum("added-" in p for p in paths) == 5


def test_a_store_with_a_sharded_run_under_way_refuses_a_plain_run(folder, tmp_path):
    folder, _ = folder
    out = tmp_path / "features.h5"
    finish_all(start_array(folder, out, 2, tasks=[0]))
    with pytest.raises(StoreError, match="A sharded extraction of .* is under way .*"
                                         "merge-features"):
        extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False)
    with pytest.raises(UsageError, match="has 2 shards, not 3; run --shard I/2"):
        extract_features(folder, out, weights="none", model=FakeBackbone(), progress=False,
                         shard=(0, 3))


@pytest.mark.parametrize("text, expected", [("0/10", (0, 10)), ("9/10", (9, 10)),
                                            ("SLURM", "slurm")])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["10/10", "-1/4", "3", "a/b", "1/0"])
def test_parse_shard_refuses(text):
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def test_slurm_shard_from_the_array_variables():
    assert slurm_shard(slurm_env(3, 8)) == (3, 8)
    assert slurm_shard(slurm_env(7, 1, 7, 7), plan_count=8) == (7, 8)  # re-run of one task
    with pytest.raises(UsageError, match="needs SLURM_ARRAY_TASK_ID"):
        slurm_shard({})
    with pytest.raises(UsageError, match="needs a full array 0..N-1"):
        slurm_shard(slurm_env(3, 2, 3, 7))
    with pytest.raises(UsageError, match="outside the plan's 4 shards"):
        slurm_shard(slurm_env(5, 8), plan_count=4)


# A stand-in for Slurm's sbatch: runs an array's tasks side by side with the variables
# Slurm sets, waits for them (like --dependency=afterok), runs --wrap jobs after.
FAKE_SBATCH = r'''#!/usr/bin/env python3
import os, re, subprocess, sys
args = sys.argv[1:]
state = os.environ["FAKE_SLURM_STATE"]
job = len(os.listdir(state)) + 100
open(os.path.join(state, str(job)), "w").write(" ".join(args))
array = next((a.split("=", 1)[1] for a in args if a.startswith("--array=")), None)
wrap = args[args.index("--wrap") + 1] if "--wrap" in args else None
script = None if wrap else args[-1]
if array:
    ids = re.sub(r"%\d+$", "", array)
    tasks = []
    for part in ids.split(","):
        low, _, high = part.partition("-")
        tasks += list(range(int(low), int(high or low) + 1))
    log = lambda t: open(os.path.join(state, f"log-{job}-{t}"), "w")  # like --output
    procs = [subprocess.Popen(["bash", script], stdout=log(t), stderr=subprocess.STDOUT,
             env={**os.environ, "SLURM_JOB_ID": str(job), "SLURM_ARRAY_JOB_ID": str(job),
             "SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_COUNT": str(len(tasks)),
             "SLURM_ARRAY_TASK_MIN": str(min(tasks)), "SLURM_ARRAY_TASK_MAX": str(max(tasks))})
             for t in tasks]
    if any(p.wait() for p in procs):
        sys.exit("an array task failed")
elif wrap:
    subprocess.run(["bash", "-c", wrap], check=True, stdout=subprocess.DEVNULL)
print(job)
'''


def test_the_readme_slurm_scripts_run_as_slurm_runs_them(folder, tmp_path):
    """examples/slurm/submit.sh + extract.sbatch, with sbatch replaced by a stand-in."""
    import stat
    import sys

    from helpers import FAKE_CLI, REPO

    folder, reference = folder
    shims = tmp_path / "venv" / "bin"
    shims.mkdir(parents=True)
    (shims / "activate").write_text(f'export PATH="{shims}:$PATH"\n')
    (shims / "extract-features").write_text(
        f'#!/bin/bash\nexec {sys.executable} -c {shlex_quote(FAKE_CLI)} "$@"\n')
    (shims / "merge-features").write_text(
        f"#!/bin/bash\nexec {Path(sys.executable).with_name('merge-features')} \"$@\"\n")
    (shims / "sbatch").write_text(FAKE_SBATCH)
    for tool in ("extract-features", "merge-features", "sbatch"):
        (shims / tool).chmod((shims / tool).stat().st_mode | stat.S_IEXEC)
    scripts = tmp_path / "slurm"
    shutil.copytree(REPO / "examples" / "slurm", scripts)
    state = tmp_path / "state"
    state.mkdir()
    out = tmp_path / "features.h5"
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "FAKE_SLURM_STATE": str(state),
           "IMAGES": str(folder), "STORE": str(out), "VENV": str(tmp_path / "venv"),
           "EXTRACT_ARGS": "--weights none --batch-size 2 --flush-every 4"}
    done = subprocess.run(["bash", str(scripts / "submit.sh"), "3", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.read_text() for p in state.iterdir() if not p.name.startswith("log-"))
    assert any("--array=0-2%2" in j for j in jobs)
    assert any("--dependency=afterok:100" in j for j in jobs), jobs
    assert_same(out, reference)


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
