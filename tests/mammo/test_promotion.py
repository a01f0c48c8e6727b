"""Promotion statistics: the paired bootstrap and the decision policy."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from mammo.metrics import probabilistic_f1, roc_auc
from mammo.promotion import BootstrapResult, PromotionError, decide, paired_bootstrap


def accuracy(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> float:
    return float(np.mean((p >= 0.5) == (y > 0)))


def _result(champion: float, challenger: float, ci_low: float, ci_high: float) -> BootstrapResult:
    return BootstrapResult(
        diff=challenger - champion,
        ci_low=ci_low,
        ci_high=ci_high,
        champion_value=champion,
        challenger_value=challenger,
        n=500,
    )


@pytest.mark.parametrize(
    ("result", "champion_exists", "validated", "promote", "reason_start"),
    [
        pytest.param(
            _result(0.40, 0.45, 0.01, 0.09),
            True,
            True,
            True,
            "challenger is better",
            id="better-and-proven-promoted",
        ),
        pytest.param(
            _result(0.40, 0.45, -0.03, 0.12),
            True,
            True,
            False,
            "improvement not",
            id="better-but-ci-reaches-below-margin-refused",
        ),
        pytest.param(
            _result(0.45, 0.40, -0.09, -0.01),
            True,
            True,
            False,
            "challenger is worse",
            id="worse-refused",
        ),
        pytest.param(
            _result(0.400, 0.405, -0.02, 0.03),
            True,
            True,
            False,
            "tie",
            id="tie-within-margin-keeps-champion",
        ),
        pytest.param(
            _result(0.400, 0.390, -0.04, 0.02),
            True,
            True,
            False,
            "tie",
            id="slightly-worse-within-margin-is-a-tie",
        ),
        pytest.param(
            _result(0.0, 0.30, math.nan, math.nan),
            False,
            True,
            False,
            "first model",
            id="first-model-below-floor-refused",
        ),
        pytest.param(
            _result(0.0, 0.35, math.nan, math.nan),
            False,
            True,
            True,
            "first model",
            id="first-model-above-floor-promoted",
        ),
        pytest.param(
            _result(0.0, 0.33, math.nan, math.nan),
            False,
            True,
            True,
            "first model",
            id="first-model-exactly-at-floor-promoted",
        ),
        pytest.param(
            _result(0.10, 0.90, 0.70, 0.90),
            True,
            False,
            False,
            "data failed",
            id="unvalidated-never-promoted-even-if-far-better",
        ),
        pytest.param(
            _result(0.0, 0.90, math.nan, math.nan),
            False,
            False,
            False,
            "data failed",
            id="unvalidated-first-model-never-promoted",
        ),
        pytest.param(
            _result(0.40, 0.45, math.nan, math.nan),
            True,
            True,
            False,
            "undefined",
            id="undefined-interval-refused",
        ),
    ],
)
def test_decide(
    result: BootstrapResult,
    champion_exists: bool,
    validated: bool,
    promote: bool,
    reason_start: str,
) -> None:
    decision = decide(
        result, margin=0.01, floor=0.33, champion_exists=champion_exists, data_validated=validated
    )
    assert decision.promote is promote
    assert decision.reason.startswith(reason_start)


def test_reasons_carry_the_figures() -> None:
    decision = decide(_result(0.40, 0.45, 0.01, 0.09), 0.01, 0.3, True, True)
    assert "0.4500" in decision.reason and "0.4000" in decision.reason
    assert "+0.0500" in decision.reason and "[+0.0100, +0.0900]" in decision.reason


def test_margin_is_a_tie_at_its_exact_value() -> None:
    result = BootstrapResult(0.01, 0.005, 0.02, 0.40, 0.41, 100)
    assert decide(result, 0.01, 0.0, True, True).promote is False


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
    with pytest.raises(PromotionError):
        paired_bootstrap(**{**args, **kwargs})  # type: ignore[arg-type]
