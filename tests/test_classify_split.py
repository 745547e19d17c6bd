"""The split: deterministic for a seed, stable per image, stratified in expectation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headstart.classify.split import (
    SPLITS,
    assign_splits,
    check_split,
    parse_fractions,
    read_split_csv,
    split_units,
    write_split_csv,
)
from headstart.errors import ClassifyError

hex_hashes = st.lists(st.text("0123456789abcdef", min_size=64, max_size=64), max_size=60)


def hashes(n: int, start: int = 0) -> list[str]:
    return [f"{i:064x}" for i in range(start, start + n)]


@settings(max_examples=50, deadline=None)
@given(old=hex_hashes, new=hex_hashes, seed=st.integers(0, 2**31))
def test_adding_images_never_moves_images_already_assigned(old, new, seed):
    before = assign_splits(old, seed=seed)
    after = assign_splits(old + new, seed=seed)
    np.testing.assert_array_equal(after[:len(old)], before)


@settings(max_examples=30, deadline=None)
@given(keys=hex_hashes, seed=st.integers(0, 2**31))
def test_an_images_split_depends_only_on_seed_and_content(keys, seed):
    shuffled = list(reversed(keys))
    backwards = assign_splits(shuffled, seed=seed)[::-1]
    np.testing.assert_array_equal(backwards, assign_splits(keys, seed=seed))


def test_same_seed_same_split_other_seed_another_split():
    keys = hashes(500)
    np.testing.assert_array_equal(assign_splits(keys, seed=3), assign_splits(keys, seed=3))
    assert (assign_splits(keys, seed=3) != assign_splits(keys, seed=4)).mean() > 0.2


def test_duplicates_land_in_the_same_split():
    keys = hashes(200)
    split = assign_splits(keys + keys, seed=0)
    np.testing.assert_array_equal(split[:200], split[200:])


def test_proportions_follow_the_fractions():
    split = assign_splits(hashes(20_000), seed=0, fractions=(0.7, 0.15, 0.15))
    shares = np.bincount(split, minlength=3) / len(split)
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.015)
    units = split_units(hashes(1000))
    assert units.min() >= 0 and units.max() < 1


def test_each_class_is_split_by_the_same_rule():
    labels = np.repeat([0, 1, 2], [6000, 3000, 1000])
    split = assign_splits(hashes(len(labels)), seed=1)
    for c in range(3):
        shares = np.bincount(split[labels == c], minlength=3) / np.sum(labels == c)
        np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.04)


@pytest.mark.parametrize("text, expected", [
    ("70/15/15", (0.7, 0.15, 0.15)),
    ("0.8/0.1/0.1", (0.8, 0.1, 0.1)),
    ("60,20,20", (0.6, 0.2, 0.2)),
])
def test_parse_fractions(text, expected):
    np.testing.assert_allclose(parse_fractions(text), expected)


@pytest.mark.parametrize("text, message", [
    ("70/30", "three positive numbers"), ("70/30/0", "three positive numbers"),
    ("a/b/c", "three positive numbers"), ("50/20/20", "add up to 100"),
])
def test_parse_fractions_refuses(text, message):
    with pytest.raises(ClassifyError, match=message):
        parse_fractions(text)


def test_a_class_too_small_for_the_split_is_refused():
    labels = np.array([0] * 100 + [1] * 3)
    split = assign_splits(hashes(103), seed=0)
    with pytest.raises(ClassifyError, match="Class 'Dog' has only 3 images in 'f.h5'"):
        check_split(split, labels, ["Cat", "Dog"], seed=0, fractions=(0.7, 0.15, 0.15),
                    source="f.h5")


def test_split_csv_round_trip(tmp_path):
    keys = hashes(50)
    labels = np.arange(50) % 2
    split = assign_splits(keys, seed=0)
    paths = [f"{'ab'[label]}/{i}.jpg" for i, label in enumerate(labels)]
    write_split_csv(tmp_path / "split.csv", paths=paths, hashes=keys, labels=labels,
                    classes=["a", "b"], assignment=split)
    expected = {p: SPLITS[s] for p, s in zip(paths, split, strict=True)}
    assert read_split_csv(tmp_path / "split.csv") == expected
