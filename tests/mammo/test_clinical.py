"""Clinical figures, checked against scikit-learn, brute force, hand-worked numbers and a
coverage simulation (run with -s to see the measured coverages)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from scipy.special import logit
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    brier_score_loss,
    confusion_matrix,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from mammo.clinical import (
    FIGURES,
    ClinicalInputError,
    EvaluationConfig,
    Interval,
    age_band,
    age_bands,
    bootstrap_intervals,
    calibration,
    delong_auc,
    delong_auc_brute,
    evaluate,
    operating_point,
    paired_delong,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
    subgroups,
)
from mammo.contract import AGE, CANCER, DENSITY, PATIENT_ID, PREDICTION_ID, SITE_ID
from mammo.metrics import probabilistic_f1, roc_auc

PROB = "prob"
Arrays = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def _data(seed: int, n: int, positive_rate: float = 0.3, decimals: int = 1) -> Arrays:
    """Labels and scores in [0, 1], rounded so that many scores tie."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(np.float64)
    y[:2] = (0.0, 1.0)  # both classes, at least twice
    y[2:4] = (0.0, 1.0)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.0, 1.0).round(decimals)
    return y, p


def _brute_placements(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> Arrays:
    """Placement values by a double loop, written independently of the module."""
    pos, neg = p[y == 1], p[y == 0]
    v10 = np.array([np.mean([1.0 if x > z else 0.5 if x == z else 0.0 for z in neg]) for x in pos])
    v01 = np.array([np.mean([1.0 if x > z else 0.5 if x == z else 0.0 for x in pos]) for z in neg])
    return v10, v01


def _breasts(n_patients: int, seed: int) -> pd.DataFrame:
    """Two breasts per patient, scores correlated within the patient."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), 2)
    y = (rng.random(2 * n_patients) < 0.2).astype(int)
    shared = np.repeat(rng.normal(size=n_patients), 2)
    p = 1.0 / (1.0 + np.exp(-(-1.5 + 2.0 * y + 0.7 * shared + rng.normal(size=y.size))))
    return pd.DataFrame(
        {
            PATIENT_ID: patient,
            PREDICTION_ID: [
                f"{q}_{side}" for q, side in zip(patient, "LR" * n_patients, strict=True)
            ],
            CANCER: y,
            PROB: p,
        }
    )


# --- DeLong -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "decimals"), [(7, 1), (60, 1), (250, 2), (400, 6)])
def test_fast_delong_equals_brute_force_and_sklearn(seed: int, n: int, decimals: int) -> None:
    y, p = _data(seed, n, decimals=decimals)
    auc, variance, low, high = delong_auc(y, p)
    brute_auc, brute_variance, brute_low, brute_high = delong_auc_brute(y, p)
    assert auc == pytest.approx(brute_auc, abs=1e-12)
    assert variance == pytest.approx(brute_variance, abs=1e-12)
    assert (low, high) == pytest.approx((brute_low, brute_high), abs=1e-9)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    v10, v01 = _brute_placements(y, p)
    expected = v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size
    assert variance == pytest.approx(expected, abs=1e-12)
    half = norm.ppf(0.975) * math.sqrt(variance)
    assert (low, high) == pytest.approx((max(0.0, auc - half), min(1.0, auc + half)))


def test_delong_undefined_cases() -> None:
    assert all(math.isnan(v) for v in delong_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    auc, variance, low, high = delong_auc([1, 0, 0], [0.9, 0.2, 0.3])  # one positive
    assert auc == 1.0 and math.isnan(variance) and math.isnan(low) and math.isnan(high)
    # a perfect separation has zero variance: the interval collapses onto 1
    assert delong_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == (1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ClinicalInputError, match="confidence"):
        delong_auc([1, 0], [0.5, 0.4], confidence=1.5)


@pytest.mark.parametrize("seed", [0, 3])
def test_paired_delong_against_brute_force_covariance(seed: int) -> None:
    y, p_a = _data(seed, 120)
    rng = np.random.default_rng(seed + 100)
    p_b = np.clip(p_a + rng.normal(0, 0.15, p_a.size), 0, 1).round(1)
    diff, variance, low, high = paired_delong(y, p_a, p_b)
    assert diff == pytest.approx(delong_auc(y, p_a)[0] - delong_auc(y, p_b)[0], abs=1e-12)
    a10, a01 = _brute_placements(y, p_a)
    b10, b01 = _brute_placements(y, p_b)
    s10, s01 = np.cov(a10, b10), np.cov(a01, b01)
    var_a = s10[0, 0] / a10.size + s01[0, 0] / a01.size
    var_b = s10[1, 1] / a10.size + s01[1, 1] / a01.size
    cov = s10[0, 1] / a10.size + s01[0, 1] / a01.size
    assert var_a == pytest.approx(delong_auc(y, p_a)[1], abs=1e-12)
    assert variance == pytest.approx(var_a + var_b - 2 * cov, abs=1e-12)
    half = norm.ppf(0.975) * math.sqrt(variance)
    assert (low, high) == pytest.approx((diff - half, diff + half))


def test_paired_delong_of_a_model_with_itself_is_exactly_zero() -> None:
    y, p = _data(5, 200)
    assert paired_delong(y, p, p) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ClinicalInputError, match="labels but"):
        paired_delong(y, p, p[:-1])


# --- operating point ----------------------------------------------------------------------


def test_operating_point_worked_example() -> None:
    # 4 cancers, 6 normals; >= 0.5 flags .9, .8 (cancers) and .7 (normal)
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.2, 0.1, 0.1, 0.0]
    point = operating_point(y, p, 0.5, prevalence=0.01)
    assert {k: point[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 2, "fp": 1, "tn": 5, "fn": 2}
    assert all(isinstance(point[k], int) for k in ("tp", "fp", "tn", "fn"))
    # se = 1/2, sp = 5/6; at 1% prevalence: se*pi = 0.005, (1-sp)(1-pi) = 0.99/6 = 0.165
    assert point["sensitivity"] == 0.5
    assert point["specificity"] == pytest.approx(5 / 6)
    assert point["recall_rate"] == pytest.approx(0.3)
    assert point["ppv"] == pytest.approx(2 / 3)
    assert point["ppv_screening"] == pytest.approx(0.005 / 0.17)  # = 1/34
    assert point["recall_rate_screening"] == pytest.approx(0.17)
    assert point["cancer_detection_per_1000"] == pytest.approx(5.0)
    assert point["threshold"] == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_operating_point_against_sklearn_and_bayes(seed: int) -> None:
    y, p = _data(seed, 300)
    threshold, prevalence = float(np.random.default_rng(seed).choice(p)), 0.007
    point = operating_point(y, p, threshold, prevalence)
    flagged = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, flagged, labels=[0, 1]).ravel()
    assert (point["tp"], point["fp"], point["tn"], point["fn"]) == (tp, fp, tn, fn)
    assert point["sensitivity"] == pytest.approx(recall_score(y, flagged))
    assert point["specificity"] == pytest.approx(recall_score(y, flagged, pos_label=0))
    assert point["ppv"] == pytest.approx(precision_score(y, flagged))
    assert point["recall_rate"] == pytest.approx(flagged.mean())
    # Bayes by re-weighting the breasts: positives to total mass pi, negatives to 1 - pi
    weight = np.where(y == 1, prevalence / y.sum(), (1 - prevalence) / (1 - y).sum())
    flagged_mass = np.sum(weight * flagged)
    assert point["recall_rate_screening"] == pytest.approx(flagged_mass)
    assert point["ppv_screening"] == pytest.approx(np.sum(weight * flagged * y) / flagged_mass)
    assert point["cancer_detection_per_1000"] == pytest.approx(1000 * np.sum(weight * flagged * y))


def test_operating_point_undefined_figures_are_nan() -> None:
    no_cancer = operating_point([0, 0, 0], [0.2, 0.6, 0.9], 0.5)
    assert math.isnan(no_cancer["sensitivity"]) and math.isnan(no_cancer["ppv_screening"])
    assert no_cancer["specificity"] == pytest.approx(1 / 3)
    nobody = operating_point([1, 0], [0.2, 0.1], 0.5)
    assert math.isnan(nobody["ppv"]) and nobody["recall_rate"] == 0.0
    assert math.isnan(nobody["ppv_screening"])  # se = 0 and sp = 1: nothing flagged
    with pytest.raises(ClinicalInputError, match="prevalence"):
        operating_point([1, 0], [0.2, 0.1], 0.5, prevalence=0.0)
    with pytest.raises(ClinicalInputError, match="threshold"):
        operating_point([1, 0], [0.2, 0.1], math.nan)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_rates_at_targets_against_every_sklearn_threshold(seed: int) -> None:
    y, p = _data(seed, 400, positive_rate=0.2, decimals=2)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)  # starts with "flag nobody"
    for target in (0.0, 0.5, 0.8, 0.889, 0.9, 0.95, 0.987, 1.0):
        expected_se = tpr[1 - fpr >= target - 1e-9].max()
        assert sensitivity_at_specificity(y, p, target) == pytest.approx(expected_se, abs=1e-12)
        expected_sp = (1 - fpr)[tpr >= target - 1e-9].max()
        assert specificity_at_sensitivity(y, p, target) == pytest.approx(expected_sp, abs=1e-12)


def test_rates_at_targets_edge_cases() -> None:
    # scores tie across classes: no threshold separates them, specificity 1 needs "flag nobody"
    assert sensitivity_at_specificity([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1], 1.0) == 0.5
    assert specificity_at_sensitivity([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1], 1.0) == 0.5
    assert math.isnan(sensitivity_at_specificity([0, 0], [0.1, 0.2], 0.9))
    assert math.isnan(specificity_at_sensitivity([1, 1], [0.1, 0.2], 0.9))
    with pytest.raises(ClinicalInputError, match="specificity"):
        sensitivity_at_specificity([1, 0], [0.5, 0.4], 1.2)


# --- calibration --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_against_sklearn_and_a_brute_force_ece(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, 3000)
    p[:3] = (0.0, 1.0, 0.5)  # the clip and both ends of the bins
    y = (rng.random(p.size) < p**1.4).astype(np.float64)
    result = calibration(y, p, bins=10)
    assert result["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    x = logit(np.clip(p, 1e-6, 1 - 1e-6))[:, None]
    reference = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=1000)
    reference.fit(x, y)
    assert result["slope"] == pytest.approx(reference.coef_[0, 0], abs=1e-4)
    assert result["intercept"] == pytest.approx(reference.intercept_[0], abs=1e-4)
    ece, table = 0.0, []
    for b in range(10):
        lower, upper = b / 10, (b + 1) / 10
        inside = (p >= lower) & ((p < upper) if b < 9 else (p <= upper))
        if inside.any():
            ece += inside.mean() * abs(p[inside].mean() - y[inside].mean())
            table.append([lower, upper, inside.sum(), p[inside].mean(), y[inside].mean()])
    assert result["ece"] == pytest.approx(ece, abs=1e-12)
    fields = ("lower", "upper", "n", "mean_predicted", "observed")
    got = [[b[k] for k in fields] for b in result["bins"]]
    assert np.allclose(got, table, rtol=0, atol=1e-12)
    assert sum(b["n"] for b in result["bins"]) == p.size


def test_calibration_of_calibrated_probabilities() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0.01, 0.99, 20_000)
    result = calibration((rng.random(p.size) < p).astype(int), p)
    assert result["slope"] == pytest.approx(1.0, abs=0.06)
    assert result["intercept"] == pytest.approx(0.0, abs=0.06)
    assert result["ece"] < 0.02
    overconfident = np.where(p > 0.5, 0.99, 0.01)  # slope well below 1
    assert calibration((rng.random(p.size) < p).astype(int), overconfident)["slope"] < 0.5


def test_calibration_fit_undefined() -> None:
    separated = calibration([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.8])
    assert math.isnan(separated["slope"]) and math.isnan(separated["intercept"])
    one_class = calibration([0, 0, 0], [0.1, 0.2, 0.7])
    assert math.isnan(one_class["slope"]) and one_class["brier"] == pytest.approx(0.18)
    constant = calibration([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3])
    assert math.isnan(constant["slope"]) and constant["ece"] == pytest.approx(0.2)
    with pytest.raises(ClinicalInputError, match=r"\[0, 1\]"):
        calibration([0, 1], [0.5, 1.5])
    with pytest.raises(ClinicalInputError, match="bins"):
        calibration([0, 1], [0.5, 0.5], bins=0)


# --- configuration and input checks -------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = EvaluationConfig(specificities=(0.9,), n_resamples=50, age_edges=(40, 50))
    data = json.loads(json.dumps(config.to_dict()))
    assert data["specificities"] == [0.9] and data["age_edges"] == [40.0, 50.0]
    assert EvaluationConfig.from_dict(data) == config
    assert EvaluationConfig.from_dict({}) == EvaluationConfig()
    with pytest.raises(ClinicalInputError, match=r"unknown EvaluationConfig keys \['bogus'\]"):
        EvaluationConfig.from_dict({"bogus": 1, "seed": 3})


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"prevalence": 0.0}, "prevalence"),
        ({"prevalence": 1.0}, "prevalence"),
        ({"specificities": (0.9, 1.1)}, "specificities"),
        ({"sensitivities": ("a",)}, "sensitivities"),
        ({"confidence": 1.0}, "confidence"),
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_resamples": 10.5}, "n_resamples"),
        ({"seed": -1}, "seed"),
        ({"calibration_bins": True}, "calibration_bins"),
        ({"min_breasts": -1}, "min_breasts"),
        ({"min_positives": 1.0}, "min_positives"),
        ({"age_edges": (60, 50)}, "age_edges"),
        ({"age_edges": ()}, "age_edges"),
    ],
)
def test_config_refuses_bad_values(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ClinicalInputError, match=f"EvaluationConfig.{field} must be"):
        EvaluationConfig(**settings)


def test_interval_to_dict_keeps_nan() -> None:
    data = Interval(0.5, math.nan, 0.7).to_dict()
    assert list(data) == ["value", "low", "high"] and math.isnan(data["low"])


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([1, 0], [0.5], "2 labels but 1 scores"),
        ([1, math.nan], [0.5, 0.4], "NaN"),
        ([1, 0], [0.5, math.nan], "NaN"),
        ([1, 2], [0.5, 0.4], r"0 or 1, got \[2.0\]"),
        (["a", "b"], [0.5, 0.4], "numeric"),
    ],
)
def test_inputs_are_checked(y: list[Any], p: list[float], message: str) -> None:
    for function in (delong_auc, calibration, lambda a, b: operating_point(a, b, 0.5)):
        with pytest.raises(ClinicalInputError, match=message):
            function(y, p)


def test_age_bands() -> None:
    assert age_bands() == ["<50", "50-59", "60-69", ">=70"]
    assert [age_band(a) for a in (18, 49.9, 50, 59, 60, 69.5, 70, 99)] == [
        "<50", "<50", "50-59", "50-59", "60-69", "60-69", ">=70", ">=70"
    ]  # fmt: skip
    assert age_band(None) == age_band(math.nan) == age_band(pd.NA) == "unknown"
    assert age_bands((45.5, 60)) == ["<45.5", "45.5-<60", ">=60"]
    with pytest.raises(ClinicalInputError, match="age edges must be"):
        age_band(55, (60, 50))


# --- evaluate -----------------------------------------------------------------------------


def test_evaluate_report_agrees_with_the_single_figures() -> None:
    breasts = _breasts(300, seed=0)
    config = EvaluationConfig(n_resamples=200, seed=3)
    report = evaluate(breasts, PROB, 0.5, config)
    y, p = breasts[CANCER].to_numpy(), breasts[PROB].to_numpy()
    assert set(report) == {
        "n_breasts", "n_positive", "n_patients", "auc", "pf1", "operating_point",
        "sensitivity_at_specificity", "specificity_at_sensitivity", "calibration", "config",
    }  # fmt: skip
    assert (report["n_breasts"], report["n_positive"], report["n_patients"]) == (
        600,
        int(y.sum()),
        300,
    )
    auc = report["auc"]
    assert auc["value"] == pytest.approx(roc_auc(y, p), abs=1e-12)
    assert auc["delong"] == pytest.approx(list(delong_auc(y, p)[2:]))
    assert auc["bootstrap"][0] < auc["value"] < auc["bootstrap"][1]
    assert report["pf1"]["value"] == pytest.approx(probabilistic_f1(y, p))
    point = operating_point(y, p, 0.5, config.prevalence)
    op = report["operating_point"]
    assert set(op) == {"threshold", "tp", "fp", "tn", "fn", *FIGURES}
    assert {k: op[k] for k in ("tp", "fp", "tn", "fn")} == {
        k: point[k] for k in ("tp", "fp", "tn", "fn")
    }
    for name in FIGURES:
        assert op[name]["value"] == pytest.approx(point[name], abs=1e-12), name
        low, high = op[name]["bootstrap"]
        assert low <= op[name]["value"] <= high, name
    assert list(report["sensitivity_at_specificity"]) == ["0.889", "0.95", "0.987"]
    for key, entry in report["sensitivity_at_specificity"].items():
        assert entry["value"] == sensitivity_at_specificity(y, p, float(key))
    entry = report["specificity_at_sensitivity"]["0.869"]
    assert entry["value"] == specificity_at_sensitivity(y, p, 0.869)
    assert report["calibration"] == calibration(y, p)
    assert report["config"] == config.to_dict()
    json.dumps(report, allow_nan=True)  # plain Python values only
    assert evaluate(breasts, PROB, None, config)["operating_point"] is None


def test_evaluate_is_deterministic_given_the_seed() -> None:
    breasts = _breasts(100, seed=1)
    config = EvaluationConfig(n_resamples=100, seed=11)
    first = json.dumps(evaluate(breasts, PROB, 0.4, config))
    assert json.dumps(evaluate(breasts, PROB, 0.4, config)) == first
    other = EvaluationConfig(n_resamples=100, seed=12)
    assert json.dumps(evaluate(breasts, PROB, 0.4, other)) != first


def test_bootstrap_resamples_whole_patients() -> None:
    # every patient's two breasts are copies: resampling breasts would pretend to have twice
    # the information, and give intervals about 1/sqrt(2) as wide
    rng = np.random.default_rng(4)
    n = 200
    y = np.repeat((rng.random(n) < 0.3).astype(int), 2)
    p = np.repeat(rng.random(n), 2) * 0.6 + 0.3 * y
    frame = pd.DataFrame(
        {
            PATIENT_ID: np.repeat(np.arange(n), 2),
            PREDICTION_ID: np.arange(2 * n),
            CANCER: y,
            PROB: p,
        }
    )
    config = EvaluationConfig(n_resamples=400)
    by_patient = evaluate(frame, PROB, 0.5, config)
    by_breast = evaluate(frame, PROB, 0.5, config, unit_col=PREDICTION_ID)
    assert by_patient["n_patients"] == n and by_breast["n_patients"] == 2 * n

    def width(report: dict[str, Any], *keys: str) -> float:
        entry = report
        for key in keys:
            entry = entry[key]
        low, high = entry["bootstrap"]
        return float(high - low)

    for keys in (("auc",), ("pf1",), ("operating_point", "sensitivity")):
        ratio = width(by_patient, *keys) / width(by_breast, *keys)
        assert 1.2 < ratio < 1.7, (keys, ratio)


def test_bootstrap_drops_undefined_resamples() -> None:
    # one cancer in 40 patients: most resamples draw it, some do not; without any cancer
    # every AUC is undefined and so is the interval
    y = np.zeros(40)
    y[0] = 1
    p = np.linspace(0.0, 1.0, 40)[::-1]
    config = EvaluationConfig(n_resamples=200, specificities=(), sensitivities=())
    result = bootstrap_intervals(y, p, np.arange(40), 0.5, config)
    assert result["auc"].low == result["auc"].high == result["auc"].value == 1.0
    none = bootstrap_intervals(np.zeros(40), p, np.arange(40), 0.5, config)
    assert math.isnan(none["auc"].low) and math.isnan(none["auc"].high)
    assert math.isnan(none["sensitivity"].value) and none["specificity"].value == pytest.approx(0.5)
    with pytest.raises(ClinicalInputError, match="missing unit"):
        bootstrap_intervals(y, p, [math.nan] * 40, 0.5, config)


def test_evaluate_checks_its_frame() -> None:
    breasts = _breasts(20, seed=2)
    config = EvaluationConfig(n_resamples=10)
    with pytest.raises(ClinicalInputError, match="'nope' missing"):
        evaluate(breasts, "nope", 0.5, config)
    with pytest.raises(ClinicalInputError, match="'site' missing"):
        evaluate(breasts, PROB, 0.5, config, unit_col="site")
    with pytest.raises(ClinicalInputError, match="NaN"):
        evaluate(breasts.assign(**{PROB: math.nan}), PROB, 0.5, config)
    with pytest.raises(ClinicalInputError, match=r"\[0, 1\]"):
        evaluate(breasts.assign(**{PROB: 2.0}), PROB, 0.5, config)


def test_evaluate_is_fast_enough() -> None:
    breasts = _breasts(1800, seed=3)  # 3,600 breasts
    start = time.perf_counter()
    evaluate(breasts, PROB, 0.5, EvaluationConfig(n_resamples=1000))
    elapsed = time.perf_counter() - start
    print(f"\nevaluate: 3,600 breasts x 1,000 resamples in {elapsed:.2f} s")
    assert elapsed < 10.0


# --- subgroups ----------------------------------------------------------------------------


def test_subgroups_guard_bands_and_unknown() -> None:
    rng = np.random.default_rng(8)
    n = 200
    frame = pd.DataFrame(
        {
            CANCER: (rng.random(n) < 0.25).astype(int),
            PROB: rng.random(n),
            AGE: rng.choice([45.0, 52.0, 65.0, 75.0, math.nan], n),
            SITE_ID: rng.choice([1, 2], n),
            DENSITY: rng.choice(np.array(["A", "B", None], dtype=object), n),
        }
    )
    # a small site: 12 breasts with one cancer
    frame.loc[:11, SITE_ID], frame.loc[:11, CANCER] = 3, [1] + [0] * 11
    config = EvaluationConfig()
    rows = subgroups(frame, PROB, 0.5, [AGE, SITE_ID, "absent", DENSITY], config)
    keys = {"column", "value", "n_breasts", "n_positive", "sufficient", "auc", "sensitivity"}
    keys |= {"specificity", "recall_rate", "auc_delong", "text"}
    assert all(set(row) == keys for row in rows)
    assert [(r["column"], r["value"]) for r in rows] == [
        (AGE, "<50"), (AGE, "50-59"), (AGE, "60-69"), (AGE, ">=70"), (AGE, "unknown"),
        (SITE_ID, "1"), (SITE_ID, "2"), (SITE_ID, "3"),
        (DENSITY, "A"), (DENSITY, "B"), (DENSITY, "unknown"),
    ]  # fmt: skip
    small = rows[7]
    assert small["text"] == "insufficient (n=12, positives=1)" and small["sufficient"] is False
    assert small["n_breasts"] == 12 and small["sensitivity"] in (0.0, 1.0)
    assert math.isnan(small["auc_delong"][0])  # a single cancer: no DeLong variance
    for row in rows:
        mask = {
            AGE: frame[AGE].map(age_band) == row["value"],
            SITE_ID: frame[SITE_ID].astype(str) == row["value"],
            DENSITY: frame[DENSITY].fillna("unknown") == row["value"],
        }[row["column"]].to_numpy()
        y, p = frame[CANCER].to_numpy()[mask], frame[PROB].to_numpy()[mask]
        assert row["n_breasts"] == mask.sum() and row["n_positive"] == y.sum()
        assert row["auc"] == pytest.approx(roc_auc(y, p), abs=1e-12, nan_ok=True)
        point = operating_point(y, p, 0.5)
        for name in ("sensitivity", "specificity", "recall_rate"):
            assert row[name] == pytest.approx(point[name], nan_ok=True)
        sufficient = bool(mask.sum() >= 30 and y.sum() >= 5)
        assert row["sufficient"] is sufficient and (row["text"] == "") is sufficient
    json.dumps(rows, allow_nan=True)
    no_threshold = subgroups(frame, PROB, None, [SITE_ID], config)
    assert all(math.isnan(r["sensitivity"]) for r in no_threshold)


# --- coverage simulation ------------------------------------------------------------------


def test_interval_coverage_in_a_binormal_simulation() -> None:
    """95% intervals must cover the true value in 92-98% of 500 simulated studies.

    Negatives score N(0, 1), positives N(d, 1): true AUC = Phi(d / sqrt 2), true
    sensitivity at threshold t = 1 - Phi(t - d). DeLong on 150 + 50 independent breasts; the
    patient bootstrap on 100 patients x 2 breasts whose scores share a patient effect
    (correlation 0.3, marginals unchanged).
    """
    d, t, trials = 1.0, 0.5, 500
    true_auc, true_sensitivity = norm.cdf(d / math.sqrt(2)), 1 - norm.cdf(t - d)
    rng = np.random.default_rng(2024)
    y = np.r_[np.zeros(150), np.ones(50)]
    config = EvaluationConfig(n_resamples=200, specificities=(), sensitivities=())
    delong_hits = auc_hits = sensitivity_hits = 0
    for trial in range(trials):
        scores = rng.normal(d * y, 1.0)
        _, _, low, high = delong_auc(y, scores)
        delong_hits += low <= true_auc <= high
        labels = rng.permutation(y)
        shared = np.repeat(rng.normal(size=100), 2)
        scores = d * labels + math.sqrt(0.3) * shared + math.sqrt(0.7) * rng.normal(size=200)
        units = np.repeat(np.arange(100), 2)
        result = bootstrap_intervals(labels, scores, units, t, replace(config, seed=trial))
        auc_hits += result["auc"].low <= true_auc <= result["auc"].high
        sensitivity_hits += (
            result["sensitivity"].low <= true_sensitivity <= result["sensitivity"].high
        )
    coverages = {
        "delong_auc": delong_hits / trials,
        "bootstrap_auc": auc_hits / trials,
        "bootstrap_sensitivity": sensitivity_hits / trials,
    }
    print(f"\ncoverage of 95% intervals over {trials} trials: {coverages}")
    for name, coverage in coverages.items():
        assert 0.92 <= coverage <= 0.98, (name, coverage)
