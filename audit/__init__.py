"""Data audit of a feature store: duplicates, leakage across splits, label errors, outliers.

    from headstart.audit import audit_store, write_audit
    result = audit_store("features.h5", seed=0)       # the split fit-head would use
    write_audit(result, "audit")                      # report.html, issues.csv, audit.json

Everything is computed from the stored rows and sha256 hashes; pixels are decoded only
for the report's thumbnails, and no file is ever changed or deleted. Importing this
package imports nothing heavy: the names below are imported when first used (PEP 562).
"""

from importlib import import_module

_HOMES = {"Audit": "run", "audit_store": "run", "write_audit": "write"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(f"headstart.audit.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'headstart.audit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
