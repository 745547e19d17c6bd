"""Fitting heads on synthetic stores: accuracy, chance, determinism, no leakage, 7 classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import IDENTITY, make_store, random_labels, separable
from sklearn.metrics import accuracy_score

from headstart.classify import HEADS, LogRegHead, fit_heads, load_head
from headstart.classify.split import read_split_csv
from headstart.features import open_store


def test_rows(store, out_dir):
    """(features, labels) of the test split, read back from the store and split.csv."""
    split = read_split_csv(out_dir / "split.csv")
    with open_store(store) as s:
        keep = np.array([split[p] == "test" for p in s.paths])
        return s.load_features()[keep], s.labels[keep]


test_rows.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def separable_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("sep") / "sep.h5", *separable())


@pytest.fixture(scope="module")
def separable_fit(separable_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("heads")
    return fit_heads(separable_store, models=HEADS, out_dir=out, plots=False), out


def test_separable_features_reach_full_test_accuracy(separable_fit):
    results, _ = separable_fit
    for result in results:
        assert result.metrics["test"]["accuracy"] >= 0.98, result.model
        assert result.metrics["test"]["balanced_accuracy"] >= 0.98, result.model


def test_random_labels_stay_near_chance(tmp_path):
    store = make_store(tmp_path / "random.h5", *random_labels())
    for result in fit_heads(store, models=HEADS, out_dir=None, epochs=30):
        test = result.metrics["test"]
        assert abs(test["accuracy"] - 0.5) < 0.12, (result.model, test)
        assert result.metrics["chance"]["uniform_accuracy"] == 0.5


def test_reported_accuracy_is_the_accuracy_of_the_saved_heads_predictions(separable_store,
                                                                          separable_fit):
    results, out = separable_fit
    for result in results:
        X_test, y_test = test_rows(separable_store, out / result.model)
        head = load_head(out / result.model)
        predicted = head.predict_proba(X_test).argmax(axis=1)
        assert result.metrics["test"]["accuracy"] == accuracy_score(y_test, predicted)
        assert result.metrics["test"]["n"] == len(y_test)


def test_seven_classes_report_categorical_accuracy(tmp_path):
    """A binary loss or metric on 7 classes reports 6/7 = 85.71%; ours must match sklearn."""
    store = make_store(tmp_path / "seven.h5", *separable(n=700, n_classes=7))
    results = fit_heads(store, models=HEADS, out_dir=tmp_path / "heads", plots=False)
    for result in results:
        X_test, y_test = test_rows(store, tmp_path / "heads" / result.model)
        predicted = result.head.predict_proba(X_test).argmax(axis=1)
        accuracy = result.metrics["test"]["accuracy"]
        assert accuracy == accuracy_score(y_test, predicted)
        assert accuracy >= 0.95, result.model
        assert len(result.head.classes) == 7 and result.head.layers[-1].kernel.shape[1] == 7
    softmax = results[1]
    history, best = softmax.estimator.history_, softmax.estimator.best_epoch_
    # Keras' own validation metric at the restored epoch is the categorical accuracy too.
    assert history["val_accuracy"][best - 1] == pytest.approx(
        softmax.metrics["validation"]["accuracy"], abs=1.5 / softmax.metrics["validation"]["n"])


def test_same_seed_twice_gives_identical_split_metrics_and_probabilities(separable_store, tmp_path):
    runs = [fit_heads(separable_store, models=HEADS, out_dir=tmp_path / f"run{i}", plots=False,
                      epochs=20) for i in range(2)]
    for first, second in zip(*runs, strict=True):
        assert (first.out_dir / "split.csv").read_bytes() == \
            (second.out_dir / "split.csv").read_bytes()
        a, b = (json.loads((r.out_dir / "metrics.json").read_text()) for r in (first, second))
        for measured in ("fit_seconds", "memory"):  # of the run, not of the result
            a.pop(measured), b.pop(measured)
        assert a == b
        X = open_store(separable_store).load_features()
        # Bit for bit, for both heads (softmax: Keras with op determinism, on one machine).
        np.testing.assert_array_equal(first.head.predict_proba(X), second.head.predict_proba(X))
    other = fit_heads(separable_store, models=("logreg",), out_dir=tmp_path / "seed1", seed=1,
                      plots=False)[0]
    assert (other.out_dir / "split.csv").read_bytes() != \
        (runs[0][0].out_dir / "split.csv").read_bytes()


def test_nothing_from_the_test_split_reaches_training(separable_store, tmp_path, monkeypatch):
    """Replacing every test row with noise must not change the fitted heads at all."""
    with open_store(separable_store) as s:
        X, y, paths = s.load_features(), s.labels, s.paths
    first = fit_heads(separable_store, models=HEADS, out_dir=tmp_path / "a", plots=False, epochs=20)
    split = read_split_csv(tmp_path / "a" / "logreg" / "split.csv")
    is_test = np.array([split[p] == "test" for p in paths])
    noisy = X.copy()
    noisy[is_test] = np.random.default_rng(1).normal(size=noisy[is_test].shape) * 100
    other = make_store(tmp_path / "noisy.h5", noisy, y, classes=["class0", "class1"])
    seen = []
    original = LogRegHead.fit

    def spy(self, X_train, y_train, *, validation_data=None):
        seen.append((X_train, validation_data[0]))
        return original(self, X_train, y_train, validation_data=validation_data)

    monkeypatch.setattr(LogRegHead, "fit", spy)
    second = fit_heads(other, models=HEADS, out_dir=None, epochs=20)
    for a, b in zip(first, second, strict=True):
        for layer_a, layer_b in zip(a.head.layers, b.head.layers, strict=True):
            np.testing.assert_array_equal(layer_a.kernel, layer_b.kernel)
        assert a.metrics["validation"] == b.metrics["validation"]
    test_rows_ = {row.tobytes() for row in noisy[is_test]}
    for train, val in seen:
        assert not test_rows_ & {row.tobytes() for row in np.concatenate([train, val])}


def test_float16_store_works(tmp_path):
    identity = IDENTITY.__class__(**{**IDENTITY.as_attrs(), "dtype": "float16"})
    store = make_store(tmp_path / "half.h5", *separable(), identity=identity)
    result = fit_heads(store, models=("logreg",), out_dir=None)[0]
    assert result.metrics["test"]["accuracy"] >= 0.98
    assert result.head.identity.dtype == "float16"


def test_balanced_class_weights_and_per_class_metrics(tmp_path):
    X, y = separable(n=600, dim=16, seed=3)
    keep = (y == 0) | (np.arange(len(y)) % 5 == 0)  # class1 becomes a ~1:5 minority
    store = make_store(tmp_path / "imbalanced.h5", X[keep], y[keep])
    results = fit_heads(store, models=HEADS, out_dir=None, class_weight="balanced", epochs=40)
    for result in results:
        assert result.metrics["options"]["class_weight"] == "balanced"
        per_class = result.metrics["test"]["per_class"]
        assert set(per_class) == {"class0", "class1"}
        assert per_class["class1"]["support"] < per_class["class0"]["support"]
        assert result.metrics["test"]["balanced_accuracy"] >= 0.9


def test_softmax_with_hidden_layer_and_dropout(separable_store):
    result = fit_heads(separable_store, models=("softmax",), out_dir=None, hidden_units=16,
                       dropout=0.2, epochs=40)[0]
    assert [layer.activation for layer in result.head.layers] == ["relu", "softmax"]
    assert result.metrics["parameters"]["trainable"] == 32 * 16 + 16 + 16 * 2 + 2
    assert result.metrics["test"]["accuracy"] >= 0.95
    # The numpy forward pass that predict uses agrees with Keras on the same weights.
    X = open_store(separable_store).load_features()
    keras_proba = result.estimator.model_.predict(X, verbose=0)
    np.testing.assert_allclose(result.head.predict_proba(X), keras_proba, atol=1e-5)


def test_a_model_without_trainable_parameters_is_refused():
    from headstart.classify.softmax import import_keras, require_trainable
    from headstart.errors import ClassifyError

    keras, _ = import_keras()
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    model.trainable = False
    with pytest.raises(ClassifyError, match="0 trainable parameters"):
        require_trainable(model)


def test_tensorflow_start_up_noise_is_dropped_and_the_rest_kept(capfd):
    import os

    from headstart.tf_quiet import native_stderr_captured

    with native_stderr_captured():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are ...\n")
        os.write(2, b"I0000 00:00:1795426501.203384   10746 port.cc:153] oneDNN custom ...\n")
        os.write(2, b"something the user must see\n")
    assert capfd.readouterr().err == "something the user must see\n"


def test_early_stopping_restores_the_best_epoch():
    """On labels it cannot learn, validation loss rises early; the head keeps its best epoch."""
    from sklearn.metrics import log_loss

    from headstart.classify import SoftmaxHead

    X, y = random_labels(n=600, dim=64)
    head = SoftmaxHead(patience=3, epochs=50).fit(X[:400], y[:400],
                                                  validation_data=(X[400:], y[400:]))
    assert head.epochs_run_ == head.best_epoch_ + 3 < 50
    restored = log_loss(y[400:], head.predict_proba(X[400:]))
    assert restored == pytest.approx(min(head.history_["val_loss"]), rel=1e-5)
    assert restored < head.history_["val_loss"][-1]


def test_a_summary_of_many_classes_names_the_weakest_and_the_confusions(tmp_path):
    """30 classes: the header gives their range of sizes, the details the 10 classes of
    lowest F1 and the most frequent confusions instead of a 30 x 30 matrix."""
    from headstart.classify import report

    rng = np.random.default_rng(3)
    X, y = separable(900, 16, n_classes=30, seed=3)
    y[:90] = rng.integers(0, 30, 90)  # some confusions
    result = fit_heads(make_store(tmp_path / "many.h5", X, y), ("logreg",), out_dir=None,
                       plots=False, C=1.0)[0]
    header = report.format_header(result.metrics)
    assert "30 classes of " in header and "class0 " not in header
    details = report.format_details(result.metrics)
    assert "the 10 classes of lowest F1 (all 30 in metrics.json)" in details
    assert "the most frequent confusions" in details and "confusion matrix" not in details
    lowest = sorted(result.metrics["test"]["per_class"].items(), key=lambda kv: kv[1]["f1"])
    assert lowest[0][0] in details.split("most frequent")[0]
    assert len(details.splitlines()) < 30
