"""fine-tune: the second phase of transfer learning, end to end on the store's images.

    from headstart.classify.finetune import fine_tune
    result = fine_tune("features.h5", "heads/softmax", unfreeze="block5")   # heads/finetuned/

Phase one is the head fitted in seconds on stored features (fit-head). Phase two
(Géron, Hands-On ML, ch. 14; Keras' "Transfer learning & fine-tuning" guide) starts from
that head on top of its backbone, unfreezes the backbone's top layers, and trains them
with the head at a low learning rate (Adam, 1e-5 by default), so the pretrained
features are adjusted rather than destroyed:

* Unfrozen: every backbone layer from the first one whose name starts with `unfreeze`
  up to the feature layer ("block5" on VGG16 fc2: block5_conv1-3, fc1, fc2). Everything
  below stays frozen, bit for bit; so do the preprocessing layers and the head's
  standardisation. The head's Dense layers train.
* The model is always called with training=False, as the Keras guide prescribes, so
  BatchNormalization layers keep using their ImageNet moving statistics (and never
  update them) and Dropout inside a backbone is off. (In Keras 3 an outer training=True
  would override a training=False given when the base was called, so it is given here.)
* Data: the store's images on the head's own split (see finetune_data): train for the
  gradient steps, with flips and small crops; validation for early stopping (the best
  epoch's weights are restored); test once at the end, beside the head's accuracy on
  the stored features of the same test images.
* After each epoch the trainable weights and the optimizer state are checkpointed
  (headstart.classify.checkpoint), so the same command resumes after a kill from the
  last completed epoch, with the batches an uninterrupted run would have used.

The result is saved in export-head's format (headstart.classify.export) plus metrics.json
and training_curves.png. It is GPU work: on 2 CPU cores an epoch over 700 photos takes
minutes, on a GPU seconds.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from headstart.classify import report
from headstart.classify.checkpoint import CHECKPOINT_FOLDER, Checkpoint
from headstart.classify.dataset import load_dataset
from headstart.classify.export import (
    EXPORT_FOLDER,
    EXPORT_JSON,
    hub_float32_twin,
    write_export,
)
from headstart.classify.finetune_data import TrainingImages, batches, find_training_images
from headstart.classify.fused import build_classifier
from headstart.classify.options import FINE_TUNE_DEFAULTS, FINE_TUNE_OPTIONS
from headstart.classify.persist import HEAD_JSON, WEIGHTS, load_head
from headstart.classify.plots import plot_history
from headstart.classify.predict import backbone_for_head, head_backbone_info
from headstart.classify.softmax import count_parameters, import_keras
from headstart.classify.split import SPLITS
from headstart.errors import ClassifyError, Interrupted, UsageError
from headstart.options import check_options
from headstart.outputs import check_replaceable, replace_folder

METRICS = "metrics.json"
DEFAULT_UNFREEZE = {"vgg": "block5"}  # by backbone family; others must name their top block
OPTIONS = FINE_TUNE_OPTIONS
# Settings a resumed run must share with the checkpoint (epochs and patience may change).
RESUME_KEYS = ("store", "head", "images", "unfreeze", "learning_rate", "batch_size", "seed")


@dataclass
class FineTuneResult:
    out_dir: Path
    metrics: dict  # the content of metrics.json
    resumed_after: int  # epochs found completed in a checkpoint (0: a fresh start)
    already_done: bool = False  # out_dir held a finished fine-tune; nothing was run

    @property
    def before(self) -> float:
        """Test accuracy of the head on the stored features of the test images."""
        return self.metrics["before"]["test"]["accuracy"]

    @property
    def after(self) -> float:
        """Test accuracy of the fine-tuned model on the same images."""
        return self.metrics["after"]["test"]["accuracy"]


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the checkpoint of a fine-tune into out_dir lives: beside it."""
    return out_dir.with_name(out_dir.name + ".checkpoint")


