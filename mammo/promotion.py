"""Statistics for promoting a challenger model over the champion.

Both models are scored on the same holdout breasts (patients that neither trained on, see
``mammo.splits``). :func:`paired_bootstrap` measures the difference of a metric and its
uncertainty; :func:`decide` applies the promotion policy to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

Metric = Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], float]
"""metric(y_true, p) -> value, higher is better (e.g. metrics.probabilistic_f1, roc_auc)."""


_ROUNDING = 1e-9


class PromotionError(ValueError):
    """Inputs of the bootstrap do not fit together."""


@dataclass(frozen=True)
class BootstrapResult:
    diff: float  # challenger_value - champion_value on the full data
    ci_low: float  # percentile confidence interval of the difference
    ci_high: float
    champion_value: float
    challenger_value: float
    n: int  # number of resampled units: rows (breasts), or groups (patients)
    confidence: float = 0.95


@dataclass(frozen=True)
class PromotionPolicy:
    """How a challenger is judged against the champion (see :func:`decide`)."""

    metric: str = "auc"  # breast-level: "auc" or "pf1"
    margin: float = 0.01  # differences within the margin are ties
    floor: float = 0.6  # a first model must reach this
    n_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in ("auc", "pf1"):
            raise PromotionError(f"promotion metric must be auc or pf1, got {self.metric!r}")
        if self.margin < 0 or self.n_resamples < 100 or not 0.5 < self.confidence < 1:
            raise PromotionError(
                f"need margin >= 0, n_resamples >= 100, confidence in (0.5, 1): {self}"
            )


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def paired_bootstrap(
    y_true: npt.ArrayLike,
    p_champion: npt.ArrayLike,
    p_challenger: npt.ArrayLike,
    metric: Metric,
    n_resamples: int = 1000,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired percentile bootstrap of ``metric(challenger) - metric(champion)``.

    Each resample draws units with replacement: rows (one per breast) or, when ``groups``
    (e.g. patient ids) are given, whole groups with all their rows. Both models are scored
    on the same resample (paired), which cancels the variation shared by the two models.
    Resamples where the metric is NaN (e.g. AUC without a positive) are dropped; if all
    are, the interval is NaN.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    champion = np.asarray(p_champion, dtype=np.float64).ravel()
    challenger = np.asarray(p_challenger, dtype=np.float64).ravel()
    if not y.size or champion.shape != y.shape or challenger.shape != y.shape:
        raise PromotionError(
            f"need equal non-empty lengths: {y.size}, {champion.size}, {challenger.size}"
        )
    if n_resamples < 1 or not 0.0 < confidence < 1.0:
        raise PromotionError(f"bad n_resamples={n_resamples} or confidence={confidence}")

    if groups is None:
        codes = np.arange(y.size)
    else:
        group_array = np.asarray(groups).ravel()
        if group_array.shape != y.shape:
            raise PromotionError(f"{group_array.size} groups for {y.size} rows")
        codes = pd.factorize(group_array, sort=True)[0]
    sampler = _UnitSampler(codes)

    rng = np.random.default_rng(seed)
    diffs: list[float] = []
    for _ in range(n_resamples):
        rows = sampler.draw(rng)
        diff = metric(y[rows], challenger[rows]) - metric(y[rows], champion[rows])
        if not math.isnan(diff):
            diffs.append(diff)

    alpha = (1.0 - confidence) / 2.0
    low, high = (
        (float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1.0 - alpha)))
        if diffs
        else (math.nan, math.nan)
    )
    champion_value, challenger_value = float(metric(y, champion)), float(metric(y, challenger))
    return BootstrapResult(
        diff=challenger_value - champion_value,
        ci_low=low,
        ci_high=high,
        champion_value=champion_value,
        challenger_value=challenger_value,
        n=sampler.n_units,
        confidence=confidence,
    )


class _UnitSampler:
    """Draws units (codes 0..G-1 over the rows) with replacement and returns their rows."""

    def __init__(self, codes: npt.NDArray[np.intp]) -> None:
        self.order = np.argsort(codes, kind="stable")  # rows grouped by unit
        self.counts = np.bincount(codes)  # (G,) rows per unit
        self.starts = np.cumsum(self.counts) - self.counts  # (G,) first position in order
        self.n_units = len(self.counts)

    def draw(self, rng: np.random.Generator) -> npt.NDArray[np.intp]:
        picked = rng.integers(0, self.n_units, size=self.n_units)
        lengths = self.counts[picked]
        # position j of the output belongs to picked unit k: start[k] + (j - first j of k)
        offset_in_unit = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        rows: npt.NDArray[np.intp] = self.order[
            np.repeat(self.starts[picked], lengths) + offset_in_unit
        ]
        return rows


def decide(
    result: BootstrapResult,
    margin: float,
    floor: float,
    champion_exists: bool,
    data_validated: bool,
) -> Decision:
    """Promotion policy, first matching rule wins:

    1. data_validated is False -> never promote.
    2. No champion -> promote iff challenger_value >= floor (a first model must be useful).
    3. With diff = challenger - champion:
       - |diff| <= margin: a tie -> keep the champion (no churn on noise);
       - diff < -margin: worse -> refuse;
       - diff > margin: promote only if ci_low > -margin (the bootstrap shows the challenger
         is not worse beyond the margin); otherwise refuse as not proven.
    Any NaN figure refuses. |diff| within 1e-9 of the margin counts as a tie, so float
    rounding (0.39 - 0.40 = -0.01000000000000001) does not turn a tie into a refusal.
    """
    challenger, champion = result.challenger_value, result.champion_value
    if not data_validated:
        return Decision(False, "data failed validation: no promotion")
    if not champion_exists:
        if challenger >= floor:
            return Decision(True, f"first model: {challenger:.4f} >= floor {floor:.4f}")
        return Decision(False, f"first model: {challenger:.4f} below floor {floor:.4f}")
    figures = (
        f"challenger {challenger:.4f} vs champion {champion:.4f}, diff {result.diff:+.4f}, "
        f"{result.confidence:.0%} CI [{result.ci_low:+.4f}, {result.ci_high:+.4f}], "
        f"margin {margin:.4f}"
    )
    if math.isnan(result.diff) or math.isnan(result.ci_low):
        return Decision(False, f"undefined comparison: {figures}")
    if abs(result.diff) <= margin + _ROUNDING:
        return Decision(False, f"tie, keeping the champion: {figures}")
    if result.diff < -margin:
        return Decision(False, f"challenger is worse: {figures}")
    if result.ci_low > -margin:
        return Decision(True, f"challenger is better: {figures}")
    return Decision(False, f"improvement not proven: {figures}")
