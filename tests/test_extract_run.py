"""extract_features end to end in-process: reference numbers, resume semantics, refusals, memory."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest
from helpers import small_pets, write_image

from headstart.extract import Backbone, WeightsError, WeightsSpec, extract_features
from headstart.extract.backbone import pipeline_identity
from headstart.extract.precision import choose, this_machine
from headstart.features import StoreError, open_store, part_files


def run(folder, out, **kw):
    kw.setdefault("weights", "none")
    return extract_features(folder, out, progress=False, log=lambda line: None, **kw)


def rows_by_path(path):
    with open_store(path) as store:
        return dict(zip(store.paths, store.load_features(), strict=True))


@pytest.mark.slow
def test_rows_equal_keras_own_vgg16_pipeline(tmp_path, seeded_weights, backbone_cache):
    """Reference: Keras load_img(bilinear) + img_to_array + preprocess_input + VGG16 fc2."""
    import keras

    folder = small_pets(tmp_path / "pets", 3)
    backbone = backbone_cache(WeightsSpec.parse(str(seeded_weights)))
    run(folder, tmp_path / "f.h5", weights=str(seeded_weights), batch_size=4, model=backbone)
    vgg = keras.applications.VGG16(weights=None)
    vgg.load_weights(seeded_weights)
    fc2 = keras.Model(vgg.input, vgg.get_layer("fc2").output)
    stored = rows_by_path(tmp_path / "f.h5")
    assert len(stored) == 6
    for relative, row in stored.items():
        image = keras.utils.load_img(folder / relative, target_size=(224, 224),
                                     interpolation="bilinear")
        batch = keras.applications.vgg16.preprocess_input(keras.utils.img_to_array(image)[None])
        expected = fc2(batch, training=False).numpy()[0]
        # float32 round-off of a different batch composition; the resize filter is the same
        # (PIL bilinear) because these photos are under 448 px, where JPEG draft mode is off.
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_seeded_none_equals_a_saved_seeded_weights_file(tmp_path, seeded_weights, backbone_cache):
    from headstart.extract.decode import decode_one

    pixels = decode_one(
        "x", sorted((small_pets(tmp_path / "p", 1) / "Cat").glob("*"))[0]
    ).pixels[None]
    from_file = backbone_cache(WeightsSpec.parse(str(seeded_weights)))
    seeded = backbone_cache(WeightsSpec("none", 0))
    np.testing.assert_allclose(seeded.embed(pixels), from_file.embed(pixels), rtol=1e-6)
    assert from_file.identity.weights.startswith("sha256:")
    assert seeded.identity.weights == "none (seed 0)"


def test_first_run_stores_rows_and_skips_bad_files_with_reasons(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 2)
    (folder / "Cat" / "666.jpg").write_bytes(b"")
    (folder / "Dog" / "11702.jpg").write_bytes(b"\xff\xd8\xff\xe0 corrupt")
    (folder / "Cat" / "Thumbs.db").write_bytes(b"\0" * 64)
    summary = run(folder, tmp_path / "f.h5", batch_size=3)
    assert (summary.rows, summary.added, summary.skipped_now) == (4, 4, 2)
    assert summary.class_counts == {"Cat": 2, "Dog": 2}
    with open_store(tmp_path / "f.h5") as store:
        assert store.features.shape == (4, 4096) and store.features.dtype == np.float32
        assert [p for p, _ in store.skipped] == ["Cat/666.jpg", "Dog/11702.jpg"]
        assert store.skipped[0][1] == "empty file"
        assert store.labels.tolist() == [0, 0, 1, 1]
        # --precision auto: this machine's choice (mixed_bfloat16 with bf16 units)
        auto = choose(this_machine()).precision
        assert store.identity == pipeline_identity("none (seed 0)", precision=auto)
        assert store.attrs["complete"] and store.attrs["version_tensorflow"]
    assert part_files(tmp_path / "f.h5") == []


def test_rerun_is_up_to_date_and_new_images_are_appended(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 2)
    out = tmp_path / "f.h5"
    run(folder, out)
    before = rows_by_path(out)
    assert run(folder, out).up_to_date
    shutil.copy(folder / "Cat" / sorted(p.name for p in (folder / "Cat").iterdir())[0],
                folder / "Cat" / "zz-new.jpg")
    summary = run(folder, out)
    assert (summary.added, summary.rows) == (1, 5)
    after = rows_by_path(out)
    for path, row in before.items():
        np.testing.assert_array_equal(after[path], row)  # nothing stored is recomputed


def test_changed_files_are_re_extracted_and_removed_files_dropped(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 2)
    out = tmp_path / "f.h5"
    run(folder, out)
    cat_a, cat_b = sorted(p.name for p in (folder / "Cat").iterdir())
    before = rows_by_path(out)
    write_image(folder / "Cat" / cat_a, size=(64, 64), color=(0, 255, 0), fmt="JPEG")
    (folder / "Cat" / cat_b).unlink()
    summary = run(folder, out)
    assert (summary.added, summary.rows, summary.dropped) == (1, 3, 1)  # changed: replaced
    after = rows_by_path(out)
    assert f"Cat/{cat_b}" not in after
    assert not np.allclose(after[f"Cat/{cat_a}"], before[f"Cat/{cat_a}"])


def test_a_new_class_folder_relabels_consistently(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 1)
    out = tmp_path / "f.h5"
    run(folder, out)
    write_image(folder / "Bird" / "b.png", size=(50, 50))
    run(folder, out)
    with open_store(out) as store:
        assert store.classes == ["Bird", "Cat", "Dog"]
        assert dict(zip(store.paths, store.labels.tolist(), strict=True)) == {
            "Bird/b.png": 0, store.paths[1]: 1, store.paths[2]: 2}


def test_a_store_made_with_other_weights_is_never_mixed_into(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 1)
    run(folder, tmp_path / "f.h5", seed=0)
    with pytest.raises(StoreError, match=r"weights: the store's 'none \(seed 0\)', this run's "
                                         r"'none \(seed 1\)'.*run with --weights none --seed 0"):
        run(folder, tmp_path / "f.h5", seed=1)
    with pytest.raises(StoreError, match="dtype: the store's 'float32', this run's "
                                         "'float16'.*--dtype float32"):
        run(folder, tmp_path / "f.h5", dtype="float16")


def test_float16_store_is_close_to_float32_and_half_the_rows_size(tmp_path, cached_backbones):
    folder = small_pets(tmp_path / "pets", 2)
    run(folder, tmp_path / "32.h5")
    run(folder, tmp_path / "16.h5", dtype="float16")
    full, half = rows_by_path(tmp_path / "32.h5"), rows_by_path(tmp_path / "16.h5")
    for path in full:
        np.testing.assert_allclose(half[path], full[path], rtol=1e-3,
                                   atol=1e-3 * np.abs(full[path]).max())
    with open_store(tmp_path / "16.h5") as store:
        assert store.features.dtype == np.float16


def test_missing_weights_file_is_one_sentence(tmp_path):
    with pytest.raises(WeightsError, match="Weights file 'nope.h5' does not exist; pass --weights"):
        run(small_pets(tmp_path / "pets", 1), tmp_path / "f.h5", weights="nope.h5")


def test_a_weights_file_of_the_wrong_shape_is_refused(tmp_path):
    import h5py

    bogus = tmp_path / "bogus.weights.h5"
    with h5py.File(bogus, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match="Could not load weights from .*include_top=True"):
        Backbone(WeightsSpec.parse(str(bogus)))


def test_imagenet_download_failure_points_to_weights_path(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(WeightsError,
                       match=r"Could not get the ImageNet VGG16 weights .* --weights PATH"):
        Backbone(WeightsSpec("imagenet"))


def test_output_problems_are_reported_before_any_work(tmp_path):
    folder = small_pets(tmp_path / "pets", 1)
    (tmp_path / "adir").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        run(folder, tmp_path / "adir")
    (tmp_path / "afile").write_text("")
    with pytest.raises(StoreError, match="Cannot create the output folder '.*afile.sub' "
                                         "\\(Not a directory\\); choose another -o"):
        run(folder, tmp_path / "afile" / "sub" / "f.h5")
    run(folder, tmp_path / "runs" / "a" / "f.h5", backbone="MobileNetV3Small")  # created
    assert (tmp_path / "runs" / "a" / "f.h5").is_file()


def test_memory_does_not_grow_with_the_number_of_images(tmp_path, cached_backbones):
    """Peak traced allocations for 40 images stay at those for 8 (streaming, bounded buffers)."""
    folder = tmp_path / "many"
    source = sorted((small_pets(tmp_path / "src", 4)).rglob("*.jpg"))
    for i in range(40):
        (folder / "c").mkdir(parents=True, exist_ok=True)
        shutil.copy(source[i % len(source)], folder / "c" / f"{i:03d}.jpg")
    few = tmp_path / "few"
    shutil.copytree(folder, few, ignore=lambda d, names: [
        n for n in names if n.endswith(".jpg") and int(n[:3]) >= 8])

    def peak(src, out):
        tracemalloc.start()
        run(src, out, backbone="MobileNetV3Small", batch_size=4, flush_rows=8, workers=2)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak_bytes

    peak(few, tmp_path / "warm.h5")  # first call compiles the graph for batch 4
    small, large = peak(few, tmp_path / "few.h5"), peak(folder, tmp_path / "many.h5")
    # Holding all 40 decoded images would add 40 x 150 KB = 6 MB (float32: 24 MB).
    assert large < small + 2_000_000, (small, large)
