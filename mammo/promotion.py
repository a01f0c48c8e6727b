"""Promotion statistics and the decision a protocol makes from them.

Both models are scored on the same held-out breasts (patients that neither trained on, see
``mammo.splits``). :func:`paired_differences` measures the difference of each figure between
challenger and champion with a paired bootstrap over patients; :func:`decide` applies a
:class:`mammo.protocol.PromotionProtocol` to the evaluations (``mammo.clinical.evaluate``),
the differences and the paired subgroup table, and returns every rule with its numbers.

Outcomes: ``promoted`` (every rule passed), ``refused`` (a rule failed; validation first),
``insufficient evidence`` (too few held-out breasts or positive breasts to decide).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo.bootstrap import UnitSampler
from mammo.protocol import PromotionProtocol

Metric = Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], float]
"""metric(y_true, p) -> value, higher is better (e.g. metrics.probabilistic_f1, roc_auc)."""

PROMOTED, REFUSED, INSUFFICIENT = "promoted", "refused", "insufficient evidence"
VALIDATION_PASSED, VALIDATION_FAILED, NOT_VALIDATED = "passed", "failed", "not-run"


class ComparisonInputError(ValueError):
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_differences(
    y_true: npt.ArrayLike,
    p_champion: npt.ArrayLike,
    p_challenger: npt.ArrayLike,
    metrics: Mapping[str, tuple[Metric, Metric]],
    n_resamples: int = 1000,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
    confidence: float = 0.95,
) -> dict[str, BootstrapResult]:
    """Paired percentile bootstrap of ``challenger_metric - champion_metric`` per name.

    ``metrics`` maps a name to (metric of the challenger, metric of the champion): the two
    differ when a figure depends on each model's own locked threshold. Each resample draws
    units with replacement: rows (one per breast) or, when ``groups`` (patient ids) are given,
    whole patients with all their rows; every figure is computed on the same resamples and
    both models on the same rows (paired). Resamples where a difference is NaN (e.g. AUC
    without a positive) are dropped for that figure; if all are, its interval is NaN.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    champion = np.asarray(p_champion, dtype=np.float64).ravel()
    challenger = np.asarray(p_challenger, dtype=np.float64).ravel()
    if not y.size or champion.shape != y.shape or challenger.shape != y.shape:
        raise ComparisonInputError(
            f"need equal non-empty lengths: {y.size}, {champion.size}, {challenger.size}"
        )
    if n_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ComparisonInputError(f"bad n_resamples={n_resamples} or confidence={confidence}")
    if groups is None:
        codes = np.arange(y.size)
    else:
        group_array = np.asarray(groups).ravel()
        if group_array.shape != y.shape:
            raise ComparisonInputError(f"{group_array.size} groups for {y.size} rows")
        codes = pd.factorize(group_array, sort=True)[0]
    sampler = UnitSampler(codes)

    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(n_resamples):
        rows = sampler.draw(rng)
        for name, (of_challenger, of_champion) in metrics.items():
            diff = of_challenger(y[rows], challenger[rows]) - of_champion(y[rows], champion[rows])
            if not math.isnan(diff):
                diffs[name].append(diff)

    alpha = (1.0 - confidence) / 2.0
    results = {}
    for name, (of_challenger, of_champion) in metrics.items():
        values = diffs[name]
        low, high = (
            (float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)))
            if values
            else (math.nan, math.nan)
        )
        champion_value = float(of_champion(y, champion))
        challenger_value = float(of_challenger(y, challenger))
        results[name] = BootstrapResult(
            diff=challenger_value - champion_value,
            ci_low=low,
            ci_high=high,
            champion_value=champion_value,
            challenger_value=challenger_value,
            n=sampler.n_units,
            confidence=confidence,
        )
    return results


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
    """:func:`paired_differences` of one metric applied alike to both models."""
    return paired_differences(
        y_true,
        p_champion,
        p_challenger,
        {"metric": (metric, metric)},
        n_resamples=n_resamples,
        seed=seed,
        groups=groups,
        confidence=confidence,
    )["metric"]


@dataclass(frozen=True)
class Rule:
    """One rule of the protocol as applied: its figures and what the protocol required."""

    name: str
    passed: bool
    observed: str
    required: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    outcome: str  # PROMOTED, REFUSED or INSUFFICIENT
    reason: str
    rules: tuple[Rule, ...]

    @property
    def promote(self) -> bool:
        return self.outcome == PROMOTED

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "rules": [r.to_dict() for r in self.rules],
        }


def decide(
    protocol: PromotionProtocol,
    validation: str,
    validation_detail: str,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    comparison: Mapping[str, BootstrapResult] | None,
    subgroups: Sequence[Mapping[str, Any]],
    critical_drift: Sequence[str] = (),
) -> Decision:
    """Apply ``protocol`` to the challenger's evaluation and, with a champion, to the paired
    differences (keys: the primary metric, ``sensitivity``, ``specificity``) and the paired
    subgroup rows (``column``, ``value``, ``sufficient``, ``text``, and ``challenger`` /
    ``champion`` figures ``auc`` and ``sensitivity``). ``critical_drift``: the keys of the
    data's unresolved critical drift findings, a rule when the protocol blocks on them.

    Every rule is evaluated and reported; a NaN figure fails its rule. Validation decides
    first, then the amount of evidence, then the rest.
    """
    valid = _validation_rule(protocol, validation, validation_detail)
    evidence = _evidence_rule(protocol, challenger)
    rules = [valid, evidence]
    if champion is None:
        rules += _floor_rules(protocol, challenger)
    else:
        if comparison is None:
            raise ComparisonInputError("a champion needs the paired comparison")
        rules += _comparison_rules(protocol, comparison)
        rules.append(_subgroup_rule(protocol, subgroups))
    rules.append(_calibration_rule(protocol, challenger))
    if protocol.drift.block_on_critical:
        rules.append(_drift_rule(critical_drift))

    failed = [r for r in rules if not r.passed]
    if not valid.passed:
        outcome, reason = REFUSED, valid.observed
    elif not evidence.passed:
        outcome, reason = (
            INSUFFICIENT,
            f"{evidence.observed}; the protocol needs {evidence.required}",
        )
    elif failed:
        outcome = REFUSED
        reason = "; ".join(f"{r.name}: {r.observed} (needs {r.required})" for r in failed)
    else:
        outcome = PROMOTED
        against = "first model, every floor cleared" if champion is None else "no worse"
        reason = f"{against}: every rule of {protocol.name} v{protocol.version} passed"
    return Decision(outcome, reason, tuple(rules))


