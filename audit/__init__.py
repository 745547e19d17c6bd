"""Data audit of a feature store: duplicates, leakage across splits, label errors, outliers.

    from headstart.audit import audit_store, write_audit
    result = audit_store("features.h5", seed=0)       # the split fit-head would use
    write_audit(result, "audit")                      # report.html, issues.csv, audit.json

Everything is computed from the stored rows and sha256 hashes; pixels are decoded only
for the report's thumbnails, and no file is ever changed or deleted.
"""

from headstart.audit.run import Audit, audit_store
from headstart.audit.write import write_audit

__all__ = ["Audit", "audit_store", "write_audit"]
