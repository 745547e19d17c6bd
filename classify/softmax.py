"""A Keras head on stored features: standardise, [Dense relu, Dropout,] Dense softmax.

TensorFlow is imported only when a softmax head is fitted, so the logreg path and
`import headstart.classify` stay light. Every choice of the number of epochs is made
on the validation split (early stopping on validation loss, best weights restored);
the test split is never seen here.

Loss and metric are spelled out instead of the string "accuracy": integer labels with
a softmax output over all classes (two included) need SparseCategoricalCrossentropy
and SparseCategoricalAccuracy. A binary loss or metric on multi-class labels is what
reports 6/7 = 85.71% "accuracy" on a 7-class problem while learning nothing.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from headstart.classify.head import Layer, forward
from headstart.classify.options import SOFTMAX_DEFAULTS, SOFTMAX_NULLABLE, SOFTMAX_OPTIONS
from headstart.errors import ClassifyError
from headstart.options import check_options
from headstart.tf_quiet import import_keras as quiet_import_keras
from headstart.tf_quiet import native_stderr_captured

KERAS_EPSILON = 1e-7  # keras.backend.epsilon(), the floor of Normalization's divisor


def import_keras():
    """(keras, tensorflow), quietly; one clear sentence if TensorFlow is not installed."""
    try:
        keras = quiet_import_keras()
        import tensorflow as tf
    except ImportError:
        raise ClassifyError(
            "The softmax head needs TensorFlow: run `pip install 'tensorflow>=2.16'`, "
            "or use --model logreg."
        ) from None
    return keras, tf


def count_parameters(model) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts of a Keras model."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


def require_trainable(model) -> None:
    """Refuse a model that cannot learn: with every layer frozen, fit() silently changes nothing."""
    trainable, frozen = count_parameters(model)
    if trainable == 0:
        raise ClassifyError(
            f"The softmax head has 0 trainable parameters ({frozen:,} frozen), so training would "
            "change nothing; unfreeze its Dense layers."
        )


def build_model(keras, dim: int, n_classes: int, *, mean: np.ndarray, variance: np.ndarray,
                hidden_units: int = 0, dropout: float = 0.0, seed: int = 0):
    """features (dim,) -> standardise -> [Dense(hidden_units, relu)] -> [Dropout] -> softmax."""
    inputs = keras.Input(shape=(dim,), name="features")
    h = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(inputs)
    if hidden_units:
        h = keras.layers.Dense(hidden_units, activation="relu", name="hidden",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(h)
    if dropout:
        h = keras.layers.Dropout(dropout, seed=seed + 1, name="dropout")(h)
    # Zeros, not Glorot: on 4096 standardised inputs, random weights start with logits of
    # std ~1.4 and a validation loss above chance; zeros start at log(n_classes).
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="classes",
                                 kernel_initializer="zeros")(h)
    return keras.Model(inputs, outputs, name="softmax_head")


class SoftmaxHead(ClassifierMixin, BaseEstimator):
    """Keras softmax head with early stopping on validation loss; deterministic for a seed.

    Learned attributes: ``model_`` (keras.Model, takes raw features), ``mean_``, ``scale_``,
    ``layers_`` (the Dense weights as arrays), ``history_`` (loss, accuracy, val_loss,
    val_accuracy per epoch), ``best_epoch_`` (1-based), ``n_trainable_``, ``n_non_trainable_``.
    """

    # Allowed values, checked when fit starts; fit-head's parser reads the same declaration.
    OPTIONS = SOFTMAX_OPTIONS
    NULLABLE = SOFTMAX_NULLABLE

    def __init__(self, hidden_units: int = SOFTMAX_DEFAULTS["hidden_units"],
                 dropout: float = SOFTMAX_DEFAULTS["dropout"],
                 epochs: int = SOFTMAX_DEFAULTS["epochs"],
                 patience: int = SOFTMAX_DEFAULTS["patience"],
                 batch_size: int = SOFTMAX_DEFAULTS["batch_size"],
                 learning_rate: float = SOFTMAX_DEFAULTS["learning_rate"],
                 class_weight: str | None = None, seed: int = 0, verbose: bool = False):
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.seed = seed
        self.verbose = verbose

    def fit(self, X: np.ndarray, y: np.ndarray, *,
            validation_data: tuple[np.ndarray, np.ndarray]) -> SoftmaxHead:
        """X: float, shape (n, dim); y: int labels 0..n_classes-1, every class present.

        Raises UsageError for an option out of range, before any work; ClassifyError when
        TensorFlow is missing or the model has no trainable parameter.
        """
        self.check_params()
        keras, tf = self._start()
        X = np.asarray(X, dtype=np.float32)
        y = self._codes(y)
        X_val, y_val = validation_data
        y_val = np.searchsorted(self.classes_, y_val)
        train = _dataset(tf, X, y, self._sample_weight(y), batch_size=self.batch_size,
                         shuffle_seed=self.seed)
        val = _dataset(tf, np.asarray(X_val, dtype=np.float32), y_val,
                       self._sample_weight(y_val), batch_size=1024)
        # constant columns get scale 1, never a huge factor
        return self._train(keras, StandardScaler().fit(X), train, val)

    def fit_streamed(self, source, train: np.ndarray, y: np.ndarray, validation: np.ndarray,
                     y_val: np.ndarray) -> SoftmaxHead:
        """The same fit on rows read from the store as they are needed (a tf.data pipeline
        over a generator), one group of rows in memory at a time: standardisation from one
        pass of StandardScaler.partial_fit, each epoch's train rows in an order drawn from
        (seed, epoch) as groups of random spans (streamed.RowSource.groups) shuffled inside,
        the same early stopping on validation loss.

        source: a streamed.RowSource; train, validation: sorted row indices into it;
        y, y_val: their labels. Raises as `fit`.
        """
        from headstart.classify.streamed import streamed_scaler

        self.check_params()
        keras, tf = self._start()
        codes = self._codes(y)
        val_codes = np.searchsorted(self.classes_, y_val)
        scaler = streamed_scaler(rows for _, rows in source.blocks(train))
        dim = len(scaler.mean_)
        data = _streamed_dataset(tf, source, train, codes, self._sample_weight(codes), dim=dim,
                                 batch_size=self.batch_size, seed=self.seed)
        val = _streamed_dataset(tf, source, validation, val_codes,
                                self._sample_weight(val_codes), dim=dim, batch_size=1024)
        return self._train(keras, scaler, data, val)

    def _start(self):
        """(keras, tensorflow), seeded and deterministic for this head's seed."""
        keras, tf = import_keras()
        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        return keras, tf

    def _codes(self, y: np.ndarray) -> np.ndarray:
        """Sets classes_; output unit i is class classes_[i]."""
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"SoftmaxHead needs at least two classes, got {self.classes_}.")
        return np.searchsorted(self.classes_, y)

    def _train(self, keras, scaler, train, val) -> SoftmaxHead:
        """Build the model on the scaler's statistics and fit it on the two datasets."""
        mean, variance = scaler.mean_.astype(np.float32), (scaler.scale_ ** 2).astype(np.float32)
        self.mean_ = mean
        self.scale_ = np.maximum(np.sqrt(variance), np.float32(KERAS_EPSILON))
        with native_stderr_captured():  # the first variable initialises the devices
            model = build_model(keras, len(mean), len(self.classes_), mean=mean,
                                variance=variance, hidden_units=self.hidden_units,
                                dropout=self.dropout, seed=self.seed)
        self.n_trainable_, self.n_non_trainable_ = count_parameters(model)
        require_trainable(model)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience,
                                                restore_best_weights=True)
        callbacks = [stopper] + ([_epoch_printer(keras, self.epochs)] if self.verbose else [])
        history = model.fit(train, validation_data=val, epochs=self.epochs, shuffle=False,
                            callbacks=callbacks, verbose=0)
        self.history_ = {k: [float(v) for v in values] for k, values in history.history.items()}
        losses = self.history_["val_loss"]
        self.best_epoch_ = int(np.argmin(losses)) + 1
        self.epochs_run_ = len(losses)
        self.model_ = model
        self.layers_ = [Layer(*layer.get_weights(), layer.activation.__name__)
                        for layer in model.layers if isinstance(layer, keras.layers.Dense)]
        return self

    def check_params(self) -> None:
        """UsageError naming the first option outside its declared range."""
        check_options(self.get_params(), self.OPTIONS, nullable=self.NULLABLE)

    def _sample_weight(self, y: np.ndarray) -> np.ndarray | None:
        """Per-image weights giving every class the same total weight (class_weight='balanced')."""
        return compute_sample_weight("balanced", y) if self.class_weight == "balanced" else None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """float64, shape (n, n_classes), computed from the weights in numpy (no TensorFlow)."""
        return forward(X, self.mean_, self.scale_, self.layers_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _epoch_printer(keras, epochs: int):
    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            print(f"  softmax epoch {epoch + 1:3d}/{epochs}: loss {logs.get('loss', 0):.4f}  "
                  f"accuracy {logs.get('accuracy', 0):.2%}  "
                  f"val_loss {logs.get('val_loss', 0):.4f}  "
                  f"val_accuracy {logs.get('val_accuracy', 0):.2%}", file=sys.stderr)

    return EpochPrinter()


def _dataset(tf, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None, *,
             batch_size: int, shuffle_seed: int | None = None):
    """A tf.data pipeline over in-memory arrays, reshuffled each epoch from a fixed seed.

    Built here rather than by Keras' array adapter: that adapter adds a parallel map
    (and noisy logs from some TensorFlow builds) for nothing on data already in memory.
    """
    columns = (X, y) if sample_weight is None else (X, y, sample_weight.astype(np.float32))
    data = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        data = data.shuffle(len(X), seed=shuffle_seed, reshuffle_each_iteration=True)
    return data.batch(batch_size)


def _streamed_dataset(tf, source, rows: np.ndarray, labels: np.ndarray,
                      sample_weight: np.ndarray | None, *, dim: int, batch_size: int,
                      seed: int | None = None):
    """A tf.data pipeline of (features, label[, weight]) batches read from `source` as they
    are needed. seed: each epoch reads the rows in an order drawn from (seed, epoch), as
    RowSource.groups' groups shuffled inside; None: store order (validation). A generator
    yields whole groups in order and tf.data cuts them into batches (`rebatch`, across
    groups), so the order is deterministic and the per-batch cost is tf.data's."""
    epochs = itertools.count()
    positions = np.arange(len(rows))

    def groups():
        rng = None if seed is None else np.random.default_rng([seed, next(epochs)])
        for part, block in (source.blocks(rows) if rng is None else source.groups(rows, rng)):
            at = positions[part]
            if rng is not None:
                shuffle = rng.permutation(len(at))
                at, block = at[shuffle], block[shuffle]
            y = labels[at].astype(np.int32)
            yield ((block, y) if sample_weight is None
                   else (block, y, sample_weight[at].astype(np.float32)))

    spec = (tf.TensorSpec((None, dim), tf.float32), tf.TensorSpec((None,), tf.int32))
    if sample_weight is not None:
        spec += (tf.TensorSpec((None,), tf.float32),)
    batches = -(-len(rows) // batch_size)
    return (tf.data.Dataset.from_generator(groups, output_signature=spec)
            .rebatch(batch_size)
            .apply(tf.data.experimental.assert_cardinality(batches))
            .prefetch(2))


def save_keras(model, path: str | Path) -> Path:
    """model.keras for Keras users (load with keras.saving.load_model(path, safe_mode=True)).

    Takes raw features: the standardisation is its first layer.
    """
    with warnings.catch_warnings():
        # TensorFlow variables meet numpy 2's copy= protocol while saving; harmless here.
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=".*__array__ implementation doesn't accept a copy")
        model.save(path)
    return Path(path)
