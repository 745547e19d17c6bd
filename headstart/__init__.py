"""headstart: transfer learning from precomputed VGG16 features.

Stages, each its own subpackage: ``headstart.extract`` (images -> fc2 rows),
``headstart.features`` (the HDF5 store), ``headstart.classify`` (heads on stored rows).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("headstart")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
