"""The linear probe on rows read in blocks, against scikit-learn's in-memory fit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_store
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from headstart.classify import fit_heads, load_head, predict_store
from headstart.classify.head import forward
from headstart.classify.logreg import softmax_layers, split_coefficients
from headstart.classify.streamed import RowSource, fit_logistic, parse_memory, streamed_scaler
from headstart.errors import UsageError


def clustered(n: int, dim: int, classes: int, seed: int = 0, noise: float = 1.5
              ) -> tuple[np.ndarray, np.ndarray]:
    """float16 rows around one centre per class, overlapping (not separable), uneven
    classes and feature scales, like stored features."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=n, p=np.linspace(1, 2, classes) / np.linspace(1, 2, classes)
                   .sum())
    centres = rng.normal(size=(classes, dim))
    X = (centres[y] + noise * rng.normal(size=(n, dim))) * rng.uniform(0.1, 10, dim) + 3
    return X.astype(np.float16), y


def blocks_of(X, y, sample_weight=None, block_rows: int = 4096):
    """fit_logistic's blocks over arrays in memory, read as fit-head reads a store."""
    source = RowSource(X, block_rows)
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    return lambda: ((rows, y[part], weight[part])
                    for part, rows in source.blocks(np.arange(len(y))))


def probabilities(w, rows, mean, scale):
    """What the saved head predicts from a fit_logistic result."""
    return forward(rows, mean, scale, softmax_layers(*split_coefficients(w)))


