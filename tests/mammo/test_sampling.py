"""Imbalance handling: oversampling to a target fraction, balanced batches."""

from __future__ import annotations

import numpy as np
import pytest

from mammo.sampling import (
    SamplerKind,
    SamplingError,
    balanced_batches,
    epoch_batches,
    oversample_indices,
)


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.concatenate([np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)])


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "fraction", "expected_pos_slots"),
    [
        # K = round(f * Q / (1 - f)): 1:7 with 700 negatives -> 100 positive slots
        pytest.param(20, 700, 0.125, 100, id="one-to-seven-exact-multiple"),
        pytest.param(30, 700, 0.125, 100, id="one-to-seven-with-remainder"),
        pytest.param(10, 90, 0.5, 90, id="balanced-half"),
        pytest.param(300, 700, 0.125, 300, id="already-above-target-keeps-all"),
        pytest.param(0, 50, 0.125, 0, id="no-positive-nothing-to-repeat"),
    ],
)
def test_oversampling_reaches_the_target_fraction(
    n_pos: int, n_neg: int, fraction: float, expected_pos_slots: int
) -> None:
    labels = _labels(n_pos, n_neg)
    idx = oversample_indices(labels, fraction, np.random.default_rng(0))
    assert idx.dtype == np.int64
    assert int(labels[idx].sum()) == expected_pos_slots
    counts = np.bincount(idx, minlength=len(labels))
    assert (counts[n_pos:] == 1).all()  # every negative exactly once
    if n_pos:
        assert counts[:n_pos].min() >= 1  # every positive at least once
        assert counts[:n_pos].max() - counts[:n_pos].min() <= 1  # repeated evenly


def test_oversampling_is_shuffled_and_seeded() -> None:
    labels = _labels(20, 700)
    a = oversample_indices(labels, 0.125, np.random.default_rng(5))
    b = oversample_indices(labels, 0.125, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert labels[a[:50]].sum() > 0  # positives are spread, not all at the end


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "batch_size", "min_positives"),
    [
        pytest.param(3, 97, 8, 1, id="few-positives-repeated"),
        pytest.param(40, 60, 8, 2, id="many-positives-two-per-batch"),
        pytest.param(1, 10, 4, 1, id="single-positive"),
        pytest.param(5, 0, 4, 1, id="only-positives"),
        pytest.param(50, 50, 10, 3, id="half-positive"),
    ],
)
def test_balanced_batches_cover_every_row_with_positives_in_each(
    n_pos: int, n_neg: int, batch_size: int, min_positives: int
) -> None:
    labels = _labels(n_pos, n_neg)
    batches = balanced_batches(labels, batch_size, min_positives, rng=np.random.default_rng(0))
    assert all(len(b) <= batch_size for b in batches)
    assert all(labels[b].sum() >= min_positives for b in batches)
    seen = np.concatenate(batches)
    assert set(seen.tolist()) == set(range(len(labels)))  # every row at least once
    assert np.bincount(seen, minlength=len(labels))[n_pos:].tolist() == [1] * n_neg


def test_balanced_batches_count_by_hand() -> None:
    # 3 positives, 97 negatives, batch 8, 1 positive each: ceil(97 / 7) = 14 batches,
    # 14 positive slots -> 11 repeated positives; 97 + 14 = 111 rows in all.
    batches = balanced_batches(_labels(3, 97), 8, 1, rng=np.random.default_rng(1))
    assert len(batches) == 14
    assert sum(len(b) for b in batches) == 111


def test_balanced_batches_without_positives_raise() -> None:
    with pytest.raises(SamplingError, match="no positive"):
        balanced_batches(_labels(0, 10), 4, 1, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("batch_size", "min_positives"),
    [pytest.param(4, 4, id="positives-fill-the-batch"), pytest.param(0, 0, id="empty-batch")],
)
def test_balanced_batches_bad_sizes_raise(batch_size: int, min_positives: int) -> None:
    with pytest.raises(SamplingError):
        balanced_batches(_labels(3, 10), batch_size, min_positives, rng=np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.0, 1.0], ids=["zero", "one"])
def test_oversampling_bad_fraction_raises(fraction: float) -> None:
    with pytest.raises(SamplingError):
        oversample_indices(_labels(3, 10), fraction, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kind", "rows", "positives"),
    [
        pytest.param("none", 100, 5, id="none-every-row-once"),
        pytest.param("oversample", 95 + 14, 14, id="oversample-1-to-7"),  # round(95/7) = 14
        # max(ceil(100 / 10), ceil(95 / 9)) = 11 batches, one positive each
        pytest.param(SamplerKind.BALANCED, 95 + 11, 11, id="balanced-one-per-batch"),
    ],
)
def test_epoch_batches_dispatch(kind: str, rows: int, positives: int) -> None:
    labels = _labels(5, 95)
    batches = epoch_batches(labels, kind, 10, rng=np.random.default_rng(0))
    seen = np.concatenate(batches)
    assert len(seen) == rows
    assert int(labels[seen].sum()) == positives
    assert all(len(b) <= 10 for b in batches)


def test_epoch_batches_unknown_kind_raises() -> None:
    with pytest.raises(SamplingError):
        epoch_batches(_labels(1, 5), "smote", 4, rng=np.random.default_rng(0))