def default_unfreeze(family: str, model_name: str, preset: str | None = None) -> str:
    """The layer-name prefix unfrozen by default ("blocks:2" for a KerasHub preset: its top
    two transformer blocks); UsageError for backbones without one."""
    if preset:
        from headstart.extract.hub import DEFAULT_UNFREEZE as HUB_DEFAULT

        return HUB_DEFAULT
    if family in DEFAULT_UNFREEZE:
        return DEFAULT_UNFREEZE[family]
    raise UsageError(
        f"--unfreeze PREFIX is needed for {model_name}: the name prefix of the first layer to "
        "train (it and every layer above it are unfrozen); "
        f"`keras.applications.{model_name}(weights=None).summary()` lists the layer names."
    )


def unfreeze_top(feature_model, prefix: str) -> list[str]:
    """Make the layers from the first whose name starts with `prefix` to the top trainable.

    Every layer below stays frozen. Returns the names of the unfrozen layers that hold
    weights. Raises UsageError when no layer matches, ClassifyError when the matched
    layers hold no weights (training would change nothing: refused, not run).
    "blocks:N" (KerasHub presets): see unfreeze_top_blocks.
    """
    if prefix.startswith(BLOCKS):
        return unfreeze_top_blocks(feature_model, _block_count(prefix))
    names = [layer.name for layer in feature_model.layers]
    first = next((i for i, name in enumerate(names) if name.startswith(prefix)), None)
    if first is None:
        raise UsageError(
            f"--unfreeze {prefix!r} matches no layer of the backbone; layer names "
            f"end with {', '.join(names[-6:])} (the top block's prefix, e.g. "
            f"{names[-1].split('_')[0]!r})."
        )
    feature_model.trainable = True
    for index, layer in enumerate(feature_model.layers):
        layer.trainable = index >= first
    unfrozen = [layer.name for layer in feature_model.layers[first:] if layer.weights]
    if not sum(int(np.prod(w.shape)) for w in feature_model.trainable_weights):
        raise ClassifyError(
            f"--unfreeze {prefix!r} unfreezes only layers without weights "
            f"({', '.join(names[first:])}), so training would change nothing; choose a lower "
            "block."
        )
    return unfrozen


BLOCKS = "blocks:"


def _block_count(value: str) -> int:
    count = value[len(BLOCKS):]
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"--unfreeze {value!r}: give blocks:N with N a whole number of at "
                         "least 1, e.g. blocks:2 for the top two transformer blocks.")
    return int(count)


def unfreeze_top_blocks(feature_model, count: int) -> list[str]:
    """Make the top `count` transformer blocks of a KerasHub backbone trainable, with every
    weight above them (final LayerNorm, attention-pooling head, projection); the patch
    embedding, class token, position embeddings and lower blocks stay frozen.

    Blocks are the layers of `headstart.extract.hub.BLOCK_CLASSES`. "Above" is by the order
    of `feature_model.weights`, which follows the graph from the pixels (embedding, block
    0, block 1, ..., final norm, head); freezing is per weight (Keras 3's
    `Variable.trainable`), since the blocks sit inside one encoder layer.
    Returns the unfrozen blocks' and layers' names, bottom to top. Raises UsageError when
    the backbone has fewer than `count` such blocks.
    """
    from headstart.extract.hub import BLOCK_CLASSES

    weights = feature_model.weights
    index = {id(weight): i for i, weight in enumerate(weights)}
    blocks = [layer for layer in feature_model._flatten_layers(include_self=False)
              if type(layer).__name__ in BLOCK_CLASSES and layer.weights]
    if not blocks or count > len(blocks):
        raise UsageError(f"--unfreeze blocks:{count}: the backbone has {len(blocks)} "
                         "transformer blocks; choose at most that many.")
    blocks.sort(key=lambda block: index[id(block.weights[0])])
    top = blocks[-count:]
    first = index[id(top[0].weights[0])]
    feature_model.trainable = True
    for weight in weights[:first]:
        weight.trainable = False
    block_paths = [block.weights[0].path.split(block.name + "/")[0] + block.name + "/"
                   for block in top]
    containers = {path.split("/")[0] for path in block_paths if path.count("/") > 1}
    unfrozen = [block.name for block in top]
    for weight in weights[first:]:
        if not weight.trainable or any(weight.path.startswith(p) for p in block_paths):
            continue
        parts = weight.path.split("/")
        name = "/".join(parts[:2]) if parts[0] in containers else parts[0]
        if name not in unfrozen:
            unfrozen.append(name)
    return unfrozen


