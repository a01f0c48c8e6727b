"""Promotion statistics: the paired bootstrap and the decision a protocol makes."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from mammo.metrics import probabilistic_f1, roc_auc
from mammo.promotion import (
    INSUFFICIENT,
    NOT_VALIDATED,
    PROMOTED,
    REFUSED,
    VALIDATION_FAILED,
    VALIDATION_PASSED,
    BootstrapResult,
    ComparisonInputError,
    Decision,
    decide,
    paired_bootstrap,
    paired_differences,
)
from mammo.protocol import Drift, PromotionProtocol


def accuracy(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> float:
    return float(np.mean((p >= 0.5) == (y > 0)))


def _evaluation(
    breasts: int = 300,
    positives: int = 40,
    auc_low: float = 0.80,
    sensitivity_low: float = 0.60,
    specificity_low: float = 0.90,
    ece: float = 0.05,
) -> dict[str, Any]:
    """The parts of mammo.clinical.evaluate's report that decide() reads."""

    def figure(low: float) -> dict[str, Any]:
        return {"value": low + 0.05, "bootstrap": [low, low + 0.1]}

    return {
        "n_breasts": breasts,
        "n_positive": positives,
        "auc": figure(auc_low),
        "pf1": figure(0.3),
        "operating_point": {
            "threshold": 0.5,
            "sensitivity": figure(sensitivity_low),
            "specificity": figure(specificity_low),
        },
        "calibration": {"ece": ece},
    }


def _difference(diff: float, low: float) -> BootstrapResult:
    return BootstrapResult(diff, low, diff + (diff - low), 0.80, 0.80 + diff, 150)


def _differences(auc: float = 0.0, auc_low: float = -0.01, sens_low: float = -0.01) -> dict:
    return {
        "auc": _difference(auc, auc_low),
        "sensitivity": _difference(0.0, sens_low),
        "specificity": _difference(0.0, -0.005),
    }


def _subgroup(value: str, champion_auc: float, challenger_auc: float, n: int = 60) -> dict:
    return {
        "column": "site_id",
        "value": value,
        "n_breasts": n,
        "n_positive": 10,
        "sufficient": n >= 30,
        "text": "" if n >= 30 else f"insufficient (n={n}, positives=10)",
        "challenger": {"auc": challenger_auc, "sensitivity": 0.7},
        "champion": {"auc": champion_auc, "sensitivity": 0.7},
    }


PROTOCOL = PromotionProtocol()


def _decide(
    challenger: dict[str, Any] | None = None,
    champion: dict[str, Any] | None = None,
    differences: dict[str, BootstrapResult] | None = None,
    subgroups: list[dict[str, Any]] | None = None,
    validation: str = VALIDATION_PASSED,
    protocol: PromotionProtocol = PROTOCOL,
) -> Decision:
    return decide(
        protocol,
        validation,
        "outcome validation/manifests/abc/outcome.json",
        challenger or _evaluation(),
        champion,
        differences,
        subgroups or [],
    )


def test_a_first_model_clearing_every_floor_is_promoted() -> None:
    decision = _decide()
    assert decision.outcome == PROMOTED and decision.promote
    assert [r.name for r in decision.rules] == [
        "validation",
        "evidence",
        "floor auc",
        "floor sensitivity",
        "floor specificity",
        "calibration",
    ]
    assert all(r.passed for r in decision.rules)


def test_a_first_model_below_one_floor_is_refused_naming_it() -> None:
    decision = _decide(_evaluation(sensitivity_low=0.20))
    assert decision.outcome == REFUSED
    assert "floor sensitivity: lower bound 0.2000 (needs >= 0.2500)" in decision.reason
    assert "floor auc" not in decision.reason


def test_a_small_holdout_is_insufficient_evidence_naming_the_counts() -> None:
    decision = _decide(_evaluation(breasts=18, positives=2, auc_low=0.9))
    assert decision.outcome == INSUFFICIENT and not decision.promote
    assert decision.reason == (
        "18 held-out breasts, 2 positive; the protocol needs >= 100 breasts and >= 20 positive"
    )


