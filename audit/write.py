"""Write an audit's three files: report.html, issues.csv, audit.json (each atomically)."""

from __future__ import annotations

from pathlib import Path

from headstart.audit import issues
from headstart.audit.report import write_report
from headstart.audit.run import Audit

REPORT, ISSUES, RECORD = "report.html", "issues.csv", "audit.json"


def write_audit(audit: Audit, out_dir: str | Path = "audit", *, max_shown: int = 50,
                thumbnails: bool = True) -> dict[str, Path]:
    """Write the files into `out_dir` (created) and return their paths by name.

    max_shown: groups or images per report section (issues.csv has all);
    thumbnails: False leaves the report's images empty (no pixel is decoded).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = issues.collect(audit)
    paths = {"issues": issues.write_csv(audit, found, out / ISSUES),
             "record": issues.write_json(issues.record(audit, found), out / RECORD)}
    paths["report"] = write_report(audit, found, out / REPORT, max_shown=max_shown,
                                   thumbnails=thumbnails)
    return paths