def fine_tune(features: str | Path = FINE_TUNE_DEFAULTS["features"],
              head: str | Path = FINE_TUNE_DEFAULTS["head"], *,
              out_dir: str | Path | None = None, unfreeze: str | None = None,
              images: str | Path | None = None, epochs: int = FINE_TUNE_DEFAULTS["epochs"],
              patience: int = FINE_TUNE_DEFAULTS["patience"],
              learning_rate: float = FINE_TUNE_DEFAULTS["learning_rate"],
              batch_size: int = FINE_TUNE_DEFAULTS["batch_size"],
              seed: int = FINE_TUNE_DEFAULTS["seed"],
              weights_path: str | Path | None = None, preset: str | Path | None = None,
              tflite: bool = False, quantize: str = "none", progress: bool = True,
              workers: int | None = None,
              log: Callable[[str], None] | None = None) -> FineTuneResult:
    """Fine-tune the backbone's top layers and the head at `head` on the images of `features`.

    features: the store the head was fitted on. head: a head folder from fit-head
        (softmax, or logreg: both are dense layers ending in a softmax).
    out_dir: default <head's parent>/finetuned; its checkpoint is out_dir + ".checkpoint".
    unfreeze: layer-name prefix of the first layer to train (default "block5" on VGG);
        "blocks:N" for a KerasHub preset: its top N transformer blocks (default 2) and
        every weight above them.
    images: the image folder, when it moved since extraction (default: the store's).
    epochs: at most this many epochs (a resumed run may change it); patience: stop after
        this many epochs without a lower validation loss.
    learning_rate: Adam's; batch_size: images per step; seed: order and augmentation.
    weights_path: the extraction's weights file when it moved (sha256 checked).
    preset: the KerasHub preset folder, when the features came from one that moved.
    tflite, quantize: as export-head. log: called with each line of the report.
    Raises UsageError (an option), HeadError, StoreError, WeightsError, ClassifyError
    (images, output folder, other settings than the checkpoint's), all before the
    backbone is built; ClassifyError when the unfrozen layers hold no weights;
    Interrupted (Ctrl-C: completed epochs are kept, the same call resumes).
    """
    log = log or (lambda line: None)
    check_options({"epochs": epochs, "patience": patience, "learning_rate": learning_rate,
                   "batch_size": batch_size, "seed": seed, "quantize": quantize}, OPTIONS)
    head_dir = Path(head)
    out_dir = Path(out_dir) if out_dir is not None else head_dir.parent / "finetuned"
    model_head = load_head(head_dir)
    check_replaceable(out_dir, EXPORT_FOLDER)
    check_replaceable(checkpoint_dir(out_dir), CHECKPOINT_FOLDER,
                      option="-o (its checkpoint folder)")
    done = _finished(out_dir)
    if done is not None:
        log(f"'{out_dir}' already holds a finished fine-tune; delete it to run again.")
        return FineTuneResult(out_dir, done, 0, already_done=True)
    data = load_dataset(features)
    model_head.check_matches(data.identity, data.dim, str(features), classes=data.classes)
    found = find_training_images(data, model_head, head_dir, images)
    _log_images(found, log)
    info = head_backbone_info(model_head, weights_path, preset)
    settings = {"store": str(data.source.resolve()), "head": _head_digest(head_dir),
                "images": _images_digest(found),
                "unfreeze": unfreeze or default_unfreeze(info.family, info.name, info.preset),
                "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
                "epochs": epochs, "patience": patience}
    checkpoint = Checkpoint(checkpoint_dir(out_dir))
    state = _resumable_state(checkpoint, settings)

    keras, tf = import_keras()
    tf.config.experimental.enable_op_determinism()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not gpus:
        log("No GPU is visible: fine-tuning is GPU work and runs on the CPU here, minutes per "
            "epoch for a few hundred images (the progress bar shows the ETA).")
    # The precision the features were made in (emulated, slower, where this machine
    # lacks it): the fine-tuned model starts from exactly the head's inputs.
    backbone = backbone_for_head(model_head, weights_path, preset, devices=gpus[:1])
    model = build_classifier(keras, backbone.model, model_head, info.mode,
                             (info.scale, info.offset))
    unfrozen = unfreeze_top(backbone.model, settings["unfreeze"])
    trainable, frozen = count_parameters(model)
    log(f"trainable parameters {trainable:,} (backbone {unfrozen[0]} ... {unfrozen[-1]}, "
        f"{len(unfrozen)} layers with weights, and the head); frozen {frozen:,}")
    trainer = Trainer(keras, tf, model, learning_rate)
    resumed_after = state["epoch"]
    if resumed_after:
        trainer.set_trainable(checkpoint.arrays(state, "last"))
        trainer.set_optimizer_state(checkpoint.arrays(state, "optimizer"))
        log(f"resuming after epoch {resumed_after} (checkpoint in '{checkpoint.directory}')")
    options = {"size": int(model.input.shape[1]), "batch_size": batch_size, "seed": seed,
               "workers": workers, "resize": info.resize}
    try:
        state = _train(trainer, found, checkpoint, state, epochs=epochs, patience=patience,
                       progress=progress, log=log, **options)
    except KeyboardInterrupt:
        completed = (checkpoint.load() or {"epoch": 0})["epoch"]
        raise Interrupted(
            f"Interrupted: {completed} epoch(s) of fine-tuning are saved in "
            f"'{checkpoint.directory}'; run the same command again to resume from epoch "
            f"{completed + 1}."
        ) from None
    trainer.set_trainable(checkpoint.arrays(state, "best"))
    metrics = {
        "fine_tune": True, "classes": list(model_head.classes),
        **_before_and_after(trainer, model_head, data.features, found, options),
        "parameters": {"trainable": trainable, "non_trainable": frozen, "unfrozen": unfrozen},
        "selection": {"criterion": "early stopping on validation loss, best weights restored",
                      "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
                      "stopped_early": state["stopped_early"], "history": state["history"]},
        "images": {"root": str(found.root), "used": len(found.paths), "missing": found.missing,
                   "changed": found.changed, "not_in_split": found.unsplit,
                   "excluded_by_fit_head": found.excluded,
                   "per_split": {name: int(len(found.rows(name))) for name in SPLITS}},
        "options": {k: v for k, v in settings.items() if k not in ("store", "head", "images")},
        "store": settings["store"], "head": str(head_dir.resolve()),
        "pipeline": asdict(model_head.identity), "devices": gpus[:1] or ["CPU"],
        "train_seconds": round(state["seconds"], 1),
    }
    _save(model, model_head, out_dir, metrics, tflite or quantize != "none", quantize, log,
          info.resize, hub_float32_twin(keras, info, model_head, model))
    checkpoint.remove()
    return FineTuneResult(out_dir, metrics, resumed_after)


