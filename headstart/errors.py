"""Every error a user can cause or fix, in one place, and the exit status each one gives.

Each command prints one of these as a single sentence (what went wrong, which file, what
to do) and exits with the status of its kind; the statuses are the same in every command:

    0    success
    1    a check the user asked for failed (fit-head --assert-min-accuracy)
    2    bad input: an argument, folder, label file, store, head or weights file
    3    busy: another program holds the store; wait for it or close it, then re-run
    4    the machine failed the run: disk full, file-size limit, I/O error; free space or
         fix the file system and run the same command again (nothing committed is lost)
    130  interrupted (Ctrl-C); what was computed is committed, the same command resumes

Anything else is a bug and keeps its traceback. User errors also derive from the
built-in type a caller would expect (ValueError for bad values, ImportError for a
missing optional package), so existing `except` clauses keep working.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUSY = 3
EXIT_SYSTEM = 4
EXIT_INTERRUPTED = 130


class HeadstartError(Exception):
    """Base of every error caused by input or circumstances, never by a bug."""

    exit_status = EXIT_BAD_INPUT


class UsageError(HeadstartError, ValueError):
    """An option value out of its declared range, found before any work starts."""


class FolderError(HeadstartError, ValueError):
    """The image folder cannot be used at all; the message says what to do."""


class LabelsError(HeadstartError, ValueError):
    """A label source (CSV file, file-name pattern) that gives no usable labels."""


class StoreError(HeadstartError, ValueError):
    """A store that is missing, unfinished, foreign or damaged; the message says what to do."""


class StoreBusyError(StoreError):
    """Another process is writing the same store, or another program holds it open."""

    exit_status = EXIT_BUSY


class WeightsError(HeadstartError, ValueError):
    """Weights that cannot be found, loaded, or matched to a store."""


class ClassifyError(HeadstartError, ValueError):
    """Bad input for fitting, predicting or exporting a head."""


class HeadError(ClassifyError):
    """A head file that is missing, damaged, or does not match the features it is given."""


class OutputError(HeadstartError, ValueError):
    """An output folder or file that headstart may not write or replace (it holds others' files)."""


class MissingExtraError(HeadstartError, ImportError):
    """An optional package is not installed; the message names the `pip install` to run."""


class CheckFailed(HeadstartError):
    """A result below a bar the user set (e.g. --assert-min-accuracy)."""

    exit_status = EXIT_CHECK_FAILED


class Interrupted(HeadstartError):
    """Ctrl-C stopped the run after committing everything already computed."""

    exit_status = EXIT_INTERRUPTED


class HeadstartWarning(UserWarning):
    """Something the user should know that does not stop the command (one line on stderr)."""


class StoreGrowing(HeadstartWarning):
    """The store is being appended to by a running extraction; its earlier rows are read."""


def missing_extra(package: str, extra: str, purpose: str) -> MissingExtraError:
    """The error for an absent optional dependency, naming the exact install command."""
    return MissingExtraError(
        f"{purpose} needs the optional package '{package}', which is not installed; "
        f"run `pip install \"headstart[{extra}]\"`."
    )
