"""The one runner every command goes through: parse, run, turn user errors into one line.

`run_command` maps each HeadstartError to its exit status (see headstart.errors), and an
OSError of the machine (disk full, file-size limit, I/O) to status 4 with the advice to
run the same command again. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from collections.abc import Callable

from headstart.errors import (
    EXIT_INTERRUPTED,
    EXIT_SYSTEM,
    HeadstartError,
    HeadstartWarning,
    Interrupted,
)

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def os_error_sentence(error: OSError) -> str:
    """One sentence for an OSError of the machine, saying that nothing committed is lost."""
    where = f" ('{error.filename}')" if error.filename else ""
    if error.errno in DISK_FULL or "No space left" in str(error):
        return (f"Ran out of disk space{where} ({error.strerror or error}); free some space and "
                "run the same command again: everything committed so far is kept.")
    return (f"{error.strerror or error}{where}; fix that and run the same command again: "
            "everything committed so far is kept.")


def run_command(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], int | None],
                argv: list[str] | None = None) -> int:
    """Parse `argv`, call `main(args)`, and return the exit status (printing one line on error)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse already printed (status 2)
        return int(exit_.code or 0)
    # Pillow warns about odd-but-readable files; they are decoded, and bad ones are reported.
    warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
    with warnings.catch_warnings():
        warnings.simplefilter("always", HeadstartWarning)  # headstart's notices: one line each
        warnings.showwarning = _notice_printer(parser.prog, warnings.showwarning)
        return _run(parser, main, args)


def _notice_printer(prog: str, fallback):
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HeadstartWarning):
            print(f"{prog}: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


def _run(parser: argparse.ArgumentParser, main, args: argparse.Namespace) -> int:
    try:
        return int(main(args) or 0)
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return EXIT_INTERRUPTED
    except HeadstartError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return error.exit_status
    except OSError as error:
        print(f"{parser.prog}: {os_error_sentence(error)}", file=sys.stderr)
        return EXIT_SYSTEM
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