def _finished(out_dir: Path) -> dict | None:
    """metrics.json of a fine-tune already completed into out_dir, else None."""
    path = out_dir / METRICS
    if not (path.is_file() and (out_dir / EXPORT_JSON).is_file()):
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("fine_tune") else None


def _before_and_after(trainer: Trainer, head, features: np.ndarray, found: TrainingImages,
                      options: dict) -> dict:
    """Validation and test metrics of the head on stored features and of the trained model."""
    rows = {name: found.rows(name) for name in ("validation", "test")}
    before = {name: report.split_metrics(found.labels[r], head.predict_proba(
        features[found.store_rows[r]])) for name, r in rows.items()}
    after = {name: report.split_metrics(found.labels[r], trainer.probabilities(
        batches(found, r, **options))) for name, r in rows.items()}
    return {"before": before, "after": after}


def format_comparison(metrics: dict) -> str:
    """Before and after, side by side: validation and test accuracy and log loss."""
    rows = [["", "before (head)", "after (fine-tuned)"]]
    for split in ("validation", "test"):
        n = metrics["before"][split]["n"]
        for key, label in (("accuracy", "accuracy"), ("log_loss", "log loss")):
            values = [metrics[when][split][key] for when in ("before", "after")]
            cells = [report.percent(v) if key == "accuracy" else f"{v:.4f}" for v in values]
            rows.append([f"{split} {label} ({n} images)", *cells])
    return report.table(rows, "lrr")


