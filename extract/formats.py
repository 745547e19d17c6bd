"""Which files are images: whatever the installed Pillow can decode, plus HEIC/HEIF.

The list comes from Pillow's own registry (`PIL.Image.registered_extensions()`, limited
to formats Pillow can open and actually decode), so `.jfif`, `.jpe`, `.avif` and what the
next Pillow adds are recognised without a code change. Left out of the registry's list:
Pillow's stub formats (HDF5, GRIB, BUFR, WMF without a handler: identified, never
decoded), MPEG (a video header) and EPS without Ghostscript.

HEIC/HEIF (iPhone photos) is decoded by the `pillow-heif` plugin, an optional extra:
its wheels bundle libheif, libde265 and the GPL-licensed x265 encoder, which most
folders of JPEGs never need. Its extensions are always recognised; without the plugin
such a file is skipped with a reason naming the `pip install`, never dropped.

Known system files (`.DS_Store`, `Thumbs.db`, `desktop.ini`, AppleDouble `._*` files)
and hidden folders are passed over silently; every other non-image file is counted.
"""

from __future__ import annotations

import functools
import os

from PIL import EpsImagePlugin, Image, ImageFile

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
HEIF_MISSING = ("HEIC/HEIF images need the optional package pillow-heif: run "
                "`pip install \"headstart[heif]\"`")
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})
NOT_DECODED = frozenset({"MPEG"})  # Pillow identifies these but cannot produce pixels


def register_heif() -> bool:
    """Register pillow-heif's HEIF opener with Pillow; False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_AVAILABLE = register_heif()


def _decodable(fmt: str) -> bool:
    factory = Image.OPEN.get(fmt, (None,))[0]
    if factory is None or fmt in NOT_DECODED:
        return False
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return False
    if fmt == "EPS":
        return bool(EpsImagePlugin.has_ghostscript())
    return True


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions (".jpg", ...) of every format this Pillow can decode, and HEIF."""
    Image.init()
    found = {ext.lower() for ext, fmt in Image.registered_extensions().items() if _decodable(fmt)}
    return frozenset(found | HEIF_EXTENSIONS)


def extension(name: str) -> str:
    """".jpg" for "IMG.JPG"; "" for a name without one."""
    return os.path.splitext(name)[1].lower()


def is_system_file(name: str) -> bool:
    """Files operating systems leave in folders, passed over without a word."""
    return name.lower() in SYSTEM_FILES or name.startswith("._")


def is_image_name(name: str) -> bool:
    """A visible file whose extension is an image format this installation recognises."""
    # For a name not starting with ".", its last "." starts what os.path.splitext calls
    # the extension; sliced directly, as this runs once per file of every scan.
    dot = name.rfind(".")
    return dot > 0 and name[0] != "." and name[dot:].lower() in image_extensions()


def left_out_kind(name: str) -> str | None:
    """How a non-image file is counted in the summary ('.txt', 'hidden', ...), None if silent."""
    if is_system_file(name):
        return None
    if name.startswith("."):
        return "hidden"
    return extension(name) or "no extension"


def heif_unavailable(name: str) -> bool:
    """A HEIC/HEIF file that cannot be decoded because pillow-heif is missing."""
    return not HEIF_AVAILABLE and extension(name) in HEIF_EXTENSIONS
