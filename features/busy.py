"""Tell a busy store from a damaged one: HDF5's file lock, and who holds it.

HDF5 (1.10+) takes an flock on every file it opens: shared for reading, exclusive for
writing. A store open for writing elsewhere (`h5py.File(path, "r+")` in a notebook,
HDFView) therefore cannot be opened at all, and h5py reports that as an OSError with
errno EAGAIN: a busy file, not a damaged one. On file systems without locking (some NFS
and Lustre mounts) the lock call itself fails with ENOLCK or ENOSYS; HDF5's documented
remedy is to open without locking, which is what readers here do.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

LOCK_CONFLICT = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
LOCK_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def _lock_errno(error: OSError) -> int | None:
    """The errno of a failed HDF5 file lock (h5py puts it in the message), else None."""
    text = str(error)
    if "unable to lock file" not in text:
        return None
    if error.errno:
        return error.errno
    try:
        return int(text.split("errno = ", 1)[1].split(",", 1)[0])
    except (IndexError, ValueError):
        return None


def is_lock_conflict(error: OSError) -> bool:
    """True when the open failed because another process holds the file's lock."""
    return _lock_errno(error) in LOCK_CONFLICT


def is_lock_unsupported(error: OSError) -> bool:
    """True when the file system cannot lock at all (ENOLCK, ENOSYS)."""
    return _lock_errno(error) in LOCK_UNSUPPORTED


def lock_holders(path: str | Path) -> list[str]:
    """'pid 123 (python3 notebook.py)' for each process holding a lock on `path` (Linux).

    Read from /proc/locks (inode match); empty where the OS cannot tell.
    """
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    holders = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] not in ("FLOCK", "POSIX", "OFDLCK"):
            continue
        pid, where = fields[4], fields[5]
        if where.rsplit(":", 1)[-1] == str(inode) and pid.isdigit() and pid != str(os.getpid()):
            holders.append(f"pid {pid} ({_command(pid)})")
    return sorted(set(holders))


def _command(pid: str) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        text = " ".join(w.decode(errors="replace") for w in words if w)
        return text[:80] or "unknown"
    except OSError:
        return "unknown"


def locked_message(path: str | Path, *, changed_nothing: bool = False) -> str:
    """One sentence: the store is locked by another program, which one, and what to do."""
    holders = lock_holders(path)
    who = f" ({', '.join(holders)})" if holders else ""
    changed = ", so nothing was changed" if changed_nothing else ""
    return (
        f"'{path}' is locked by another program{who} that opened it for writing (a notebook's "
        f"h5py.File(..., 'r+'), HDFView){changed}; close it there and run the same command "
        "again (on a file system without locking, set HDF5_USE_FILE_LOCKING=FALSE)."
    )