class Trainer:
    """The model, Adam, and compiled steps: one training step, one evaluation pass."""

    def __init__(self, keras, tf, model, learning_rate: float):
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(model.trainable_variables)
        loss = keras.losses.SparseCategoricalCrossentropy()
        size = int(model.input.shape[1])
        pixels = tf.TensorSpec([None, size, size, 3], tf.as_dtype(model.input.dtype))

        @tf.function(input_signature=[pixels, tf.TensorSpec([None], tf.int32)])
        def step(x, y):
            with tf.GradientTape() as tape:
                # training=False: BatchNorm in inference mode (Keras' transfer-learning guide).
                probabilities = model(x, training=False)
                value = loss(y, probabilities)
            variables = model.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(value, variables), variables,
                                               strict=True))
            return value, probabilities

        self.step = step
        self.forward = tf.function(lambda x: model(x, training=False), input_signature=[pixels])

    def probabilities(self, stream) -> np.ndarray:
        """float64 (n, n_classes) for the (pixels, labels) batches of `stream`.

        Renormalised in float64: float32 rows sum to 1 only within ~1e-7, which
        scikit-learn's log_loss warns about.
        """
        p = np.concatenate([self.forward(x).numpy().astype(np.float64) for x, _ in stream])
        return p / p.sum(axis=1, keepdims=True)

    def trainable(self) -> list[np.ndarray]:
        """Copies of the trainable weights, in model.trainable_variables order."""
        return [v.numpy() for v in self.model.trainable_variables]

    def set_trainable(self, values: list[np.ndarray]) -> None:
        """Assign weights saved by `trainable`; ClassifyError if their shapes differ."""
        _assign(self.model.trainable_variables, values, "trainable weights")

    def optimizer_state(self) -> list[np.ndarray]:
        """Copies of Adam's variables: iteration count, learning rate, both moments."""
        return [v.numpy() for v in self.optimizer.variables]

    def set_optimizer_state(self, values: list[np.ndarray]) -> None:
        """Assign variables saved by `optimizer_state`; ClassifyError if they differ."""
        _assign(self.optimizer.variables, values, "optimizer variables")


def _assign(variables, values: list[np.ndarray], what: str) -> None:
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [tuple(np.shape(v)) for v in values]:
        raise ClassifyError(f"The checkpoint's {what} do not fit this model; delete the "
                            "checkpoint folder to start again.")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _resumable_state(checkpoint: Checkpoint, settings: dict) -> dict:
    """The checkpoint's state (with today's settings), or a fresh one; refuses other settings."""
    state = checkpoint.load()
    if state is None:
        return {"settings": settings, "epoch": 0, "best_epoch": 0, "best_val_loss": None,
                "wait": 0, "stopped_early": False, "seconds": 0.0,
                "history": {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}}
    differences = [f"{key} {state['settings'].get(key)!r} vs {settings[key]!r}"
                   for key in RESUME_KEYS if state["settings"].get(key) != settings[key]]
    if differences:
        raise ClassifyError(
            f"'{checkpoint.directory}' holds an interrupted fine-tune with other settings "
            f"({'; '.join(differences)}: checkpoint vs now); run it with its settings to resume, "
            "or delete that folder to start again."
        )
    return {**state, "settings": settings}


