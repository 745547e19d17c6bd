"""--engine ray on a real local Ray: one actor per (declared) GPU, retries, same rows."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import ray  # noqa: E402 - the test extra installs it, so these always run
from helpers import (
    TESTS,
    dying_backbone_factory,
    fake_backbone_factory,
    folder_with_reference,
    many_images,
    real_backbone_factory,
    tiny_presets,
)

from headstart.extract.precision import choose, this_machine
from headstart.features import open_store


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray with 2 CPUs and 2 declared GPUs (placement only; no CUDA here)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return folder_with_reference(tmp_path_factory.mktemp("ray"), 36, "Dog/broken.jpg",
                                 b"\xff\xd8\xff not a jpeg")


def snapshot(path):
    with open_store(path) as store:
        return store.paths, store.load_features(), store.skipped


def assert_same(actual, expected):
    a, b = snapshot(actual), snapshot(expected)
    assert a[0] == b[0] and a[2] == b[2]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.slow
def test_one_actor_per_gpu_and_the_rows_of_a_single_process_run(cluster, folder, tmp_path):
    from headstart.extract.ray_engine import extract_with_ray

    folder, reference = folder
    out = tmp_path / "features.h5"
    lines = []
    summary = extract_with_ray(folder, out, weights="none", shards=6, progress=False,
                               model_factory=fake_backbone_factory, log=lines.append)
    assert_same(out, reference)
    # --precision auto: decided on a worker (this machine here), printed and recorded
    auto = choose(this_machine())
    assert auto.line() in lines
    with open_store(out) as store:
        assert store.identity.precision == auto.precision
    assert summary.rows == 36 and summary.shards == 6
    gpus = sorted(g for worker in summary.workers for g in worker["gpus"])
    assert gpus == ["0", "1"]  # two actors, each placed on its own GPU
    assert sorted(s for w in summary.workers for s in w["shards"]) == list(range(6))


@pytest.mark.slow
def test_an_actor_killed_mid_shard_is_replaced_and_the_run_completes(cluster, folder,
                                                                     tmp_path):
    from headstart.extract.ray_engine import extract_with_ray

    folder, reference = folder
    out = tmp_path / "features.h5"
    marker = tmp_path / "killed-once"
    lines = []
    factory = functools.partial(dying_backbone_factory, marker=str(marker))
    extract_with_ray(folder, out, weights="none", shards=3, progress=False, flush_rows=2,
                     batch_size=2, model_factory=factory, log=lines.append)
    assert marker.exists()  # an actor really died (SIGKILL) in the middle of a shard
    assert any("died" in line and "retrying" in line for line in lines), lines
    assert_same(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_rows_of_real_backbones_on_actors_are_bit_identical_to_a_single_run(
        cluster, tmp_path, backbone_cache, precision):
    from headstart.extract import WeightsSpec, extract_features
    from headstart.extract.ray_engine import extract_with_ray

    folder = many_images(tmp_path / "pets", 10)
    options = dict(backbone="MobileNetV3Small", weights="none", batch_size=4,
                   precision=precision, progress=False, log=lambda line: None)
    single = tmp_path / "single.h5"
    backbone = backbone_cache(WeightsSpec("none"), backbone="MobileNetV3Small",
                              precision=precision, batch_size=4)
    extract_features(folder, single, model=backbone, **options)
    out = tmp_path / "ray.h5"
    extract_with_ray(folder, out, shards=3, model_factory=real_backbone_factory, **options)
    (paths, rows, _), (paths_ray, rows_ray, _) = snapshot(single), snapshot(out)
    assert paths_ray == paths
    assert np.array_equal(rows_ray, rows), np.abs(rows_ray - rows).max()
    with open_store(out) as store:
        assert store.identity.precision == precision


@pytest.mark.slow
def test_rows_of_a_keras_hub_preset_on_actors_are_bit_identical_to_a_single_run(
        cluster, tmp_path):
    """Each actor loads the tiny DINOv2 preset from its folder through KerasHub."""
    from headstart.extract import extract_features
    from headstart.extract.ray_engine import extract_with_ray

    preset = tiny_presets(tmp_path / "presets", ("dinov2",))["dinov2"]
    folder = many_images(tmp_path / "pets", 10)
    options = dict(backbone=str(preset), batch_size=4, precision="float32", progress=False,
                   log=lambda line: None)
    extract_features(folder, tmp_path / "single.h5", **options)
    extract_with_ray(folder, tmp_path / "ray.h5", shards=3,
                     model_factory=real_backbone_factory, **options)
    assert_same(tmp_path / "ray.h5", tmp_path / "single.h5")
    with open_store(tmp_path / "ray.h5") as store:
        assert store.identity.model == "keras_hub:tiny_dinov2"


def test_without_ray_the_engine_names_the_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from headstart.extract.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    folder = many_images(tmp_path / "pets", 2)
    done = subprocess.run([sys.executable, "-c", code, str(folder), "--engine", "ray",
                           "--weights", "none", "-q"], capture_output=True, text=True)
    assert done.returncode == 2
    assert 'run `pip install "headstart[ray]"`' in done.stderr
