"""Decoding one image file into model-ready pixels.

Every image goes through one pipeline, recorded in the store as `RESIZE`:
EXIF orientation -> first frame -> 8-bit RGB (16-bit scaled, alpha composited on white)
-> size x size (the backbone's input size) with PIL's bilinear filter (KerasHub presets:
their ImageConverter's resize instead, `headstart.extract.hub`). JPEGs are decoded
at reduced size first (DCT scaling via `Image.draft`) when they are at least twice the
target size, which is what keeps large photos cheap. The backbone's own
`preprocess_input` is applied later, on batches.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

# What decoding does (every backbone), then the resize of keras.applications backbones;
# a KerasHub preset's converter resize follows DECODE instead (hub.ConverterResize).
DECODE = "exif-transpose, first frame, RGB (16-bit scaled, alpha on white), JPEG draft"
RESIZE = f"{DECODE}, PIL bilinear"
MAX_PIXELS = 100_000_000  # refuse decompression bombs above 100 megapixels
# Largest image file read, in bytes (extract-features --max-file-size MB raises it): a
# file is read whole into memory by each decoding thread, so this bounds their memory.
# 256 MB holds any camera JPEG, PNG or HEIC and an uncompressed 8-bit 80-megapixel TIFF.
MAX_FILE_BYTES = 256 << 20
STRIP_ROWS = 256  # rows converted at a time from 16/32-bit and float images


class UnreadableImageError(Exception):
    """A file that looks like an image but cannot be decoded; str() is the reason."""


class FileBytes(NamedTuple):
    """A file's content and what the store records about it."""

    data: bytes
    sha256: str  # hex
    size: int  # bytes, from stat before reading
    mtime_ns: int  # from the same stat: a later change shows as a newer mtime


def read_file(path: str | Path, max_bytes: int | None = None) -> FileBytes:
    """The bytes of a regular file, their hex sha256 and its stat.

    Only regular files are read (a link is followed to one): a FIFO, a device such as
    /dev/zero, a socket or a folder is refused without reading, and so is a file larger
    than `max_bytes` (default MAX_FILE_BYTES). Raises UnreadableImageError with the
    reason, for those and for OS errors.
    """
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError as error:
        raise UnreadableImageError(f"cannot read file: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImageError(f"not a regular file ({_kind(info.st_mode)}); only "
                                       "regular files are read")
        if info.st_size > limit:
            raise UnreadableImageError(
                f"{info.st_size / 1e6:,.0f} MB, larger than the {limit / 1e6:,.0f} MB limit "
                "(raise it with extract-features --max-file-size MB)")
        # One read of the size fstat gave, plus a byte to see a file that grew: os.read
        # allocates what it is asked for, so never ask for more than the file holds. A
        # short read of a regular file is its end.
        ask = min(info.st_size + 1, limit + 1)
        chunks = [os.read(fd, ask)]
        total = len(chunks[0])
        while len(chunks[-1]) == ask and total <= limit:  # it grew
            ask = min(1 << 16, limit + 1 - total)
            chunks.append(os.read(fd, ask))
            total += len(chunks[-1])
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as error:
        raise UnreadableImageError(f"cannot read file: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while being read
        raise UnreadableImageError(f"grew past the {limit / 1e6:,.0f} MB limit while read")
    return FileBytes(data, hashlib.sha256(data).hexdigest(), info.st_size, info.st_mtime_ns)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def decode_pixels(data: bytes, size: int = 224,
                  resize: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Model-ready RGB pixels of an encoded image; UnreadableImageError if not.

    Returns uint8 (size, size, 3) squashed with PIL's bilinear filter, or, with `resize`
    (a KerasHub preset's converter geometry, `headstart.extract.hub.ConverterResize`),
    whatever `resize` makes of the upright uint8 RGB image at its own aspect ratio
    (float32 (size, size, 3) for a converter). JPEG DCT scaling applies to both.
    """
    if not data:
        raise UnreadableImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UnreadableImageError(
                    f"{image.width}x{image.height} pixels exceeds the {MAX_PIXELS:,}-pixel limit"
                )
            if image.format == "JPEG" and min(image.size) >= 2 * size:
                image.draft("RGB", (size, size))
            image.load()
            image = _upright(image)
            rgb = to_rgb8(image)
            if resize is not None:
                return resize(np.asarray(rgb, dtype=np.uint8))
            return np.asarray(rgb.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError as error:
        raise UnreadableImageError(f"decompression bomb: {error}") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImageError(
            "not an image Pillow can identify (corrupt or another format)"
        ) from None
    except Exception as error:  # noqa: BLE001 - any decoder failure means "this file is unreadable"
        raise UnreadableImageError(f"{type(error).__name__}: {error}") from None


# EXIF orientation -> the transpose that displays the image upright (EXIF 2.32, tag 0x0112;
# the same table as PIL.ImageOps.exif_transpose).
ORIENTATION_TAG = 0x0112
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF Orientation value (1-8), read even when other tags of the block are damaged.

    Pillow's parser reads tags lazily, so a broken neighbour tag (e.g. an SRATIONAL of
    -1/0, on which `ImageOps.exif_transpose` raises struct.error) does not hide this one;
    if Pillow cannot parse the block at all, IFD0 is scanned for the tag directly.
    """
    try:
        value = image.getexif().get(ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a damaged block: fall back to scanning it
        value = _scan_orientation(image.info.get("exif") or b"")
    try:
        value = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value in range(1, 9) else None


def _scan_orientation(raw: bytes) -> int | None:
    """Orientation from the raw EXIF/TIFF bytes: walk IFD0's 12-byte entries for tag 0x0112."""
    import struct

    if raw.startswith(b"Exif\x00\x00"):
        raw = raw[6:]
    order = {b"II": "<", b"MM": ">"}.get(raw[:2])
    if order is None or len(raw) < 8:
        return None
    try:
        offset = struct.unpack(order + "I", raw[4:8])[0]
        count = struct.unpack(order + "H", raw[offset:offset + 2])[0]
        for i in range(count):
            entry = raw[offset + 2 + 12 * i: offset + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == ORIENTATION_TAG and kind == 3:  # SHORT
                return struct.unpack(order + "H", entry[8:10])[0]
    except struct.error:
        return None
    return None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation whenever the Orientation tag itself can be read."""
    method = UPRIGHT.get(exif_orientation(image))
    return image.transpose(method) if method is not None else image


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16/32-bit integers scaled (not clipped), alpha on white.

    Wide images are converted STRIP_ROWS rows at a time into one uint8 array, so a
    100-megapixel 16-bit PNG needs its own pixels plus 100 MB, not float64 copies. The
    16-bit scaling is `(x + 128) // 257`, which equals round(x / 257) for every x in
    0..65535 (x / 257 is never halfway between integers), so rows are those of the
    float formula used before.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image)
        eight_bit = image.mode == "I" and wide.max(initial=0) <= 255  # 8-bit data in 32 bits
        gray = np.empty(wide.shape, np.uint8)
        for start in range(0, wide.shape[0], STRIP_ROWS):
            strip = wide[start:start + STRIP_ROWS].astype(np.int64)
            gray[start:start + STRIP_ROWS] = (strip.astype(np.uint8) if eight_bit else
                                              (np.clip(strip, 0, 65535) + 128) // 257)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image)
        high = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.empty(values.shape, np.uint8)
        for start in range(0, values.shape[0], STRIP_ROWS):
            strip = values[start:start + STRIP_ROWS].astype(np.float64)
            gray[start:start + STRIP_ROWS] = np.round(np.clip(strip / high, 0, 1) * 255)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
