"""A row depends only on its image: every model call has the same batch shape, so a single
run, a sharded run with a crashed and resumed shard, and a run resumed after SIGKILL give
bit-identical rows with a real Keras backbone, in float32 and in bfloat16. (The Ray run is
checked in test_extract_ray.py, which starts the cluster.)"""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import TESTS, many_images

from headstart.extract import WeightsSpec, extract_features
from headstart.features import open_store, part_files
from headstart.features.shards import merge_shards

PRECISIONS = ["float32", "mixed_bfloat16"]
SMALL = "MobileNetV3Small"  # a real Keras network, small enough to build in seconds
# Batches of 4 over 22 images: the last batch of every run and shard is partial, and the
# shards put each image at another position in its batch than the single run does.
OPTIONS = dict(backbone=SMALL, weights="none", batch_size=4, flush_rows=4, progress=False,
               log=lambda line: None)
COUNT = 22


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return many_images(tmp_path_factory.mktemp("batching") / "pets", COUNT)


def rows_of(path):
    with open_store(path) as store:
        return store.paths, store.load_features()


def assert_bit_identical(actual, expected):
    (paths_a, rows_a), (paths_b, rows_b) = rows_of(actual), rows_of(expected)
    assert paths_a == paths_b
    assert rows_a.dtype == rows_b.dtype == np.float32
    assert np.array_equal(rows_a, rows_b), f"max difference {np.abs(rows_a - rows_b).max()}"


class Crash(Exception):
    """What a dying process leaves: committed parts, no finished store."""


class CrashingBackbone:
    """The real backbone, failing on its `after`-th call."""

    def __init__(self, backbone, after: int):
        self.backbone, self.after, self.calls = backbone, after, 0
        self.identity, self.replicas = backbone.identity, backbone.replicas

    def embed(self, pixels):
        self.calls += 1
        if self.calls == self.after:
            raise Crash
        return self.backbone.embed(pixels)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_row_is_the_same_in_any_batch(precision, backbone_cache, folder):
    from headstart.extract.decode import decode_one

    backbone = backbone_cache(WeightsSpec("none"), backbone=SMALL, precision=precision,
                              batch_size=4)
    files = sorted(folder.rglob("*.jpg"))[:9]
    pixels = np.stack([decode_one(str(f), f).pixels for f in files])
    together = backbone.embed(pixels)
    alone = np.concatenate([backbone.embed(pixels[i:i + 1]) for i in range(len(pixels))])
    reversed_ = backbone.embed(pixels[::-1])[::-1]
    assert together.shape == (9, 576)
    assert np.array_equal(alone, together)
    assert np.array_equal(reversed_, together)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_single_sharded_and_resumed_runs_store_bit_identical_rows(precision, backbone_cache,
                                                                   folder, tmp_path):
    backbone = backbone_cache(WeightsSpec("none"), backbone=SMALL, precision=precision,
                              batch_size=4)
    single = tmp_path / "single.h5"
    extract_features(folder, single, model=backbone, precision=precision, **OPTIONS)
    with open_store(single) as store:
        assert store.identity.precision == precision and store.n_rows == COUNT

    sharded = tmp_path / "sharded.h5"
    extract_features(folder, sharded, shard=(0, 3), model=backbone, **OPTIONS)
    with pytest.raises(Crash):
        extract_features(folder, sharded, shard=(1, 3), model=CrashingBackbone(backbone, 2),
                         **OPTIONS)
    extract_features(folder, sharded, shard=(1, 3), model=backbone, **OPTIONS)  # resumes
    extract_features(folder, sharded, shard=(2, 3), model=backbone, **OPTIONS)
    merge_shards(sharded)
    assert_bit_identical(sharded, single)

    killed = tmp_path / "killed.h5"
    dies = subprocess.run([sys.executable, "-c", KILLED_RUN, str(folder), str(killed),
                           precision], capture_output=True, text=True)
    assert dies.returncode == -signal.SIGKILL, dies.stderr[-2000:]
    assert part_files(killed) and not killed.exists()
    extract_features(folder, killed, model=backbone, **OPTIONS)  # the same command resumes
    assert_bit_identical(killed, single)


# A real extract-features run in its own process, killed (SIGKILL) during its third batch,
# after two committed parts of 4 rows.
KILLED_RUN = f"""
import os, signal, sys
sys.path.insert(0, {str(TESTS)!r})
from headstart.extract import Backbone, WeightsSpec, extract_features
folder, out, precision = sys.argv[1:]
backbone = Backbone(WeightsSpec("none"), backbone={SMALL!r}, precision=precision, batch_size=4)
embed, calls = backbone.embed, []
def dying(pixels):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return embed(pixels)
backbone.embed = dying
extract_features(folder, out, backbone={SMALL!r}, weights="none", batch_size=4, flush_rows=4,
                 progress=False, model=backbone)
"""


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_predict_embeds_new_images_in_the_stores_precision_to_the_same_rows(
        precision, backbone_cache, folder, tmp_path):
    """predict rebuilds the backbone in the recorded precision (emulated, slower, where the
    CPU lacks bf16 units), so a photo gets exactly the row it has in the store."""
    from helpers import make_store, separable

    from headstart.classify import fit_heads, predict_store
    from headstart.classify.predict import predict_images

    backbone = backbone_cache(WeightsSpec("none"), backbone=SMALL, precision=precision)
    store = tmp_path / "features.h5"
    extract_features(folder, store, model=backbone,
                     **{**OPTIONS, "batch_size": backbone.batch_size})
    with open_store(store) as opened:
        identity, paths = opened.identity, opened.paths
    assert identity.precision == precision
    X, y = separable(n=200, dim=576)
    head = fit_heads(make_store(tmp_path / "train.h5", X, y, identity=identity),
                     out_dir=None)[0].head
    from_rows = predict_store(head, store)
    from_images = predict_images(head, [folder / p for p in paths])
    assert np.array_equal(from_images.probabilities, from_rows.probabilities)