def test_the_default_minimums_sit_between_a_tiny_and_a_real_holdout() -> None:
    assert _decide(_evaluation(breasts=3600, positives=74)).outcome == PROMOTED  # RSNA
    assert _decide(_evaluation(breasts=150, positives=27)).outcome == PROMOTED  # 500 x 18 %
    assert _decide(_evaluation(breasts=3000, positives=19)).outcome == INSUFFICIENT


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (VALIDATION_FAILED, "the data it trained on failed validation"),
        (NOT_VALIDATED, "the data it trained on was never validated"),
    ],
)
def test_unvalidated_data_is_refused_whatever_the_figures(status: str, words: str) -> None:
    decision = _decide(_evaluation(breasts=10, positives=1), validation=status)
    assert decision.outcome == REFUSED
    assert decision.reason.startswith(words)
    assert "outcome validation/manifests/abc/outcome.json" in decision.reason


def test_validation_can_be_waived_only_by_the_protocol() -> None:
    waived = PromotionProtocol.from_dict({"validation": {"required": False}})
    assert _decide(validation=NOT_VALIDATED, protocol=waived).outcome == PROMOTED


def test_a_non_inferior_challenger_is_promoted() -> None:
    decision = _decide(champion=_evaluation(), differences=_differences(0.0, -0.015))
    assert decision.outcome == PROMOTED, decision.reason
    names = [r.name for r in decision.rules]
    assert "non-inferior auc" in names and "subgroups" in names and "floor auc" not in names


def test_a_lower_bound_beyond_the_margin_refuses() -> None:
    decision = _decide(champion=_evaluation(), differences=_differences(0.01, -0.03))
    assert decision.outcome == REFUSED
    assert "non-inferior auc" in decision.reason and "-0.0300" in decision.reason


def test_a_worse_sensitivity_at_the_locked_threshold_refuses() -> None:
    decision = _decide(champion=_evaluation(), differences=_differences(sens_low=-0.08))
    assert decision.outcome == REFUSED and "non-inferior sensitivity" in decision.reason


def test_a_better_challenger_worse_in_one_subgroup_is_refused_naming_it() -> None:
    rows = [_subgroup("1", 0.80, 0.95), _subgroup("2", 0.85, 0.70), _subgroup("3", 0.9, 0.1, n=12)]
    decision = _decide(champion=_evaluation(), differences=_differences(0.05, 0.02), subgroups=rows)
    assert decision.outcome == REFUSED
    assert "site_id=2 auc -0.1500" in decision.reason
    assert "site_id=1" not in decision.reason
    assert "site_id=3" not in decision.reason  # too small to judge
    assert "2 of 3 subgroups large enough to judge" in decision.reason


def test_a_miscalibrated_challenger_is_refused() -> None:
    decision = _decide(_evaluation(ece=0.4))
    assert decision.outcome == REFUSED and "calibration: ECE 0.4000" in decision.reason


def test_an_undefined_figure_fails_its_rule() -> None:
    decision = _decide(champion=_evaluation(), differences=_differences(math.nan, math.nan))
    assert decision.outcome == REFUSED and "undefined" in decision.reason


def test_the_decision_serialises_with_every_rule() -> None:
    document = _decide().to_dict()
    assert document["outcome"] == PROMOTED
    assert {"name", "passed", "observed", "required"} == set(document["rules"][0])