def _train(trainer: Trainer, found: TrainingImages, checkpoint: Checkpoint, state: dict, *,
           epochs: int, patience: int, size: int, batch_size: int, seed: int,
           workers: int | None, progress: bool, log: Callable[[str], None],
           resize: Callable | None = None) -> dict:
    train, validation = found.rows("train"), found.rows("validation")
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["stopped_early"]:
            break
        start = time.perf_counter()
        loss_sum, seen, correct = 0.0, 0, 0
        with tqdm(total=len(train), unit="img", desc=f"epoch {epoch}/{epochs}",
                  file=sys.stderr, disable=not progress, smoothing=0.1, leave=False) as bar:
            for x, y in batches(found, train, size=size, batch_size=batch_size, seed=seed,
                                epoch=epoch, workers=workers, resize=resize):
                loss, probabilities = trainer.step(x, y)
                loss_sum, seen = loss_sum + float(loss) * len(y), seen + len(y)
                correct += int((probabilities.numpy().argmax(axis=1) == y).sum())
                bar.update(len(y))
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        val = report.split_metrics(found.labels[validation], trainer.probabilities(
            batches(found, validation, size=size, batch_size=batch_size, seed=seed,
                    workers=workers, resize=resize)))
        history = state["history"]
        for key, value in (("loss", loss_sum / seen), ("accuracy", correct / seen),
                           ("val_loss", val["log_loss"]), ("val_accuracy", val["accuracy"])):
            history[key].append(float(value))
        improved = state["best_val_loss"] is None or val["log_loss"] < state["best_val_loss"]
        if improved:
            state.update(best_epoch=epoch, best_val_loss=val["log_loss"], wait=0)
        else:
            state["wait"] += 1
        state.update(epoch=epoch, stopped_early=state["wait"] >= patience,
                     seconds=state["seconds"] + time.perf_counter() - start)
        arrays = {"last": trainer.trainable(), "optimizer": trainer.optimizer_state()}
        if improved:
            arrays["best"] = arrays["last"]
        state = checkpoint.save(state, arrays)
        log(f"epoch {epoch}/{epochs}: loss {history['loss'][-1]:.4f}  accuracy "
              f"{report.percent(history['accuracy'][-1])}  val_loss {val['log_loss']:.4f}  "
              f"val_accuracy {report.percent(val['accuracy'])}"
              f"{'  (best)' if improved else ''}  {time.perf_counter() - start:.0f} s")
        if state["stopped_early"]:
            log(f"stopping: no lower validation loss for {patience} epochs; "
                  f"restoring epoch {state['best_epoch']}")
    return state


def _save(model, head, out_dir: Path, metrics: dict, tflite: bool, quantize: str,
          log: Callable[[str], None], resize: Callable | None = None,
          float32_model: Callable | None = None) -> None:
    def write(staging: Path) -> None:
        write_export(model, staging, head, tflite=tflite, quantize=quantize,
                     details={"fine_tuned": {"from_head": metrics["head"],
                                             "unfrozen": metrics["parameters"]["unfrozen"]}},
                     log=log, resize=resize, float32_model=float32_model)
        history = metrics["selection"]["history"]
        plot_history(history, metrics["selection"]["best_epoch"],
                     staging / "training_curves.png",
                     f"fine-tuned {metrics['pipeline']['model']} on {Path(metrics['store']).name}")
        report.write_json(metrics, staging / METRICS)

    log(f"saving the fine-tuned model to {out_dir}/")
    replace_folder(out_dir, EXPORT_FOLDER, write)


def _log_images(found: TrainingImages, log: Callable[[str], None]) -> None:
    counts = ", ".join(f"{name} {len(found.rows(name)):,}"
                       for name in ("train", "validation", "test"))
    log(f"{len(found.paths):,} images in '{found.root}' on the head's split: {counts}")
    for what, paths in (("missing or unreadable", found.missing),
                        ("changed since extraction", found.changed),
                        ("not in the head's split", found.unsplit),
                        ("left out by fit-head --exclude", found.excluded)):
        if paths:
            log(f"left out: {len(paths):,} images {what} (first: '{paths[0]}')")


def _head_digest(head_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (HEAD_JSON, WEIGHTS):
        digest.update((head_dir / name).read_bytes())
    return digest.hexdigest()


def _images_digest(found: TrainingImages) -> str:
    digest = hashlib.sha256()
    for sha, split in zip(found.hashes, found.splits.tolist(), strict=True):
        digest.update(f"{sha}:{split};".encode())
    return digest.hexdigest()