def _validation_rule(protocol: PromotionProtocol, status: str, detail: str) -> Rule:
    required = "passed" if protocol.validation.required else "not required"
    if status == VALIDATION_PASSED or not protocol.validation.required:
        return Rule("validation", True, f"{status}: {detail}" if detail else status, required)
    why = {
        VALIDATION_FAILED: "the data it trained on failed validation",
        NOT_VALIDATED: "the data it trained on was never validated",
    }.get(status, f"validation status {status!r}")
    return Rule("validation", False, f"{why}: {detail}" if detail else why, required)


def _drift_rule(critical: Sequence[str]) -> Rule:
    if not critical:
        return Rule("drift", True, "no unresolved critical drift", "no unresolved critical drift")
    return Rule(
        "drift",
        False,
        f"unresolved critical drift: {', '.join(critical)} (mammo drift --resolve KEY)",
        "no unresolved critical drift",
    )


def _evidence_rule(protocol: PromotionProtocol, evaluation: Mapping[str, Any]) -> Rule:
    breasts, positives = int(evaluation["n_breasts"]), int(evaluation["n_positive"])
    need = protocol.evidence
    return Rule(
        "evidence",
        breasts >= need.min_breasts and positives >= need.min_positive_breasts,
        f"{breasts} held-out breasts, {positives} positive",
        f">= {need.min_breasts} breasts and >= {need.min_positive_breasts} positive",
    )


def lower_bound(evaluation: Mapping[str, Any], figure: str) -> float:
    """The lower bootstrap bound of ``figure`` (auc, pf1, or an operating-point figure)."""
    if figure in ("auc", "pf1"):
        return float(evaluation[figure]["bootstrap"][0])
    point = evaluation.get("operating_point")
    if not point:
        return math.nan
    return float(point[figure]["bootstrap"][0])


def _floor_rules(protocol: PromotionProtocol, evaluation: Mapping[str, Any]) -> list[Rule]:
    rules = []
    for figure, floor in protocol.first_model.items():
        low = lower_bound(evaluation, figure)
        rules.append(
            Rule(f"floor {figure}", low >= floor, f"lower bound {_f(low)}", f">= {floor:.4f}")
        )
    return rules


def _comparison_rules(
    protocol: PromotionProtocol, comparison: Mapping[str, BootstrapResult]
) -> list[Rule]:
    margins: dict[str, float | None] = {
        protocol.primary.metric: protocol.primary.margin,
        "sensitivity": protocol.operating_point.sensitivity_margin,
        "specificity": protocol.operating_point.specificity_margin,
    }
    rules = []
    for figure, margin in margins.items():
        if margin is None:
            rules.append(Rule(f"non-inferior {figure}", True, "not applied", "no such rule"))
            continue
        result = comparison[figure]
        rules.append(
            Rule(
                f"non-inferior {figure}",
                result.ci_low > -margin,
                f"challenger {_f(result.challenger_value)} vs champion "
                f"{_f(result.champion_value)}, difference {_f(result.diff, '+.4f')}, "
                f"{result.confidence:.0%} CI [{_f(result.ci_low, '+.4f')}, "
                f"{_f(result.ci_high, '+.4f')}]",
                f"lower bound > {-margin:+.4f}",
            )
        )
    return rules


def _subgroup_rule(protocol: PromotionProtocol, rows: Sequence[Mapping[str, Any]]) -> Rule:
    rule = protocol.subgroups
    margins = {"auc": rule.auc_margin, "sensitivity": rule.sensitivity_margin}
    judged, worse = 0, []
    for row in rows:
        if not row["sufficient"]:
            continue
        judged += 1
        for figure, margin in margins.items():
            diff = float(row["challenger"][figure]) - float(row["champion"][figure])
            if math.isnan(diff) or diff < -margin:
                worse.append(f"{row['column']}={row['value']} {figure} {_f(diff, '+.4f')}")
    observed = f"{judged} of {len(rows)} subgroups large enough to judge"
    if worse:
        observed += "; worse: " + ", ".join(worse)
    required = (
        f"no subgroup (>= {rule.min_breasts} breasts, >= {rule.min_positive_breasts} positive) "
        f"worse by more than auc {rule.auc_margin:.2f} or sensitivity {rule.sensitivity_margin:.2f}"
    )
    return Rule("subgroups", not worse, observed, required)


def _calibration_rule(protocol: PromotionProtocol, evaluation: Mapping[str, Any]) -> Rule:
    ece = float(evaluation["calibration"]["ece"])
    bound = protocol.calibration.max_ece
    return Rule("calibration", ece <= bound, f"ECE {_f(ece)}", f"<= {bound:.4f}")


def _f(value: float, spec: str = ".4f") -> str:
    return "undefined" if math.isnan(value) else format(value, spec)
