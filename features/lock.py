"""One writer per store: an advisory lock that the kernel drops when its holder dies.

`fcntl.flock` is released on process exit, kill -9 included, so a crashed run never
leaves a stale lock behind for the next run to trip over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from headstart.errors import StoreBusyError


def lock_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(store.name + ".lock")


@contextlib.contextmanager
def exclusive_lock(store: str | Path, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the store's lock for the block, or raise StoreBusyError.

    wait_s: how long to keep trying while another process holds it (0: refuse at once).
    """
    path = lock_path(store)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            raise StoreBusyError(
                f"Another extract-features is writing '{store}' (it holds '{path}'); "
                "wait for it to finish or write to another -o file."
            ) from None
        # The previous holder may have unlinked the file between our open and flock:
        # then we locked a dead inode, and must start over on the live one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
