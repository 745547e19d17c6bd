"""The chunked HDF5 feature store: write (atomically, resumably), stitch, read, inspect."""

from headstart.errors import StoreBusyError, StoreError
from headstart.features.journal import Entry, PartWriter, read_records, store_files
from headstart.features.lock import exclusive_lock
from headstart.features.reader import FeatureStore, open_store, part_files, parts_dir
from headstart.features.schema import Identity, Skipped, sha256_file
from headstart.features.stitch import SINGLE_FILE_LIMIT, consolidate, shards_dir
from headstart.features.store_file import write_store

__all__ = [
    "SINGLE_FILE_LIMIT", "Entry", "FeatureStore", "Identity", "PartWriter", "Skipped",
    "StoreBusyError", "StoreError", "consolidate", "exclusive_lock", "open_store", "part_files",
    "parts_dir", "read_records", "sha256_file", "shards_dir", "store_files", "write_store",
]
