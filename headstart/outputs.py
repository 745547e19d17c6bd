"""Folders and files that commands write, replaced whole and only when headstart wrote them.

Every folder a command writes (a head, an export or fine-tune, an audit, a fine-tune's
checkpoint) is one `FolderKind`. The rules, the same for each:

- **Only headstart's own folder is replaced.** An output folder must be absent, empty, or
  hold a folder of the same kind that headstart wrote: its descriptor file (head.json,
  export.json, audit.json, state.json) reads as that kind's, and every entry in it is one
  that kind writes. Anything else is refused in one sentence, before any work, and
  nothing in it is touched (`check_replaceable`).
- **Written aside, swapped in whole.** The new folder is written into a hidden sibling
  `.NAME.tmp-PID` and swapped with the old one by one atomic `renameat2(RENAME_EXCHANGE)`
  where the platform has it (Linux 3.15+, on most file systems), else by two renames
  (`NAME` -> `.NAME.old-PID`, then the new one -> `NAME`). A kill at any moment leaves
  the old folder or the new one at NAME, or (between the two renames) none at NAME and
  the old one at `.NAME.old-PID`, which the next run or load puts back (`recover`).
- **Files are written aside too.** `replace_file` writes `.NAME.tmp-PID`, fsyncs it and
  renames it over NAME: a crash leaves the old file or the new one, never a mix.

Only names of this module's pattern whose process is gone are ever removed by `recover`
and `staging_dir`; a folder of the user's is never removed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from headstart import faults
from headstart.errors import OutputError

T = TypeVar("T")


@dataclass(frozen=True)
class FolderKind:
    """One kind of output folder: what it is called, its descriptor and the entries it holds.

    names: a regular expression that every top-level entry of such a folder matches
        (`re.fullmatch`); descriptor: the file that says the folder is this kind's;
    formats: the descriptor's "format" values of this kind; legacy_keys: for folders
        written before descriptors carried a format, keys that such a descriptor holds.
    """

    noun: str
    descriptor: str
    names: str
    formats: tuple[str, ...] = ()
    legacy_keys: tuple[str, ...] = ()

    def owns(self, folder: Path) -> bool:
        """True when `folder` is a folder of this kind that headstart wrote, and nothing else."""
        try:
            entries = [entry.name for entry in os.scandir(folder)]
        except OSError:
            return False
        if not entries:
            return True
        if not all(re.fullmatch(self.names, name) for name in entries):
            return False
        return self._descriptor_is_ours(folder / self.descriptor)

    def _descriptor_is_ours(self, path: Path) -> bool:
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
                return False
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        if not isinstance(data, dict):
            return False
        if data.get("format") in self.formats:
            return True
        return bool(self.legacy_keys) and "format" not in data and all(
            key in data for key in self.legacy_keys)


def check_replaceable(folder: str | Path, kind: FolderKind, *, option: str = "-o",
                      parents: bool = False) -> None:
    """Refuse, before any work, an output folder that headstart may not replace.

    Puts back a folder that a run killed between the two renames of a swap left aside.
    parents: folders above `folder` may be missing (replace_folder creates them); else
        its parent must exist.
    Raises OutputError when `folder` is a file, holds anything but one earlier `kind`
    folder, or its parent folder does not exist (or cannot be created).
    """
    folder = Path(folder)
    recover(folder, kind)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise OutputError(
            f"'{folder}' is a file or a link, not a folder; give {option} a new folder name "
            f"for the {kind.noun}.")
    if folder.is_dir() and not kind.owns(folder):
        raise _not_ours(folder, kind, option)
    parent = folder.absolute().parent
    if parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"The folder '{parent}' for '{folder}' does not exist or is not a "
                          "folder; create it first.")


def _not_ours(folder: Path, kind: FolderKind, option: str) -> OutputError:
    return OutputError(
        f"'{folder}' already holds files that are not a headstart {kind.noun} (only an "
        f"empty folder or an earlier {kind.noun} is replaced); give {option} another "
        "folder, or move those files away.")


def replace_folder(folder: str | Path, kind: FolderKind, write: Callable[[Path], T], *,
                   parents: bool = False) -> T:
    """Call write(staging folder), then swap the result in at `folder` whole; returns its value.

    The caller checked `folder` with check_replaceable before its work; it is checked
    again here, so that a folder made meanwhile is never replaced. Raises OutputError.
    """
    folder = Path(folder)
    check_replaceable(folder, kind, parents=parents)
    if parents:
        try:
            folder.absolute().parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"Cannot create the folder for '{folder}' ({error.strerror}); "
                              "give a folder you can write to.") from None
    staging = staging_dir(folder)
    try:
        value = write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_tree(staging)
    publish(staging, folder, kind)
    return value


def staging_dir(folder: Path) -> Path:
    """A fresh hidden sibling `.NAME.tmp-PID` of `folder`; those of dead runs are removed."""
    parent, prefix = folder.absolute().parent, f".{folder.name}.tmp-"
    for stale in _leftovers(parent, prefix):
        shutil.rmtree(stale, ignore_errors=True)
    staging = parent / f"{prefix}{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def publish(staging: Path, folder: Path, kind: FolderKind) -> None:
    """Put the finished `staging` folder at `folder`, replacing an earlier one of `kind` whole."""
    folder = folder.absolute()
    if not folder.exists():
        os.rename(staging, folder)
        faults.point("publish:renamed-new")
        _fsync_dir(folder.parent)
        return
    if folder.is_symlink() or not kind.owns(folder):  # made or filled since the check
        shutil.rmtree(staging, ignore_errors=True)
        raise _not_ours(folder, kind, "-o")
    if exchange(staging, folder):
        faults.point("publish:exchanged")
        _fsync_dir(folder.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder
        return
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.rename(folder, old)
    faults.point("publish:renamed-old")
    os.rename(staging, folder)
    faults.point("publish:renamed-new")
    _fsync_dir(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(folder: str | Path, kind: FolderKind) -> None:
    """Finish what a killed swap of `folder` left: put the old folder back, or remove it.

    `.NAME.old-PID` of a dead process is renamed back to NAME when NAME is missing, and
    removed when NAME is there and it is a folder of `kind` (the swap had finished).
    """
    folder = Path(folder).absolute()
    for old in _leftovers(folder.parent, f".{folder.name}.old-"):
        if not os.path.lexists(folder):
            os.rename(old, folder)
            _fsync_dir(folder.parent)
        elif kind.owns(old):
            shutil.rmtree(old, ignore_errors=True)


def replace_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(temporary path) beside `path`, fsync it and rename it over `path`.

    A crash leaves the old file or the new one whole. Raises OutputError when `path` is
    a folder or its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"'{path}' is a folder; give a file name.")
    if not path.absolute().parent.is_dir():
        raise OutputError(f"The folder '{path.absolute().parent}' for '{path}' does not "
                          "exist; create it first.")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.absolute().parent)
    return path


def exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` atomically (Linux renameat2 with RENAME_EXCHANGE).

    Returns False where the platform or the file system has no such call; raises
    OSError for other failures.
    """
    function = _renameat2()
    if function is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if function(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)),
                rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(b))


_RENAMEAT2: list = []


def _renameat2():
    if not _RENAMEAT2:
        function = None
        if sys.platform.startswith("linux"):
            try:
                function = ctypes.CDLL(None, use_errno=True).renameat2
                function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_char_p, ctypes.c_uint]
                function.restype = ctypes.c_int
            except (OSError, AttributeError):
                function = None
        _RENAMEAT2.append(function)
    return _RENAMEAT2[0]


def _leftovers(parent: Path, prefix: str) -> list[Path]:
    """Entries `<prefix><pid>` in `parent` whose process is no longer running."""
    try:
        names = [entry.name for entry in os.scandir(parent)]
    except OSError:
        return []
    found = []
    for name in names:
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            found.append(parent / name)
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, so that the swap publishes data on disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(root))
