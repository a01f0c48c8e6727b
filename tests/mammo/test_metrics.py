"""Competition metrics, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mammo.contract import CANCER, LATERALITY, PATIENT_ID, PREDICTION_ID, SITE_ID
from mammo.metrics import (
    MetricInputError,
    aggregate_breasts,
    best_threshold_f1,
    binary_report,
    multiclass_report,
    probabilistic_f1,
    roc_auc,
)

PROB = "prob"


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        pytest.param([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0], 1.0, id="perfect-classifier"),
        pytest.param([1, 0, 1, 0], [0.0, 0.0, 0.0, 0.0], 0.0, id="all-zero-predictions"),
        pytest.param([0, 0, 0], [0.3, 0.9, 0.1], 0.0, id="no-positive-label"),
        pytest.param([1, 0], [0.0, 0.7], 0.0, id="mass-only-on-negatives"),
        pytest.param([], [], 0.0, id="empty"),
        # y=[1,0,1,0], p=[.8,.4,.2,0]: sum(p)=1.4, sum(p*y)=1.0, sum(y)=2
        # precision = 1/1.4 = 5/7, recall = 1/2, pF1 = 2*(5/7)*(1/2) / (5/7 + 1/2) = 10/17
        pytest.param([1, 0, 1, 0], [0.8, 0.4, 0.2, 0.0], 10 / 17, id="worked-example-10/17"),
        # one positive in four, p = 1 everywhere: precision 1/4, recall 1 -> 0.5/1.25 = 0.4
        pytest.param([1, 0, 0, 0], [1.0, 1.0, 1.0, 1.0], 0.4, id="all-ones"),
        # p clipped to [0, 1] first: [1.5, -0.5] -> [1, 0], a perfect prediction
        pytest.param([1, 0], [1.5, -0.5], 1.0, id="clipped-to-unit-interval"),
    ],
)
def test_probabilistic_f1(y: list[int], p: list[float], expected: float) -> None:
    value = probabilistic_f1(y, p)
    assert value == pytest.approx(expected)
    assert not math.isnan(value)


def test_probabilistic_f1_rejects_mismatched_inputs() -> None:
    with pytest.raises(MetricInputError):
        probabilistic_f1([1, 0], [0.5])
    with pytest.raises(MetricInputError):
        probabilistic_f1([1, 0], [0.5, math.nan])


@pytest.mark.parametrize(
    ("y", "p", "f1", "threshold"),
    [
        # thresholds .8 -> F1 2/3, .4 -> 1/2, .2 -> 4/5, .0 -> 2/3: best 0.8 at 0.2
        pytest.param([1, 0, 1, 0], [0.8, 0.4, 0.2, 0.0], 0.8, 0.2, id="worked-example"),
        # tied scores are selected together: >= 0.9 takes both positives
        pytest.param([1, 1, 0], [0.9, 0.9, 0.1], 1.0, 0.9, id="tied-scores"),
        # every threshold gives 2/3 or less; the highest of the ties wins
        pytest.param([1, 0], [0.5, 0.5], 2 / 3, 0.5, id="all-tied"),
    ],
)
def test_best_threshold_f1(y: list[int], p: list[float], f1: float, threshold: float) -> None:
    got_f1, got_threshold = best_threshold_f1(y, p)
    assert got_f1 == pytest.approx(f1)
    assert got_threshold == pytest.approx(threshold)


def test_best_threshold_f1_without_positives() -> None:
    f1, threshold = best_threshold_f1([0, 0], [0.2, 0.4])
    assert f1 == 0.0 and math.isnan(threshold)


def test_best_threshold_f1_matches_a_brute_force_scan() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(int)
    p = np.round(rng.random(300) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    brute = max(2 * ((p >= t) & (y == 1)).sum() / ((p >= t).sum() + y.sum()) for t in np.unique(p))
    assert best_threshold_f1(y, p)[0] == pytest.approx(brute)


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        # pairs (pos, neg): (.8,.4) (.8,0) (.2,0) ranked right, (.2,.4) wrong -> 3/4
        pytest.param([1, 0, 1, 0], [0.8, 0.4, 0.2, 0.0], 0.75, id="worked-example"),
        pytest.param([1, 0], [0.5, 0.5], 0.5, id="tie-counts-half"),
        pytest.param([1, 1, 0], [0.1, 0.2, 0.9], 0.0, id="perfectly-wrong"),
    ],
)
def test_roc_auc(y: list[int], p: list[float], expected: float) -> None:
    assert roc_auc(y, p) == pytest.approx(expected)


@pytest.mark.parametrize("y", [[1, 1, 1], [0, 0, 0]], ids=["only-positives", "only-negatives"])
def test_roc_auc_is_nan_with_one_class(y: list[int]) -> None:
    assert math.isnan(roc_auc(y, [0.1, 0.5, 0.9]))


def test_roc_auc_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.2
    p = np.round(rng.random(500) + 0.3 * y, 1)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


def _images() -> pd.DataFrame:
    """Patient 1: left breast positive (2 views), right negative; patient 2 (site 2): both
    negative; patient 3 (site 2): right positive."""
    return pd.DataFrame(
        {
            PATIENT_ID: [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3],
            LATERALITY: ["L", "L", "R", "R"] * 3,
            SITE_ID: [1] * 4 + [2] * 8,
            CANCER: [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
            PROB: [0.2, 0.6, 0.1, 0.3, 0.0, 0.2, 0.4, 0.4, 0.1, 0.1, 0.5, 0.9],
        }
    )


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        pytest.param("mean", [0.4, 0.2, 0.1, 0.4, 0.1, 0.7], id="mean-of-views"),
        pytest.param("max", [0.6, 0.3, 0.2, 0.4, 0.1, 0.9], id="max-of-views"),
    ],
)
def test_aggregate_breasts(how: str, expected: list[float]) -> None:
    breasts = aggregate_breasts(_images(), PROB, how)  # type: ignore[arg-type]
    assert breasts[PREDICTION_ID].tolist() == ["1_L", "1_R", "2_L", "2_R", "3_L", "3_R"]
    assert breasts[CANCER].tolist() == [1, 0, 0, 0, 0, 1]
    assert breasts[SITE_ID].tolist() == [1, 1, 2, 2, 2, 2]
    np.testing.assert_allclose(breasts[PROB], expected)


def test_aggregate_breasts_rejects_unknown_aggregation() -> None:
    with pytest.raises(MetricInputError):
        aggregate_breasts(_images(), PROB, "median")  # type: ignore[arg-type]


def test_binary_report_by_hand() -> None:
    report = binary_report(_images(), "mean", prob_col=PROB)
    # mean per breast: y=[1,0,0,0,0,1], p=[.4,.2,.1,.4,.1,.7]
    # sum(p)=1.9, sum(p*y)=1.1, sum(y)=2: P=11/19, R=11/20, pF1=2*1.1/(1.9+2)=2.2/3.9
    assert report["pf1"] == pytest.approx(2.2 / 3.9)
    assert report["pf1_mean"] == report["pf1"]
    # max per breast: p=[.6,.3,.2,.4,.1,.9]: sum(p)=2.5, sum(p*y)=1.5 -> 3.0/4.5
    assert report["pf1_max"] == pytest.approx(3.0 / 4.5)
    # positives .4 and .7; negatives .2 .1 .4 .1: 8 pairs right, (.4,.4) half -> 7.5/8
    assert report["auc"] == pytest.approx(7.5 / 8)
    # threshold .7 -> F1 2/3; .4 -> 2*2/(3+2) = .8 (best); lower ones add negatives only
    assert report["best_f1"] == pytest.approx(0.8)
    assert report["best_threshold"] == pytest.approx(0.4)
    # site 1: y=[1,0], p=[.4,.2] -> 1.0; site 2: y=[0,0,0,1], p=[.1,.4,.1,.7] -> 1.0
    assert report["auc_site_1"] == 1.0 and report["auc_site_2"] == 1.0
    assert report["n_breasts"] == 6 and report["n_positive_breasts"] == 2
    assert report["auc_image"] == pytest.approx(roc_auc_score(_images()[CANCER], _images()[PROB]))


def test_binary_report_site_with_one_class_is_nan_not_an_error() -> None:
    df = _images()
    df.loc[df[PATIENT_ID] == 1, CANCER] = 0
    report = binary_report(df, "max", prob_col=PROB)
    assert math.isnan(report["auc_site_1"])
    assert report["auc_site_2"] == pytest.approx(1.0)


def test_multiclass_report_by_hand() -> None:
    y = [0, 0, 1, 2, 3, 3]
    probs = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],  # -> A, right
            [0.2, 0.5, 0.2, 0.1],  # -> B, wrong (A)
            [0.1, 0.6, 0.2, 0.1],  # -> B, right
            [0.1, 0.1, 0.7, 0.1],  # -> C, right
            [0.1, 0.1, 0.2, 0.6],  # -> D, right
            [0.1, 0.1, 0.5, 0.3],  # -> C, wrong (D)
        ]
    )
    report = multiclass_report(y, probs, ["A", "B", "C", "D"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: A 2*1/(2+0+1)=2/3, B 2/(2+1+0)=2/3, C 2/3, D 2/3 -> macro 2/3
    assert report["macro_f1"] == pytest.approx(2 / 3)
    # one-vs-rest AUC for A: positives .7 .2 vs negatives .1 .1 .1 .1 -> 1.0
    assert report["auc_A"] == pytest.approx(1.0)
    # D: positives .6 .3 vs .1 .1 .1 .1 -> 1.0; C: positive .7 vs .1 .2 .2 .2 .5 -> 1.0
    assert report["auc_D"] == report["auc_C"] == pytest.approx(1.0)
    # B: positive .6 vs .1 .5 .1 .1 .1 -> 1.0
    assert report["auc"] == pytest.approx(1.0)


def test_multiclass_report_absent_class_auc_is_nan() -> None:
    report = multiclass_report([0, 1, 0], np.eye(3)[[0, 1, 0]], ["A", "B", "C"])
    assert math.isnan(report["auc_C"])
    assert report["accuracy"] == 1.0 and report["macro_f1"] == 1.0  # C absent everywhere


def test_multiclass_report_rejects_bad_shapes() -> None:
    with pytest.raises(MetricInputError):
        multiclass_report([0, 1], np.zeros((2, 3)), ["A", "B"])
    with pytest.raises(MetricInputError):
        multiclass_report([0, 5], np.zeros((2, 2)), ["A", "B"])
