"""extract-features as a user runs it: real processes, real signals, one-sentence errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import EXIT_BUSY
from headstart.features import open_store, part_files

CLI = [sys.executable, "-m", "headstart.extract.cli"]
# What these tests check (signals, locks, parts) does not depend on the backbone: a small
# real one keeps each process short. VGG16's rows are checked in test_extract_run.py.
FAST = ["--backbone", "MobileNetV3Small", "--weights", "none", "--batch-size", "4",
        "--flush-every", "4", "-q"]


def extract(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_parts(store: Path, process: subprocess.Popen, count: int = 1,
                   timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while len(part_files(store)) < count:
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "no part file appeared"
        time.sleep(0.05)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def assert_same_store(actual: Path, expected: Path) -> None:
    with open_store(actual) as a, open_store(expected) as b:
        assert a.paths == b.paths and len(set(a.paths)) == len(a.paths)
        assert a.skipped == b.skipped
        # Same images, possibly different batch boundaries: float32 round-off only.
        np.testing.assert_allclose(a.load_features(), b.load_features(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sample photos twice (56, so a run lasts long enough to be interrupted) plus one
    empty file, and the store of an uninterrupted run."""
    import shutil

    from helpers import SAMPLE_PETS

    root = tmp_path_factory.mktemp("ref")
    folder = Path(shutil.copytree(SAMPLE_PETS, root / "pets",
                                  ignore=shutil.ignore_patterns("*.md")))
    for photo in sorted(folder.rglob("*.jpg")):
        shutil.copy(photo, photo.with_name(f"copy-{photo.name}"))
    (folder / "Cat" / "666.jpg").write_bytes(b"")
    extract(str(folder), "-o", str(root / "ref.h5"), *FAST)
    return folder, root / "ref.h5"


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    folder, expected = reference
    out = tmp_path / "f.h5"
    process = start(str(folder), "-o", str(out), *FAST)
    wait_for_parts(out, process, count=2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    with open_store(part_files(out)[0], require_complete=False) as part:  # readable after the kill
        assert part.n_rows > 0
    rerun = extract(str(folder), "-o", str(out), *FAST)
    assert "new this run" in rerun.stdout
    assert_same_store(out, expected)
    assert part_files(out) == [] and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_ctrl_c_commits_says_how_to_resume_and_exits_130(reference, tmp_path):
    folder, expected = reference
    out = tmp_path / "f.h5"
    process = start(str(folder), "-o", str(out), *FAST)
    wait_for_parts(out, process)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130, err
    assert "images are stored in" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    extract(str(folder), "-o", str(out), *FAST)
    assert_same_store(out, expected)


@pytest.mark.parametrize("args, message", [
    (["no-such-dir"], "Image folder 'no-such-dir' does not exist."),
    (["{pets}", "--weights", "missing.h5"], "Weights file 'missing.h5' does not exist"),
    (["{pets}", "-o", "{tmp}"], "is a directory; pass a file name"),
], ids=["missing-dir", "missing-weights", "output-is-dir"])
def test_user_errors_are_one_sentence_and_exit_2(tmp_path, args, message):
    from helpers import SAMPLE_PETS

    args = [a.format(tmp=tmp_path, pets=SAMPLE_PETS) for a in args]
    done = extract(*args, "-q", check=False)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_help_names_every_option():
    done = extract("--help")
    for option in ("--weights", "--batch-size", "--dtype", "--flush-every", "-o"):
        assert option in done.stdout


@pytest.mark.slow
def test_while_a_run_is_under_way_parts_are_readable_and_a_second_writer_is_refused(
        reference, tmp_path):
    """Every committed part is a valid store the moment it appears (plain h5py can open it);
    a second extract-features on the same output is refused at once; the first finishes."""
    import h5py

    folder, expected = reference
    out = tmp_path / "f.h5"
    process = start(str(folder), "-o", str(out), *FAST)
    wait_for_parts(out, process)
    second = extract(str(folder), "-o", str(out), *FAST, check=False)
    assert second.returncode == EXIT_BUSY  # 3: busy, try again later
    assert "Another extract-features is writing" in second.stderr
    with open_store(expected) as store:
        dim = store.features.shape[1]
    seen = 0
    while process.poll() is None:
        for part in part_files(out):
            try:
                with h5py.File(part, "r") as handle:
                    assert handle["features"].shape[1] == dim
                    seen += 1
            except OSError:
                # Consolidated and removed between listing and opening (h5py reports a
                # vanished file as FileNotFoundError or as "can't retrieve stat info").
                if part.exists():
                    raise
        time.sleep(0.02)
    assert finish(process)[0] == 0
    assert seen > 0
    assert_same_store(out, expected)
