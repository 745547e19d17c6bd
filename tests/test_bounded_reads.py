"""Reads with bounds: only regular files, within a size limit; 16-bit images without copies."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers import FakeBackbone, many_images
from PIL import Image

from headstart.audit.thumbnails import thumbnail
from headstart.extract import extract_features, images
from headstart.extract.cli import main as extract_main
from headstart.extract.images import UnreadableImageError, decode_pixels, read_file, to_rgb8
from headstart.features import open_store


def run(folder, out, **kw):
    kw = {"weights": "none", "model": FakeBackbone(), "progress": False,
          "log": lambda line: None, **kw}
    return extract_features(folder, out, **kw)


def skipped_reasons(store: Path) -> dict[str, str]:
    with open_store(store) as opened:
        return dict(opened.skipped)


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "link to a folder's file"])
def test_only_regular_files_are_read(tmp_path, kind):
    """A link to /dev/zero grew memory to 4 GB; a FIFO named pipe.jpg hung the run forever."""
    folder = many_images(tmp_path / "pets", 6)
    odd = folder / "Cat" / "odd.jpg"
    if kind == "link to /dev/zero":
        odd.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(odd)
    else:  # a file link to a regular image is read (labelled where the link sits)
        odd.symlink_to(sorted((folder / "Dog").glob("*.jpg"))[0])
    out = tmp_path / "features.h5"
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run(folder, out), done.set()), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert done.is_set(), "the extraction hung"
    reasons = skipped_reasons(out)
    if kind == "link to a folder's file":
        assert "Cat/odd.jpg" not in reasons
        with open_store(out) as opened:
            assert "Cat/odd.jpg" in opened.paths
    else:
        expected = "a character device" if "zero" in kind else "a FIFO"
        assert f"not a regular file ({expected})" in reasons["Cat/odd.jpg"]


def test_files_over_the_size_limit_are_skipped_and_the_option_raises_it(tmp_path, capsys):
    folder = many_images(tmp_path / "pets", 4)
    big = folder / "Cat" / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), np.uint8)).save(big)
    assert big.stat().st_size > 1 << 20
    out = tmp_path / "features.h5"
    argv = [str(folder), "-o", str(out), "--weights", "none", "-q", "--max-file-size", "1"]
    import headstart.extract.job as job
    original = job.Backbone
    job.Backbone = lambda spec, **kw: FakeBackbone()
    try:
        assert extract_main(argv) == 0
        assert "larger than the 1 MB limit (raise it with extract-features --max-file-size" \
            in skipped_reasons(out)["Cat/big.png"]
        assert extract_main(["--max-file-size", "0", str(folder)]) == 2
        assert "--max-file-size" in capsys.readouterr().err
    finally:
        job.Backbone = original
        images.MAX_FILE_BYTES = 256 << 20
    with pytest.raises(UnreadableImageError, match="larger than"):
        read_file(big, max_bytes=1000)
    assert read_file(big).size == big.stat().st_size


def test_the_audit_never_reads_a_store_path_outside_the_image_folder(tmp_path):
    """A store row whose path is /dev/zero made the audit's thumbnail read it."""
    folder = many_images(tmp_path / "pets", 2)
    inside = sorted(folder.rglob("*.jpg"))[0]
    sha = read_file(inside).sha256
    ok = thumbnail(folder, inside.relative_to(folder).as_posix(), sha)
    assert ok.startswith("data:image/jpeg")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(inside.read_bytes())
    for path in ["/dev/zero", "../secret.jpg", str(secret), "Cat/../../secret.jpg"]:
        assert thumbnail(folder, path, sha).startswith("data:image/png"), path  # placeholder
    (folder / "Cat" / "zero.jpg").symlink_to("/dev/zero")
    assert thumbnail(folder, "Cat/zero.jpg", sha).startswith("data:image/png")


def test_the_16_bit_conversion_gives_todays_values_for_all_65536_inputs():
    x = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    before = np.round(np.clip(x.astype(np.float64), 0, 65535) / 257.0).astype(np.uint8)
    for mode, data in (("I;16", x), ("I", x.astype(np.int32))):
        image = Image.fromarray(data)
        assert image.mode == mode
        converted = np.asarray(to_rgb8(image))[:, :, 0]
        np.testing.assert_array_equal(converted, before)
    assert ((x.astype(np.int64) + 128) // 257 == before).all()
    # 32-bit images holding 8-bit data, and float images, as before
    small = np.array([[0, 7, 255]], np.int32)
    np.testing.assert_array_equal(np.asarray(to_rgb8(Image.fromarray(small)))[:, :, 0],
                                  [[0, 7, 255]])
    floats = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(to_rgb8(Image.fromarray(floats, "F")))[:, :, 0],
                                  np.round(np.clip(floats / 1.0, 0, 1) * 255).astype(np.uint8))


def test_a_large_16_bit_png_is_converted_without_float64_copies(tmp_path):
    """A 219 KB 9999x9999 16-bit PNG peaked at 3.4 GB in float64 copies; here 3000x3000."""
    side = 3000
    buffer = io.BytesIO()
    Image.new("I;16", (side, side), 40000).save(buffer, format="PNG")
    data = buffer.getvalue()
    assert len(data) < 200_000
    tracemalloc.start()
    try:
        pixels = decode_pixels(data, 224)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (224, 224, 3) and (pixels == (40000 + 128) // 257).all()
    # numpy's allocations are traced (Pillow's own are not): the uint16 pixels (18 MB), the
    # uint8 result (9 MB) and int64 strips (6 MB each), where the float64 conversion made
    # four copies of 72 MB each (about 290 MB)
    assert peak < 5 * side * side, peak