def test_the_streamed_scaler_equals_standard_scaler_fit():
    X, _ = clustered(1000, 16, 3)
    X[:, 5] = 7  # a constant feature: scale 1, as StandardScaler sets it
    whole = StandardScaler().fit(X.astype(np.float64))
    streamed = streamed_scaler(X[i:i + 128] for i in range(0, len(X), 128))
    np.testing.assert_allclose(streamed.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(streamed.scale_, whole.scale_, rtol=1e-10)
    assert streamed.scale_[5] == 1.0


@pytest.mark.parametrize("classes, class_weight, C", [(3, None, 0.1), (5, "balanced", 1.0),
                                                      (2, None, 0.01), (2, "balanced", 10.0)])
def test_the_streamed_fit_agrees_with_scikit_learn_in_memory(classes, class_weight, C):
    """Same objective and optimiser: probabilities within 1e-4, log loss within 1e-4
    relative, coefficients within 1e-3 of the largest (both stop at gtol 1e-4)."""
    X, y = clustered(1500, 24, classes, seed=classes)
    X_val, y_val = clustered(500, 24, classes, seed=classes + 10)
    scaler = StandardScaler().fit(X.astype(np.float64))
    reference = LogisticRegression(C=C, class_weight=class_weight, max_iter=1000).fit(
        scaler.transform(X.astype(np.float64)), y)
    weight = compute_sample_weight("balanced", y) if class_weight else None
    fit = fit_logistic(blocks_of(X, y, weight, block_rows=333), classes, 24, C=C,
                       mean=scaler.mean_, scale=scaler.scale_,
                       weight_sum=len(y) if weight is None else weight.sum())
    w = fit.w
    assert w.shape == (1 if classes == 2 else classes, 25) and fit.n_iter > 1
    assert fit.passes >= fit.n_iter
    np.testing.assert_allclose(w[:, :24], reference.coef_, rtol=0,
                               atol=1e-3 * np.abs(reference.coef_).max())
    expected = reference.predict_proba(scaler.transform(X_val.astype(np.float64)))
    actual = probabilities(w, X_val, scaler.mean_, scaler.scale_)
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    assert log_loss(y_val, actual) == pytest.approx(log_loss(y_val, expected), rel=1e-4)


def test_a_warm_start_from_a_neighbouring_c_needs_fewer_iterations():
    X, y = clustered(1500, 24, 4)
    scaler = streamed_scaler([X])
    blocks = blocks_of(X, y, block_rows=500)
    options = dict(mean=scaler.mean_, scale=scaler.scale_)
    small = fit_logistic(blocks, 4, 24, C=0.1, weight_sum=len(y), **options)
    cold = fit_logistic(blocks, 4, 24, C=0.3, weight_sum=len(y), **options)
    warm = fit_logistic(blocks, 4, 24, C=0.3, weight_sum=len(y), warm_start=small.w, **options)
    assert warm.n_iter < cold.n_iter and warm.passes < cold.passes
    warm, cold = warm.w, cold.w
    # The same optimum to L-BFGS's tolerance (gtol 1e-4): log loss within 1e-3 relative.
    assert log_loss(y, probabilities(warm, X, **options)) == pytest.approx(
        log_loss(y, probabilities(cold, X, **options)), rel=1e-3)


# ---- fit-head on a store larger than its --memory --------------------------------------------

@pytest.fixture(scope="module")
def overlapping_store(tmp_path_factory):
    """3,000 rows x 64 features of 3 overlapping classes: a fit whose C matters."""
    X, y = clustered(3000, 64, 3, seed=7, noise=5.0)
    return make_store(tmp_path_factory.mktemp("streamed") / "features.h5",
                      X.astype(np.float32), y)


def test_parse_memory_takes_sizes_and_refuses_the_rest():
    assert parse_memory("1500M") == 1500 << 20 and parse_memory("4G") == 4 << 30
    assert parse_memory("2.5g") == int(2.5 * (1 << 30)) and parse_memory("3GiB") == 3 << 30
    assert parse_memory("2097152") == 2 << 20
    for bad in ("lots", "-1G", "512K", "0", "G"):
        with pytest.raises(UsageError, match=f"--memory takes a size such as 1500M or 4G "
                                             f"\\(at least 1M\\), got '{bad}'"):
            parse_memory(bad)


def test_a_store_over_the_memory_budget_is_fitted_in_blocks_like_in_memory(
        overlapping_store, tmp_path):
    """A 1 MiB budget (the in-memory fit needs 4.6 MB): the rows are read 478 at a time and
    C is chosen on the 1,901 train rows that a quarter of the budget holds, then fitted on
    all. Against the in-memory fit of the same store: the same C, test accuracy within 0.5
    points, test log loss within 1%."""
    logged = []
    streamed = fit_heads(overlapping_store, ("logreg",), out_dir=tmp_path / "streamed",
                         memory="1M", plots=False, log=logged.append)[0].metrics
    in_memory = fit_heads(overlapping_store, ("logreg",), out_dir=tmp_path / "memory",
                          plots=False)[0].metrics
    assert streamed["memory"]["streamed"] and not in_memory["memory"]["streamed"]
    assert 256 <= streamed["memory"]["block_rows"] < 1000
    assert streamed["memory"]["peak_rss_mb"] > 0
    selection, n_train = streamed["selection"], streamed["train"]["n"]
    assert selection["subsample"] == {"rows": 1901, "of": n_train, "seed": 0}
    assert len(selection["grid"]) > 1 and {r["rows"] for r in selection["grid"]} == {1901}
    on_every_row = selection["every_row"]
    assert {r["rows"] for r in on_every_row} == {n_train} and 2 <= len(on_every_row) <= 3
    assert selection["C"] == in_memory["selection"]["C"]
    assert selection["C"] in [r["C"] for r in on_every_row]
    assert any(f"on 1,901 train images drawn with seed 0, then on all {n_train:,} from its "
               f"choice: C={selection['C']:g}"
               in line for line in logged)
    assert abs(streamed["test"]["accuracy"] - in_memory["test"]["accuracy"]) <= 0.005
    assert streamed["test"]["log_loss"] == pytest.approx(in_memory["test"]["log_loss"],
                                                         rel=0.01)
    assert streamed["test"]["confusion_matrix"]["classes"] == ["class0", "class1", "class2"]
    lines = (tmp_path / "streamed" / "logreg" / "test_predictions.csv").read_text().splitlines()
    assert len(lines) == 1 + streamed["test"]["n"]
    head = load_head(tmp_path / "streamed" / "logreg")  # the saved head predicts in memory
    assert predict_store(head, overlapping_store).probabilities.shape == (3000, 3)


def test_the_walk_on_a_subsample_picks_the_c_of_the_walk_on_every_row(overlapping_store):
    """subsample_rows=0 walks on every train row. On 1,000 of the 2,100 rows the walk picks
    C=0.1 (a decade under the full walk's 1.0: fewer rows want more regularisation); it
    resumes on every row from there and ends at the same C and the same optimum
    (probabilities within 1e-3)."""
    from headstart.classify.logreg import LogRegHead
    from headstart.features import open_store

    with open_store(overlapping_store) as store:
        X, y = store.load_features(), np.asarray(store.labels)
    train, validation = np.arange(0, 3000, 10 / 7).astype(int), np.arange(1, 3000, 5)
    source = RowSource(X, 400)
    fits = {rows: LogRegHead().fit_streamed(source, train, y[train], validation,
                                            y[validation], subsample_rows=rows)
            for rows in (0, 1000)}
    assert fits[0].subsample_ is None and fits[0].every_row_ is None
    assert fits[1000].subsample_ == {"rows": 1000, "of": len(train), "seed": 0}
    assert [r["C"] for r in fits[1000].selection_ if r["val_loss"] == min(
        q["val_loss"] for q in fits[1000].selection_)] == [0.1]
    assert [r["C"] for r in fits[1000].every_row_] == [0.1, 1.0, 10.0]
    assert fits[1000].C_ == fits[0].C_ == 1.0
    np.testing.assert_allclose(fits[1000].predict_proba(X), fits[0].predict_proba(X),
                               atol=1e-3)
    again = LogRegHead().fit_streamed(source, train, y[train], validation, y[validation],
                                      subsample_rows=1000)
    np.testing.assert_array_equal(again.coef_, fits[1000].coef_)  # seeded: reproducible


def test_groups_read_every_row_once_from_random_spans_in_an_order_drawn_from_the_rng():
    X = np.repeat(np.arange(1000, dtype=np.float32)[:, None], 3, axis=1)
    rows = np.sort(np.random.default_rng(0).choice(1000, 700, replace=False))
    source = RowSource(X, 128)

    def order(seed: int) -> list[np.ndarray]:
        return [p for p, _ in source.groups(rows, np.random.default_rng(seed))]

    got = list(source.groups(rows, np.random.default_rng(1)))
    positions = np.concatenate([p for p, _ in got])
    np.testing.assert_array_equal(np.sort(positions), np.arange(700))
    for part, block in got:
        np.testing.assert_array_equal(block[:, 0], rows[part])  # the rows asked for
        assert len(part) <= 128 and len(np.unique(rows[part] // 32)) <= 4  # 4 spans of 32
    assert [list(p) for p in order(1)] == [list(p) for p in order(1)]
    assert [list(p) for p in order(1)] != [list(p) for p in order(2)]
    assert not np.all(np.diff(positions) > 0)  # not the store order


def test_softmax_over_the_budget_reads_its_batches_from_the_store_like_in_memory(
        overlapping_store, tmp_path):
    """--memory 1M: the softmax head's batches come from the store in groups of 478 rows
    (15 random spans of 32) shuffled inside, in another order than the in-memory fit's.
    Measured: the same test accuracy (79.27%), log loss 0.5002 against 0.5011, best epoch
    33 against 35. Asserted: accuracy within 1 point, log loss within 2%, best epoch
    within 5; the same seed gives the same weights."""
    streamed = fit_heads(overlapping_store, ("softmax",), out_dir=tmp_path / "streamed",
                         memory="1M", plots=False)[0]
    in_memory = fit_heads(overlapping_store, ("softmax",), out_dir=tmp_path / "memory",
                          plots=False)[0].metrics
    metrics = streamed.metrics
    assert metrics["memory"]["streamed"] and not in_memory["memory"]["streamed"]
    assert abs(metrics["test"]["accuracy"] - in_memory["test"]["accuracy"]) <= 0.01
    assert metrics["test"]["log_loss"] == pytest.approx(in_memory["test"]["log_loss"],
                                                        rel=0.02)
    assert abs(metrics["selection"]["best_epoch"] - in_memory["selection"]["best_epoch"]) <= 5
    assert (tmp_path / "streamed" / "softmax" / "model.keras").is_file()
    twice = [fit_heads(overlapping_store, ("softmax",), out_dir=None, memory="1M",
                       plots=False, epochs=3)[0].head.layers[0].kernel for _ in range(2)]
    np.testing.assert_array_equal(*twice)


def test_fit_head_with_a_small_memory_says_so_in_its_summary(overlapping_store, tmp_path,
                                                            capsys):
    from headstart.classify.cli import fit_head_main

    assert fit_head_main(["--features", str(overlapping_store), "--memory", "1M", "-o",
                          str(tmp_path / "heads"), "--no-plots", "-q", "--C", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "peak memory (resident)" in out and "(rows read in blocks)" in out
