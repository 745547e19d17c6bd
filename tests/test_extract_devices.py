"""The GPU path, checked on CPU: mixed precision and one batch split over several devices."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import small_pets

# Two logical CPU devices stand in for two GPUs; they must be configured before TF starts.
TWO_DEVICES = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from headstart.extract.backbone import Backbone, WeightsSpec
from headstart.extract.decode import decode_one
from pathlib import Path
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
pixels = np.stack([decode_one(str(f), f).pixels for f in files])
small = "MobileNetV3Small"  # the split does not depend on the backbone; a small one is quick
single = Backbone(WeightsSpec("none", 0), backbone=small, devices=[]).embed(pixels)
mirrored = Backbone(WeightsSpec("none", 0), backbone=small, devices=["/cpu:0", "/cpu:1"])
assert mirrored.replicas == 2
np.save(sys.argv[2], np.stack([single, mirrored.embed(pixels),
                               mirrored.embed(pixels[:1])[0:1].repeat(len(files), 0)]))
"""


@pytest.mark.slow
def test_a_batch_split_over_two_devices_gives_the_single_device_rows(tmp_path):
    folder = small_pets(tmp_path / "pets", 3)  # 6 images: uneven split 3 + 3, and 1 + 0
    out = tmp_path / "rows.npy"
    subprocess.run([sys.executable, "-c", TWO_DEVICES, str(folder), str(out)], check=True,
                   capture_output=True)
    single, mirrored, lone = np.load(out)
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-5 * np.abs(single).max())
    np.testing.assert_allclose(lone[0], single[0], rtol=1e-5, atol=1e-5 * np.abs(single).max())


@pytest.mark.slow
def test_mixed_bfloat16_rows_are_close_to_float32_and_recorded_as_such(tmp_path, backbone_cache):
    """bf16 keeps 8 bits of mantissa: rows differ by about 1% of their scale, not more."""
    from headstart.extract import WeightsSpec, extract_features
    from headstart.features import StoreError, open_store

    folder = small_pets(tmp_path / "pets", 2)
    spec = WeightsSpec("none", 0)
    full = backbone_cache(spec)
    mixed = backbone_cache(spec, precision="mixed_bfloat16")
    pixels = np.stack([
        np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB").resize((224, 224)))
        for p in sorted(folder.rglob("*.jpg"))
    ])
    exact, approx = full.embed(pixels), mixed.embed(pixels)
    assert approx.dtype == np.float32
    scale = np.abs(exact).max()
    assert np.abs(approx - exact).max() < 0.05 * scale
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.999
    out = tmp_path / "f.h5"
    extract_features(folder, out, weights="none", precision="mixed_bfloat16", model=mixed,
                     progress=False, log=lambda line: None)
    with open_store(out) as store:
        assert store.identity.precision == "mixed_bfloat16"
    with pytest.raises(StoreError, match="precision: the store's 'mixed_bfloat16', this run's"):
        extract_features(folder, out, weights="none", precision="float32", model=full,
                         progress=False, log=lambda line: None)
