"""Bernoulli CUSUM: run lengths against simulation, the limit, a chart drawn by hand, and the
performance charts of a model's outcomes (misses and false recalls at its threshold)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo import contract as c
from mammo.cusum import (
    NIGHT,
    OUTCOME,
    CusumError,
    chart,
    control_limit,
    out_of_control_rate,
    run_length,
    smoothed_rate,
    weights,
)
from mammo.drift import DriftSettings, FindingKind, Severity
from mammo.performance import new_outcomes, performance_charts


def simulated_run_length(p: float, p0: float, p1: float, limit: float, runs: int) -> float:
    """Mean cases to a signal over ``runs`` simulated charts (all run side by side)."""
    rng = np.random.default_rng(0)
    up, down = weights(p0, p1)
    s, length, alive = np.zeros(runs), np.zeros(runs), np.ones(runs, bool)
    while alive.any():
        x = rng.random(int(alive.sum())) < p
        s[alive] = np.maximum(0.0, s[alive] + np.where(x, up, down))
        length[alive] += 1
        alive &= s < limit
    return float(length.mean())


@pytest.mark.parametrize("p0", [0.05, 0.2, 0.5])
def test_the_markov_chain_run_length_matches_simulation_in_and_out_of_control(p0: float) -> None:
    p1 = out_of_control_rate(p0, 2.0)
    limit = control_limit(p0, p1, 150.0)
    in_control = run_length(p0, p0, p1, limit)
    out_of_control = run_length(p1, p0, p1, limit)
    # 8000 runs: the simulated mean's standard error is about 1 % of it; the chain smooths
    # the steps of the lattice S lives on (mammo/cusum.py), hence 10 %
    assert in_control == pytest.approx(simulated_run_length(p0, p0, p1, limit, 8000), rel=0.1)
    assert out_of_control == pytest.approx(simulated_run_length(p1, p0, p1, limit, 8000), rel=0.1)
    assert out_of_control < in_control / 3  # the chart does detect the doubled odds


def test_the_limit_is_the_smallest_that_reaches_the_run_length() -> None:
    p0 = 0.1
    p1 = out_of_control_rate(p0, 2.0)
    limit = control_limit(p0, p1, 500.0)
    assert run_length(p0, p0, p1, limit) >= 500.0
    assert run_length(p0, p0, p1, limit * 0.98) < 500.0
    assert control_limit(p0, p1, 2000.0) > limit


def test_a_chart_by_hand() -> None:
    p0, p1 = 0.2, out_of_control_rate(0.2, 2.0)
    assert p1 == pytest.approx(1 / 3)  # odds 0.25 -> 0.5
    up, down = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
    cases = pd.DataFrame({NIGHT: ["n2", "n1", "n1", "n2", "n3"], OUTCOME: [1, 0, 1, 1, 1]})
    drawn = chart("sensitivity", cases, p0, 2.0, 20.0)
    s1 = max(0.0, max(0.0, down) + up)  # night n1: 0 then 1
    s2 = s1 + 2 * up  # night n2: 1, 1
    s3 = s2 + up
    assert drawn.nights == ("n1", "n2", "n3")
    assert drawn.values == pytest.approx((s1, s2, s3))
    assert drawn.cases == (2, 2, 1) and drawn.events == (1, 2, 1)
    crossing = next(n for n, v in zip(drawn.nights, drawn.values, strict=True) if v >= drawn.limit)
    assert drawn.signal_night == crossing


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: out_of_control_rate(0.0, 2.0), "in-control rate"),
        (lambda: out_of_control_rate(0.2, 1.0), "odds_ratio"),
        (lambda: control_limit(0.2, 0.3, 1.0), "run length"),
        (lambda: smoothed_rate(3, 2), "events"),
    ],
)
def test_bad_settings_are_refused(call: object, message: str) -> None:
    with pytest.raises(CusumError, match=message):
        call()  # type: ignore[operator]


def _breasts(n: int, positive_every: int, rng: np.random.Generator, miss: float) -> pd.DataFrame:
    cancer = (np.arange(n) % positive_every == 0).astype(int)
    detected = rng.random(n) >= miss
    probability = np.where(cancer == 1, np.where(detected, 0.9, 0.1), rng.uniform(0, 0.45, n))
    return pd.DataFrame(
        {
            c.PATIENT_ID: np.arange(n) // 2,
            c.LATERALITY: np.where(np.arange(n) % 2, "R", "L"),
            c.CANCER: cancer,
            c.PROBABILITY: probability,
        }
    )


def test_a_model_that_starts_missing_cancers_signals_on_sensitivity_alone() -> None:
    rng = np.random.default_rng(1)
    point = {"tp": 45, "fn": 5, "fp": 20, "tn": 180}  # holdout: sensitivity 0.9
    settings = DriftSettings(cusum_arl=200.0)
    outcomes = None
    for night in range(6):
        breasts = _breasts(200, 5, rng, miss=0.1 if night < 3 else 0.5)
        breasts[c.PATIENT_ID] += 1000 * night  # new patients each night
        outcomes = new_outcomes(outcomes, breasts, f"night-{night}")
    assert outcomes is not None
    charts, findings = performance_charts(outcomes, 0.5, point, settings)
    by_name = {drawn.name: drawn for drawn in charts}
    assert by_name["sensitivity"].p0 == pytest.approx(5.5 / 51)
    assert by_name["sensitivity"].signal_night in ("night-3", "night-4", "night-5")
    assert not by_name["specificity"].signalled  # no negative is ever recalled
    assert [(f.kind, f.column, f.severity) for f in findings] == [
        (FindingKind.PERFORMANCE_SHIFT, "sensitivity", Severity.CRITICAL)
    ]


def test_each_breast_is_charted_once_on_the_night_it_was_first_seen_labelled() -> None:
    rng = np.random.default_rng(2)
    first = _breasts(8, 2, rng, 0.0)
    unlabelled = first.assign(**{c.CANCER: np.nan}).iloc[:2]
    outcomes = new_outcomes(None, pd.concat([first.iloc[2:], unlabelled]), "a")
    outcomes = new_outcomes(outcomes, first, "b")  # the same breasts again, two now labelled
    assert len(outcomes) == 8
    assert outcomes.groupby(NIGHT).size().to_dict() == {"a": 6, "b": 2}


def test_in_control_nights_rarely_signal() -> None:
    """The false-alarm rate over repeated in-control sequences, against the run length."""
    rng = np.random.default_rng(3)
    point = {"tp": 90, "fn": 10, "fp": 40, "tn": 360}
    settings = DriftSettings(cusum_arl=500.0)
    signals = 0
    trials = 60
    for _ in range(trials):
        breasts = _breasts(300, 5, rng, miss=10.5 / 101)  # 60 positives a sequence
        charts, _ = performance_charts(new_outcomes(None, breasts, "n"), 0.5, point, settings)
        signals += any(d.name == "sensitivity" and d.signalled for d in charts)
    # 60 positives with an in-control run length of 500: about 1 - exp(-60/500) = 11 %
    assert signals / trials < 0.3
