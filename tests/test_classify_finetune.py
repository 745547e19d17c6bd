"""fine-tune: only the unfrozen layers move, BatchNorm statistics stay, a stopped run resumes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil

import numpy as np
import pytest

from headstart.classify import load_head
from headstart.classify.checkpoint import Checkpoint
from headstart.classify.dataset import load_dataset
from headstart.classify.deploy_cli import fine_tune_main
from headstart.classify.finetune import (
    checkpoint_dir,
    default_unfreeze,
    fine_tune,
    unfreeze_top,
)
from headstart.classify.finetune_data import augment, find_training_images
from headstart.classify.persist import sha256_file
from headstart.errors import ClassifyError, HeadError, Interrupted, UsageError
from headstart.extract import WeightsSpec

UNFREEZE = "conv_pw_13"  # MobileNet's last pointwise convolution and its BatchNorm
FIRST_UNFROZEN = 83  # index of conv_pw_13 among the include_top=False model's layers


def all_weights(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.numpy() for w in layer.weights] for layer in model.layers}


@pytest.fixture(scope="module")
def straight(deployable, tmp_path_factory):
    """fine-tune from the command line: two epochs of one step (one batch holds every image)."""
    out = tmp_path_factory.mktemp("straight") / "finetuned"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = fine_tune_main(["--features", str(deployable.store), "--head",
                                 str(deployable.heads / "softmax"), "--unfreeze", UNFREEZE,
                                 "--epochs", "2", "--batch-size", "64", "-o", str(out)])
    assert status == 0, stderr.getvalue()
    return out, stdout.getvalue(), stderr.getvalue()


def test_only_the_unfrozen_layers_move_and_batchnorm_statistics_stay(deployable, straight):
    import keras

    out, stdout, stderr = straight
    assert "No GPU is visible" in stderr
    # conv_pw_13 (1024 x 1024) + its BatchNorm's gamma and beta + the head (1024 x 2 + 2)
    assert "trainable parameters 1,052,674" in stderr
    assert "before (head)" in stdout and "test accuracy" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"]["epochs_run"] == 2
    assert metrics["images"]["per_split"]["train"] <= 64  # one step per epoch
    assert metrics["before"]["test"]["n"] == metrics["after"]["test"]["n"] > 0
    assert not checkpoint_dir(out).exists()

    tuned = keras.saving.load_model(out / "model.keras", safe_mode=True)
    backbone = tuned.get_layer("backbone")
    original = keras.applications.MobileNet(weights=str(deployable.weights), include_top=False,
                                            input_shape=(224, 224, 3))
    assert original.layers[FIRST_UNFROZEN].name == UNFREEZE
    before, after = all_weights(original), all_weights(backbone)
    for layer in original.layers[1:FIRST_UNFROZEN]:  # the input layer's name is Keras' choice
        for old, new in zip(before[layer.name], after[layer.name], strict=True):
            np.testing.assert_array_equal(new, old, err_msg=layer.name)  # frozen: bit-identical
    assert not np.allclose(after[UNFREEZE][0], before[UNFREEZE][0], rtol=0, atol=1e-7)
    gamma, beta, moving_mean, moving_variance = after[f"{UNFREEZE}_bn"]
    # Inference mode: the moving statistics were used, never updated.
    np.testing.assert_array_equal(moving_mean, before[f"{UNFREEZE}_bn"][2])
    np.testing.assert_array_equal(moving_variance, before[f"{UNFREEZE}_bn"][3])
    head = load_head(deployable.heads / "softmax")
    assert not np.allclose(tuned.get_layer("probabilities").get_weights()[0],
                           head.layers[0].kernel, rtol=0, atol=1e-7)


def test_a_stopped_run_resumes_at_the_next_epoch_as_if_never_stopped(deployable, straight,
                                                                      tmp_path):
    import keras

    options = {"unfreeze": UNFREEZE, "epochs": 2, "batch_size": 64, "progress": False}
    head_dir = deployable.heads / "softmax"
    out = tmp_path / "finetuned"

    def stop_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/2:"):
            raise KeyboardInterrupt  # Ctrl-C once the epoch is committed

    with pytest.raises(Interrupted, match=r"1 epoch\(s\).*resume from epoch 2"):
        fine_tune(deployable.store, head_dir, out_dir=out, log=stop_after_epoch_1, **options)
    assert not out.exists()
    assert Checkpoint(checkpoint_dir(out)).load()["epoch"] == 1
    # A kill while the next checkpoint was being written leaves a partial temporary file.
    (checkpoint_dir(out) / ".tmp-999-last-0002.npz").write_bytes(b"partial")

    lines: list[str] = []
    resumed = fine_tune(deployable.store, head_dir, out_dir=out, log=lines.append, **options)
    assert resumed.resumed_after == 1
    assert resumed.after == resumed.metrics["after"]["test"]["accuracy"]
    assert resumed.before == resumed.metrics["before"]["test"]["accuracy"]
    assert any(line.startswith("resuming after epoch 1") for line in lines)
    assert [line[:10] for line in lines if line.startswith("epoch ")] == ["epoch 2/2:"]
    assert not checkpoint_dir(out).exists()

    straight_dir = straight[0]
    metrics = json.loads((straight_dir / "metrics.json").read_text())
    assert resumed.metrics["selection"] == metrics["selection"]
    models = [keras.saving.load_model(d / "model.keras") for d in (out, straight_dir)]
    for a, b in zip(*(m.get_weights() for m in models), strict=True):
        np.testing.assert_array_equal(a, b)

    again = fine_tune(deployable.store, head_dir, out_dir=out, **options)
    assert again.already_done and again.metrics == resumed.metrics


def test_vgg16_unfreezes_block5_and_the_fc_layers_by_default(backbone_cache):
    model = backbone_cache(WeightsSpec("none")).model  # shared: frozen again afterwards
    try:
        assert unfreeze_top(model, default_unfreeze("vgg", "VGG16")) == [
            "block5_conv1", "block5_conv2", "block5_conv3", "fc1", "fc2"]
        assert not any(layer.trainable for layer in model.layers
                       if layer.name.startswith(("block1", "block4")))
        with pytest.raises(UsageError, match="matches no layer.*fc2"):
            unfreeze_top(model, "block9")
    finally:
        model.trainable = False
    with pytest.raises(UsageError, match="--unfreeze PREFIX is needed for ResNet50"):
        default_unfreeze("resnet", "ResNet50")


def test_unfreezing_only_layers_without_weights_is_refused():
    import keras

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.ReLU(name="top_relu")(
        keras.layers.Dense(2, name="dense")(inputs)))
    model.trainable = False
    with pytest.raises(ClassifyError, match="only layers without weights .*top_relu"):
        unfreeze_top(model, "top")


def test_missing_and_changed_images_are_left_out_and_none_usable_is_refused(deployable,
                                                                           tmp_path):
    images = shutil.copytree(deployable.images, tmp_path / "pets")
    data = load_dataset(deployable.store)
    head = load_head(deployable.heads / "softmax")
    (images / data.paths[0]).unlink()
    (images / data.paths[1]).write_bytes((images / data.paths[2]).read_bytes())
    found = find_training_images(data, head, deployable.heads / "softmax", images)
    assert found.missing == [data.paths[0]] and found.changed == [data.paths[1]]
    assert len(found.paths) == len(data.paths) - 2 and data.paths[2] in found.paths
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClassifyError, match=r"None of the 28 images .* \(28 missing"):
        find_training_images(data, head, deployable.heads / "softmax", empty)
    with pytest.raises(ClassifyError, match="pass --images DIR"):
        find_training_images(data, head, deployable.heads / "softmax", tmp_path / "gone")
    no_split = shutil.copytree(deployable.heads / "softmax", tmp_path / "head")
    (no_split / "split.csv").unlink()
    with pytest.raises(HeadError, match="split.csv' is missing"):
        find_training_images(data, head, no_split, images)


def test_images_fit_head_excluded_are_left_out_of_fine_tuning(deployable, tmp_path):
    """A head fitted with --exclude marks those images in split.csv; fine-tune skips them."""
    data = load_dataset(deployable.store)
    head = load_head(deployable.heads / "softmax")
    head_dir = shutil.copytree(deployable.heads / "softmax", tmp_path / "head")
    with open(head_dir / "split.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    flagged = [row["path"] for row in rows if row["split"] == "train"][:2]
    for row in rows:
        row["excluded"] = "yes" if row["path"] in flagged else ""
    with open(head_dir / "split.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = json.loads((head_dir / "head.json").read_text())  # as fit-head --exclude records it
    meta["files"]["split.csv"] = sha256_file(head_dir / "split.csv")
    (head_dir / "head.json").write_text(json.dumps(meta))
    found = find_training_images(data, head, head_dir, deployable.images)
    assert found.excluded == flagged
    assert not set(flagged) & set(found.paths)
    assert len(found.paths) == len(data.paths) - 2


def test_bad_options_and_other_settings_are_refused_before_the_backbone_is_built(
        deployable, tmp_path, capsys):
    head_dir = deployable.heads / "softmax"
    for argv, message in [(["--epochs", "0"], "--epochs: must be >= 1, got 0"),
                          (["--learning-rate", "0"], "--learning-rate: must be > 0 and <= 1")]:
        assert fine_tune_main(["--features", str(deployable.store), "--head", str(head_dir),
                               *argv]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(UsageError, match="--batch-size must be >= 1, got 0"):
        fine_tune(deployable.store, head_dir, batch_size=0)
    with pytest.raises(UsageError, match="--unfreeze PREFIX is needed for MobileNet"):
        fine_tune(deployable.store, head_dir, out_dir=tmp_path / "out")
    out = tmp_path / "out"
    Checkpoint(checkpoint_dir(out)).save(
        {"epoch": 1, "settings": {"learning_rate": 1e-4, "unfreeze": UNFREEZE}}, {})
    assert fine_tune_main(["--features", str(deployable.store), "--head", str(head_dir),
                           "--unfreeze", UNFREEZE, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds an interrupted fine-tune with other settings" in err
    assert "learning_rate 0.0001 vs 1e-05" in err and "No GPU" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 2  # images, then refusal


def test_augmentation_flips_and_crops_within_bounds_deterministically():
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    outs = [augment(pixels, np.random.default_rng([0, 1, key])) for key in range(40)]
    assert all(o.shape == pixels.shape and o.dtype == np.uint8 for o in outs)
    np.testing.assert_array_equal(outs[0], augment(pixels, np.random.default_rng([0, 1, 0])))
    flipped = [o for o in outs if np.array_equal(o, pixels[:, ::-1])]
    unchanged = [o for o in outs if np.array_equal(o, pixels)]
    assert len(flipped) + len(unchanged) < 40  # most are cropped as well


def test_a_checkpoint_is_committed_by_its_state_file_alone(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint")
    weights = [np.arange(3.0), np.ones((2, 2), np.float32)]
    state = checkpoint.save({"epoch": 1, "settings": {}}, {"last": weights, "best": weights})
    assert state["files"] == {"last": "last-0001.npz", "best": "last-0001.npz"}  # written once
    # Killed after epoch 2's arrays were renamed into place, before its state.json was.
    (checkpoint.directory / "last-0002.npz").write_bytes(b"not committed")
    loaded = checkpoint.load()
    assert loaded["epoch"] == 1
    for saved, original in zip(checkpoint.arrays(loaded, "last"), weights, strict=True):
        np.testing.assert_array_equal(saved, original)
    state = checkpoint.save({**loaded, "epoch": 2}, {"last": [np.zeros(3)]})
    assert state["files"] == {"last": "last-0002.npz", "best": "last-0001.npz"}
    assert sorted(p.name for p in checkpoint.directory.iterdir()) == [
        "last-0001.npz", "last-0002.npz", "state.json"]
    (checkpoint.directory / "state.json").write_text("{")
    with pytest.raises(ClassifyError, match="checkpoint in .* is damaged.*delete that folder"):
        checkpoint.load()


@pytest.mark.slow
def test_a_bfloat16_head_is_fine_tuned_in_bfloat16(deployable, tmp_path):
    """The backbone is rebuilt in the features' recorded precision, also on a CPU without
    bf16 units (TensorFlow emulates it there); its weights stay float32 variables."""
    import h5py
    import keras

    from headstart.classify.cli import fit_head_main

    store = tmp_path / "features.h5"
    shutil.copy(deployable.store, store)
    with h5py.File(store, "r+") as handle:  # the same rows, recorded as bfloat16 ones
        handle.attrs["precision"] = "mixed_bfloat16"
    heads = tmp_path / "heads"
    assert fit_head_main(["--features", str(store), "--model", "softmax", "-o", str(heads),
                          "--seed", str(deployable.seed), "--no-plots", "-q"]) == 0
    result = fine_tune(store, heads / "softmax", out_dir=tmp_path / "tuned", unfreeze=UNFREEZE,
                       epochs=1, batch_size=64, progress=False)
    assert result.metrics["after"]["test"]["n"] > 0
    tuned = keras.saving.load_model(tmp_path / "tuned" / "model.keras", safe_mode=True)
    conv = tuned.get_layer("backbone").get_layer(UNFREEZE)
    assert conv.dtype_policy.name == "mixed_bfloat16"
    assert conv.kernel.dtype == "float32"
    assert tuned.get_layer("probabilities").dtype_policy.name == "float32"
