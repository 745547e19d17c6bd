"""The chunked HDF5 feature store: write (atomically, resumably), read, inspect."""

from .journal import PartWriter, consolidate, read_records, store_files
from .lock import StoreBusyError, exclusive_lock
from .reader import FeatureStore, StoreError, open_store, part_files, parts_dir
from .schema import Identity, sha256_file
from .store_file import write_store

__all__ = [
    "FeatureStore", "Identity", "PartWriter", "StoreBusyError", "StoreError", "consolidate",
    "exclusive_lock", "open_store", "part_files", "parts_dir", "read_records", "sha256_file",
    "store_files", "write_store",
]
