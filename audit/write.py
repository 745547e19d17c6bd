"""Write an audit's folder: report.html, issues.csv, audit.json, replaced whole.

The folder is written aside and swapped in (headstart.outputs): a kill leaves the earlier
audit or the new one. Only an absent or empty folder, or an earlier audit, is replaced.
"""

from __future__ import annotations

from pathlib import Path

from headstart.audit import issues
from headstart.audit.report import write_report
from headstart.audit.run import Audit
from headstart.outputs import FolderKind, check_replaceable, replace_folder

REPORT, ISSUES, RECORD = "report.html", "issues.csv", "audit.json"
AUDIT_FOLDER = FolderKind("audit", RECORD, names=r"report\.html|issues\.csv|audit\.json",
                          formats=(issues.FORMAT,), legacy_keys=("store", "issues"))


def check_output_dir(out_dir: str | Path) -> Path:
    """`out_dir` as a Path; OutputError before any work when it may not be replaced."""
    check_replaceable(out_dir, AUDIT_FOLDER, parents=True)
    return Path(out_dir)


def write_audit(audit: Audit, out_dir: str | Path = "audit", *, max_shown: int = 50,
                thumbnails: bool = True) -> dict[str, Path]:
    """Write the files into `out_dir`, replaced whole, and return their paths by name.

    max_shown: groups or images per report section (issues.csv has all);
    thumbnails: False leaves the report's images empty (no pixel is decoded).
    Raises OutputError when `out_dir` holds anything but an earlier audit.
    """
    out = Path(out_dir)
    found = issues.collect(audit)

    def write(folder: Path) -> None:
        issues.write_csv(audit, found, folder / ISSUES)
        issues.write_json(issues.record(audit, found), folder / RECORD)
        write_report(audit, found, folder / REPORT, max_shown=max_shown,
                     thumbnails=thumbnails)

    replace_folder(out, AUDIT_FOLDER, write, parents=True)
    return {"issues": out / ISSUES, "record": out / RECORD, "report": out / REPORT}
