"""Finding images and decoding them: every mode, EXIF, bad files, odd folders."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from helpers import write_image
from PIL import Image

from headstart.errors import FolderError
from headstart.extract.catalog import scan as scan_folder
from headstart.extract.images import UnreadableImageError, decode_pixels, read_file


def encode(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


# ---- scanning -------------------------------------------------------------------------

def test_classes_are_sorted_folders_and_images_are_found_recursively(tmp_path):
    write_image(tmp_path / "dog" / "a.JPG", fmt="JPEG")
    write_image(tmp_path / "cat" / "nested" / "deeper" / "b.png")
    write_image(tmp_path / "cat" / "c.webp")
    (tmp_path / "cat" / "Thumbs.db").write_bytes(b"\0" * 10)
    (tmp_path / "cat" / "notes.txt").write_text("x")
    write_image(tmp_path / "cat" / ".hidden.jpg", fmt="JPEG")
    folder = scan_folder(tmp_path)
    assert folder.classes == ["cat", "dog"]
    assert folder.files == ["cat/c.webp", "cat/nested/deeper/b.png", "dog/a.JPG"]
    assert folder.ignored == []


def test_top_level_images_and_empty_class_folders_are_reported_not_fatal(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    write_image(tmp_path / "stray.png")
    (tmp_path / "empty").mkdir()
    folder = scan_folder(tmp_path)
    assert folder.classes == ["cat"]
    assert ("stray.png", "image at the top level, not in a class folder") in folder.ignored
    assert ("empty/", "class folder holds no images") in folder.ignored


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is a file"),
    (lambda p: (p.mkdir(), (p / "only.txt").write_text("x")), "No images found in"),
], ids=["missing", "file", "no-classes"])
def test_unusable_input_folders_fail_with_one_clear_sentence(tmp_path, make, message):
    target = tmp_path / "PetImages"
    make(target)
    with pytest.raises(FolderError, match=message):
        scan_folder(target)


def test_symlink_loops_are_cut_and_reported(tmp_path):
    write_image(tmp_path / "cat" / "a.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "loop")
    folder = scan_folder(tmp_path)
    assert folder.files == ["cat/a.png"]
    assert any("symlink loop" in why for _, why in folder.ignored)


def test_file_names_that_are_not_utf8_are_reported_and_the_rest_kept(tmp_path):
    write_image(tmp_path / "cat" / "good.png")
    bad = os.path.join(os.fsencode(tmp_path / "cat"), b"bad-\xff.png")
    with open(bad, "wb") as handle:
        handle.write(encode(Image.new("RGB", (8, 8))))
    folder = scan_folder(tmp_path)
    assert folder.files == ["cat/good.png"]
    assert any("not valid UTF-8" in why and "bad-" in path for path, why in folder.ignored)


def test_permission_denied_becomes_an_unreadable_image_reason(tmp_path, monkeypatch):
    path = write_image(tmp_path / "a.png")

    real_open = os.open

    def denied(file, flags, *args):  # chmod 0 is not enforced for root: deny the call itself
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UnreadableImageError, match="cannot read file: Permission denied"):
        read_file(path)


# ---- decoding -------------------------------------------------------------------------

def test_rgb_image_decodes_to_224_square_uint8():
    pixels = decode_pixels(encode(Image.new("RGB", (300, 200), (10, 200, 30))))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[100, 100]) == (10, 200, 30)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 30), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 30))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the left half ends up on top
    pixels = decode_pixels(encode(image, "JPEG", exif=exif, quality=95))
    top, bottom = pixels[20, 112], pixels[200, 112]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_broken_exif_still_loads():
    image = Image.new("RGB", (32, 32), (5, 6, 7))
    data = bytearray(encode(image, "JPEG", exif=b"Exif\x00\x00" + b"MM\x00*" + b"\xff" * 40))
    pixels = decode_pixels(bytes(data))
    assert pixels.shape == (224, 224, 3)


def test_16bit_grayscale_is_scaled_not_clipped():
    wide = np.full((16, 16), 65535 // 2, dtype=np.uint16)
    wide[:, 8:] = 65535
    pixels = decode_pixels(encode(Image.fromarray(wide)))
    assert tuple(pixels[112, 10]) == (127, 127, 127)  # 32767 / 257 = 127.5 -> not 255 (clipped)
    assert tuple(pixels[112, 220]) == (255, 255, 255)


@pytest.mark.parametrize("mode, color, expected", [
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("RGBA", (0, 0, 0, 0), (255, 255, 255)),  # fully transparent -> white background
    ("RGBA", (0, 0, 255, 255), (0, 0, 255)),
    ("LA", (0, 0), (255, 255, 255)),
], ids=["L", "1", "CMYK", "RGBA-clear", "RGBA-opaque", "LA"])
def test_every_mode_becomes_8bit_rgb(mode, color, expected):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    pixels = decode_pixels(encode(Image.new(mode, (20, 20), color), fmt))
    np.testing.assert_allclose(pixels[112, 112], expected, atol=2)


def test_palette_with_transparency_is_composited_on_white():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    assert tuple(decode_pixels(encode(image))[5, 5]) == (255, 255, 255)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    pixel = decode_pixels(data)[8, 8]
    assert pixel[0] > 200 and pixel[2] < 50


def test_large_jpeg_is_decoded_at_reduced_size_with_nearly_the_same_result():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (30, 45, 3), dtype=np.uint8)
    big = Image.fromarray(base).resize((3000, 2000), Image.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    fast = decode_pixels(data).astype(np.float32)
    with Image.open(io.BytesIO(data)) as full:  # reference: full decode, same resize
        slow = np.asarray(full.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
    assert np.abs(fast - slow).mean() < 3.0  # draft mode loses only JPEG-level detail


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is not an image", "not an image Pillow can identify"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "."),
], ids=["empty", "garbage", "bad-png-header"])
def test_unreadable_bytes_raise_unreadable_image_with_a_reason(data, reason):
    with pytest.raises(UnreadableImageError, match=reason):
        decode_pixels(data)


def test_truncated_jpeg_is_unreadable():
    data = encode(Image.new("RGB", (300, 300), (1, 2, 3)), "JPEG")
    with pytest.raises(UnreadableImageError):
        decode_pixels(data[: len(data) // 2])


def test_decompression_bombs_are_refused_before_decoding(monkeypatch):
    import headstart.extract.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    with pytest.raises(UnreadableImageError, match="exceeds the 2,500-pixel limit"):
        decode_pixels(encode(Image.new("RGB", (60, 60))))


# ---- EXIF orientation with a damaged neighbour tag -------------------------------------

def exif_with_broken_neighbour(orientation: int) -> bytes:
    """Big-endian EXIF IFD0: Orientation (SHORT) and XResolution as SRATIONAL -1/0.

    Pillow's ImageOps.exif_transpose raises struct.error on such a block.
    """
    import struct

    header = b"MM\x00*" + struct.pack(">I", 8)
    count = struct.pack(">H", 2)
    data_offset = 8 + 2 + 2 * 12 + 4
    orientation_entry = struct.pack(">HHI", 0x0112, 3, 1) + struct.pack(">HH", orientation, 0)
    resolution_entry = struct.pack(">HHI", 0x011A, 10, 1) + struct.pack(">I", data_offset)
    return (b"Exif\x00\x00" + header + count + orientation_entry + resolution_entry
            + struct.pack(">I", 0) + struct.pack(">ii", -1, 0))


# The stored pixels that display as the upright image for each orientation (the inverse
# of the transpose a viewer applies).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
          6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def asymmetric(width: int, height: int) -> Image.Image:
    """Four distinct quadrants: any rotation or flip changes the picture."""
    image = Image.new("RGB", (width, height), (250, 250, 250))
    image.paste((220, 20, 20), (0, 0, width // 2, height // 2))
    image.paste((20, 20, 220), (width // 2, 0, width, height // 2))
    image.paste((20, 200, 20), (0, height // 2, width // 2, height))
    return image


@pytest.mark.parametrize("size", [(90, 60), (1200, 800)], ids=["small", "dct-scaled"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applies_although_another_exif_tag_is_broken(orientation, size):
    from PIL import ImageOps

    upright = asymmetric(*size)
    stored = upright if STORED[orientation] is None else upright.transpose(STORED[orientation])
    data = encode(stored, "JPEG", exif=exif_with_broken_neighbour(orientation), quality=95)
    if orientation != 1:
        with Image.open(io.BytesIO(data)) as image, pytest.raises(struct.error):
            ImageOps.exif_transpose(image)  # the failure this guards against
    got = decode_pixels(data).astype(np.float32)
    expected = decode_pixels(encode(upright, "JPEG", quality=95)).astype(np.float32)
    assert np.abs(got - expected).mean() < 4.0, orientation  # same picture, JPEG noise only


def test_a_heic_photo_decodes_through_pillow_heif():
    photo = asymmetric(64, 48)
    pixels = decode_pixels(encode(photo, "HEIF", quality=95)).astype(np.float32)
    expected = np.asarray(photo.resize((224, 224), Image.BILINEAR), np.float32)
    assert np.abs(pixels - expected).mean() < 6.0  # HEVC is lossy


def test_without_pillow_heif_a_heic_file_is_skipped_naming_the_install(tmp_path):
    """A fresh interpreter where `import pillow_heif` fails, as for users without the extra."""
    import subprocess
    import sys

    from helpers import write_image

    write_image(tmp_path / "Cat" / "IMG_0001.HEIC", fmt="HEIF")
    write_image(tmp_path / "Cat" / "ok.png")
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from headstart.extract.decode import decode_one\n"
        "from headstart.extract.formats import HEIF_AVAILABLE, image_extensions\n"
        "print(HEIF_AVAILABLE, '.heic' in image_extensions())\n"
        "print(decode_one('k', sys.argv[1]).reason)\n"
        "print(decode_one('k', sys.argv[2]).reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "Cat" / "IMG_0001.HEIC"),
                           str(tmp_path / "Cat" / "ok.png")], capture_output=True, text=True,
                          check=True)
    available, reason, fine = done.stdout.splitlines()
    assert available == "False True"
    assert reason == ('HEIC/HEIF images need the optional package pillow-heif: run '
                      '`pip install "headstart[heif]"`')
    assert fine == "None"