def _accuracy_case(n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Champion right on 70% of breasts, challenger on exactly those plus 10% more:
    the true accuracy difference on this set is 0.10."""
    y = np.tile([1.0, 0.0], n // 2)
    right_champion = np.arange(n) < 0.7 * n
    right_challenger = np.arange(n) < 0.8 * n
    p_champion = np.where(right_champion, y, 1 - y)
    p_challenger = np.where(right_challenger, y, 1 - y)
    return y, p_champion, p_challenger


def test_bootstrap_ci_contains_the_true_difference() -> None:
    y, champion, challenger = _accuracy_case()
    result = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=500, seed=0)
    assert result.champion_value == pytest.approx(0.7)
    assert result.challenger_value == pytest.approx(0.8)
    assert result.diff == pytest.approx(0.1)
    assert result.ci_low < 0.1 < result.ci_high
    # paired: per-breast differences are 0 or 1 with mean .1, sd of the mean
    # sqrt(.1 * .9 / 2000) = .0067, so the 95% interval is about .1 +- .013
    assert result.ci_low > 0.08 and result.ci_high < 0.12
    assert result.n == 2000


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    y, champion, challenger = _accuracy_case(400)
    a = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=200, seed=7)
    b = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=200, seed=7)
    c = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=200, seed=8)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_identical_models_have_a_zero_interval() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.1).astype(float)
    p = rng.random(300)
    result = paired_bootstrap(y, p, p, probabilistic_f1, n_resamples=100, seed=0)
    assert (result.diff, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)


def test_grouped_resampling_keeps_patients_together() -> None:
    # 100 patients x 10 identical breasts: the evidence is 100 units, not 1000, so the
    # grouped interval is about sqrt(10) times wider than the row interval.
    y, champion, challenger = _accuracy_case(100)
    y, champion, challenger = (np.repeat(a, 10) for a in (y, champion, challenger))
    groups = np.repeat(np.arange(100) * 13 + 5, 10)
    rows = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=300, seed=0)
    grouped = paired_bootstrap(
        y, champion, challenger, accuracy, n_resamples=300, seed=0, groups=groups
    )
    assert rows.n == 1000 and grouped.n == 100
    assert grouped.diff == rows.diff == pytest.approx(0.1)
    assert (grouped.ci_high - grouped.ci_low) > 2.0 * (rows.ci_high - rows.ci_low)


def test_resamples_where_the_metric_is_undefined_are_dropped() -> None:
    y = np.array([1.0, 0.0, 0.0, 0.0, 0.0])  # many resamples have no positive: AUC NaN
    champion = np.array([0.2, 0.5, 0.4, 0.3, 0.1])
    challenger = np.array([0.9, 0.5, 0.4, 0.3, 0.1])
    result = paired_bootstrap(y, champion, challenger, roc_auc, n_resamples=200, seed=0)
    assert result.diff == pytest.approx(1.0 - 0.25)
    assert math.isfinite(result.ci_low) and math.isfinite(result.ci_high)


@pytest.mark.parametrize(
    ("kwargs"),
    [
        pytest.param({"p_challenger": np.zeros(3)}, id="length-mismatch"),
        pytest.param({"groups": np.zeros(3)}, id="groups-length-mismatch"),
        pytest.param({"n_resamples": 0}, id="no-resamples"),
    ],
)
def test_bad_inputs_raise(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "y_true": np.array([1.0, 0.0]),
        "p_champion": np.array([0.5, 0.5]),
        "p_challenger": np.array([0.6, 0.4]),
        "metric": accuracy,
    }
    with pytest.raises(ComparisonInputError):
        paired_bootstrap(**{**args, **kwargs})  # type: ignore[arg-type]


def test_paired_differences_use_each_models_own_figure_on_the_same_resamples() -> None:
    y, champion, challenger = _accuracy_case(400)
    both = paired_differences(
        y,
        champion,
        challenger,
        {"same": (accuracy, accuracy), "shifted": (accuracy, lambda a, b: accuracy(a, b) - 0.1)},
        n_resamples=200,
        seed=3,
    )
    alone = paired_bootstrap(y, champion, challenger, accuracy, n_resamples=200, seed=3)
    assert both["same"] == alone
    assert both["shifted"].diff == pytest.approx(alone.diff + 0.1)
    assert both["shifted"].ci_low == pytest.approx(alone.ci_low + 0.1)


def test_a_protocol_can_turn_an_operating_point_rule_off() -> None:
    protocol = PromotionProtocol.from_dict({"operating_point": {"sensitivity_margin": None}})
    decision = _decide(
        champion=_evaluation(), differences=_differences(sens_low=-0.9), protocol=protocol
    )
    assert decision.outcome == PROMOTED, decision.reason
    rule = next(r for r in decision.rules if r.name == "non-inferior sensitivity")
    assert (rule.passed, rule.observed, rule.required) == (True, "not applied", "no such rule")


def test_a_protocol_blocking_on_critical_drift_refuses_while_one_is_unresolved() -> None:
    blocking = replace(PROTOCOL, drift=Drift(block_on_critical=True))
    key = "numeric-shift:pixel_mean:machine_id=49"
    refused = decide(blocking, VALIDATION_PASSED, "", _evaluation(), None, None, [], [key])
    assert refused.outcome == REFUSED
    assert f"drift: unresolved critical drift: {key} (mammo drift --resolve KEY)" in refused.reason
    clear = decide(blocking, VALIDATION_PASSED, "", _evaluation(), None, None, [], [])
    assert clear.outcome == PROMOTED and clear.rules[-1].name == "drift"
    # the shipped protocol does not block: no drift rule at all, whatever is passed
    ignored = decide(PROTOCOL, VALIDATION_PASSED, "", _evaluation(), None, None, [], [key])
    assert ignored.outcome == PROMOTED and "drift" not in [r.name for r in ignored.rules]
    assert PromotionProtocol.load().drift == Drift(block_on_critical=False)
