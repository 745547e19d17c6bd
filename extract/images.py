"""Finding images in a class-per-folder tree, and decoding one file into model-ready pixels.

Every image goes through one pipeline, recorded in the store as `RESIZE`:
EXIF orientation -> first frame -> 8-bit RGB (16-bit scaled, alpha composited on white)
-> 224x224 with PIL's bilinear filter. JPEGs are decoded at reduced size first (DCT
scaling via `Image.draft`) when they are at least twice the target size, which is what
keeps large photos cheap. VGG16's own `preprocess_input` is applied later, on batches.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RESIZE = (
    "exif-transpose, first frame, RGB (16-bit scaled, alpha on white), JPEG draft, PIL bilinear"
)
MAX_PIXELS = 100_000_000  # refuse decompression bombs above 100 megapixels


class UnreadableImageError(Exception):
    """A file that looks like an image but cannot be decoded; str() is the reason."""


@dataclass
class ImageFolder:
    """The images of a class-per-folder tree. Paths are relative to `root`, '/'-separated."""

    root: Path
    classes: list[str]
    files: list[str]
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why) reported, not fatal

    def class_of(self, relative: str) -> str:
        return relative.split("/", 1)[0]


class FolderError(ValueError):
    """The input folder cannot be used at all; the message says what to do."""


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def scan_folder(root: str | Path) -> ImageFolder:
    """List class folders (sorted) and their images (recursive, sorted, symlink loops cut)."""
    root = Path(root)
    if not root.exists():
        raise FolderError(f"Image folder '{root}' does not exist.")
    if not root.is_dir():
        raise FolderError(f"'{root}' is a file; pass a folder with one sub-folder per class.")
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except PermissionError:
        raise FolderError(f"Cannot read folder '{root}' (permission denied).") from None
    classes, files, ignored = [], [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            if is_image_name(entry.name):
                ignored.append((entry.name, "image at the top level, not in a class folder"))
            continue
        if not _valid_utf8(entry.name):
            ignored.append((_printable(entry.name), "folder name is not valid UTF-8; rename it"))
            continue
        found = _walk_images(root, Path(entry.name), ignored)
        if found:
            classes.append(entry.name)
            files += found
        else:
            ignored.append((entry.name + "/", "class folder holds no images"))
    if not classes:
        raise FolderError(
            f"No images found in '{root}' (looked for {', '.join(IMAGE_EXTENSIONS)} inside "
            "sub-folders). Expected one sub-folder per class, e.g. PetImages/Cat, PetImages/Dog."
        )
    return ImageFolder(root, classes, sorted(files), ignored)


def _walk_images(root: Path, relative: Path, ignored: list) -> list[str]:
    """Images under root/relative, following symlinks but never the same directory twice."""
    found, seen = [], set()
    for directory, subdirs, names in os.walk(root / relative, followlinks=True):
        key = _dir_key(directory)
        if key in seen:
            ignored.append((_relative(root, directory), "symlink loop, not followed"))
            subdirs[:] = []
            continue
        seen.add(key)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if not is_image_name(name):
                continue
            rel = _relative(root, os.path.join(directory, name))
            if not _valid_utf8(rel):
                ignored.append((_printable(rel), "file name is not valid UTF-8; rename the file"))
            else:
                found.append(rel)
    return found


def _dir_key(directory: str) -> tuple[int, int]:
    info = os.stat(directory)
    return info.st_dev, info.st_ino


def _relative(root: Path, path: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates
        return False
    return True


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def read_file(path: str | Path) -> tuple[bytes, str]:
    """The file's bytes and their hex sha256; raises UnreadableImageError on OS errors."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise UnreadableImageError(f"cannot read file: {error.strerror or error}") from None
    return data, hashlib.sha256(data).hexdigest()


def decode_pixels(data: bytes, size: int = 224) -> np.ndarray:
    """uint8 RGB pixels, shape (size, size, 3), of an encoded image; UnreadableImageError if not."""
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


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; an image whose EXIF is broken is used as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a readable image unreadable
        return image


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: 16/32-bit integers scaled (not clipped), alpha on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.float64)
        if image.mode == "I" and wide.max(initial=0) <= 255:  # 8-bit data stored in 32 bits
            gray = wide
        else:
            gray = np.clip(wide, 0, 65535) / 257.0
        return Image.fromarray(np.round(gray).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        high = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        gray = np.round(np.clip(values / high, 0, 1) * 255)
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image
