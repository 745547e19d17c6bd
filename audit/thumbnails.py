"""160-pixel thumbnails of stored images as data URIs, for a report that is one file.

The only place the audit decodes pixels. Each file is found under the store's recorded
image folder (`source_dir`) and its bytes are checked against the recorded sha256: a file
that moved, vanished or changed since extraction, or that cannot be decoded, gets a
placeholder that says so instead of showing the wrong picture. EXIF orientation is
applied as in extraction (headstart.extract.images), so a thumbnail looks the way the
backbone saw the image.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw

from headstart.extract.images import (
    MAX_PIXELS,
    UPRIGHT,
    UnreadableImageError,
    exif_orientation,
    read_file,
    to_rgb8,
)

SIZE = 160  # pixels, the longer side


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@lru_cache(maxsize=8)
def placeholder(reason: str, size: int = SIZE) -> str:
    """A grey PNG data URI with `reason` written on it ("moved or changed", ...)."""
    card = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(card)
    draw.rectangle([0, 0, size - 1, size - 1], outline=(160, 160, 160))
    words, lines = reason.split(), [""]
    for word in words:
        if len(lines[-1]) + len(word) + 1 > 20:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    for n, line in enumerate(lines):
        draw.text((8, size // 2 - 8 * len(lines) + 16 * n), line, fill=(60, 60, 60))
    out = io.BytesIO()
    card.save(out, format="PNG")
    return data_uri(out.getvalue(), "image/png")


def thumbnail(source_dir: str | Path | None, path: str, sha256: str, size: int = SIZE) -> str:
    """A JPEG data URI of the image at source_dir/path, at most `size` px on its longer side.

    Returns a placeholder data URI when the folder is unknown, `path` is absolute or leaves
    the folder ('..': a crafted store), the file is missing, not a regular file or too
    large (headstart.extract.images.read_file), its sha256 differs from `sha256`, or it
    cannot be decoded. Never raises for a bad file.
    """
    if not source_dir:
        return placeholder("image folder not recorded", size)
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or ".." in relative.parts or "\\" in path:
        return placeholder("path outside the image folder", size)  # a crafted store
    try:
        content = read_file(Path(source_dir) / relative)
    except UnreadableImageError as error:
        moved = str(error).startswith("cannot read file")
        return placeholder("file moved or deleted since extraction" if moved else
                           "not a regular file, or too large", size)
    if content.sha256 != sha256:
        return placeholder("file changed since extraction", size)
    try:
        with Image.open(io.BytesIO(content.data)) as image:
            if image.width * image.height > MAX_PIXELS:
                return placeholder("too many pixels to show", size)
            image.draft("RGB", (size, size))
            image.load()
            method = UPRIGHT.get(exif_orientation(image))
            image = image.transpose(method) if method is not None else image
            small = to_rgb8(image)
            small.thumbnail((size, size), Image.BILINEAR)
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=80)
    except Exception:  # noqa: BLE001 - any decoder failure: show a placeholder, not a crash
        return placeholder("cannot be decoded", size)
    return data_uri(out.getvalue(), "image/jpeg")
