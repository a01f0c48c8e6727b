"""Clinical evaluation of breast-level probabilities: the figures a screening programme reads.

Beyond the competition's pF1 (``mammo.metrics``), a screening reader is judged by sensitivity
and specificity at an operating point, by recall rate and PPV re-weighted to the prevalence of
a screening population (training sets are enriched with cancers), and by sensitivity at the
specificity of radiologists. Intervals: DeLong for the AUC (``mammo.roc``), and a percentile
bootstrap over patients (the breasts of a patient are correlated), one set of resamples for
every statistic. Subgroups below a minimum size are marked insufficient, not read as evidence.
The array-level functions of ``mammo.roc`` and ``mammo.calibration`` are re-exported here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo.bootstrap import UnitSampler
from mammo.calibration import calibration as calibration
from mammo.contract import AGE, CANCER, PATIENT_ID
from mammo.metrics import probabilistic_f1
from mammo.roc import DEFAULT_PREVALENCE as DEFAULT_PREVALENCE
from mammo.roc import FIGURES as FIGURES
from mammo.roc import ClinicalInputError as ClinicalInputError
from mammo.roc import (
    FloatArray,
    auc_from_counts,
    best_rate,
    check_threshold,
    checked_pair,
    is_number,
    rates_from_counts,
    roc_counts,
    value_counts,
)
from mammo.roc import delong_auc as delong_auc
from mammo.roc import delong_auc_brute as delong_auc_brute
from mammo.roc import operating_point as operating_point
from mammo.roc import paired_delong as paired_delong
from mammo.roc import sensitivity_at_specificity as sensitivity_at_specificity
from mammo.roc import specificity_at_sensitivity as specificity_at_sensitivity

# 0.889 and 0.869: specificity and sensitivity of US radiologists, Lehman et al., Radiology 2017
DEFAULT_SPECIFICITIES = (0.889, 0.95, 0.987)
DEFAULT_SENSITIVITIES = (0.869,)
DEFAULT_AGE_EDGES = (50.0, 60.0, 70.0)
NAN = math.nan


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ClinicalInputError(f"EvaluationConfig.{name} must be {allowed}, got {value!r}")


def _set(config: EvaluationConfig, name: str, value: object) -> None:
    object.__setattr__(config, name, value)  # frozen: normalise numpy numbers, lists


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of :func:`evaluate` and :func:`subgroups`, checked when created."""

    prevalence: float = DEFAULT_PREVALENCE
    specificities: tuple[float, ...] = DEFAULT_SPECIFICITIES
    sensitivities: tuple[float, ...] = DEFAULT_SENSITIVITIES
    confidence: float = 0.95
    n_resamples: int = 1000
    seed: int = 0
    calibration_bins: int = 10
    min_breasts: int = 30  # a subgroup below either minimum is "insufficient"
    min_positives: int = 5
    age_edges: tuple[float, ...] = DEFAULT_AGE_EDGES  # bands "<50", "50-59", "60-69", ">=70"

    def __post_init__(self) -> None:
        for name in ("specificities", "sensitivities", "age_edges"):
            value = getattr(self, name)
            ok = isinstance(value, list | tuple) and all(is_number(v) for v in value)
            _require(ok, name, "a sequence of numbers", value)
            _set(self, name, tuple(float(v) for v in value))
        for name in ("specificities", "sensitivities"):
            value = getattr(self, name)
            _require(all(0 <= v <= 1 for v in value), name, "values in [0, 1]", value)
        for name in ("prevalence", "confidence"):
            value = getattr(self, name)
            _require(is_number(value) and 0 < value < 1, name, "a number in (0, 1)", value)
            _set(self, name, float(value))
        integers = {"n_resamples": 1, "seed": 0, "calibration_bins": 1}
        for name, least in {**integers, "min_breasts": 0, "min_positives": 0}.items():
            value = getattr(self, name)
            _require(_is_int(value) and value >= least, name, f"an integer >= {least}", value)
            _set(self, name, int(value))
        _require(_edges_ok(self.age_edges), "age_edges", _EDGES, self.age_edges)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists), the inverse of :meth:`from_dict`."""
        return {f.name: _listed(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationConfig:
        """Settings from :meth:`to_dict` output; unknown keys are refused, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ClinicalInputError(
                f"unknown EvaluationConfig keys {unknown}; known: {sorted(known)}"
            )
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Interval:
    """A point value and the two ends of its interval (NaN where undefined)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "low": float(self.low), "high": float(self.high)}


_EDGES = "non-empty, finite and strictly increasing"


def _edges_ok(edges: Sequence[float]) -> bool:
    finite = len(edges) > 0 and all(is_number(e) and math.isfinite(e) for e in edges)
    return finite and all(a < b for a, b in itertools.pairwise(edges))


def age_bands(edges: Sequence[float] = DEFAULT_AGE_EDGES) -> list[str]:
    """Band names in order: "<50", "50-59", "60-69", ">=70" for edges (50, 60, 70)."""
    if not _edges_ok(edges):
        raise ClinicalInputError(f"age edges must be {_EDGES}, got {edges!r}")
    middle = [
        f"{lo:g}-{hi - 1:g}"
        if float(lo).is_integer() and float(hi).is_integer()
        else f"{lo:g}-<{hi:g}"
        for lo, hi in itertools.pairwise(edges)
    ]
    return [f"<{edges[0]:g}", *middle, f">={edges[-1]:g}"]


def age_band(age: float | None, edges: Sequence[float] = DEFAULT_AGE_EDGES) -> str:
    """The band of ``age`` (lower edge inclusive), "unknown" for None or NaN."""
    bands = age_bands(edges)
    if age is None or bool(pd.isna(age)):
        return "unknown"
    return bands[
        int(np.searchsorted(np.asarray(edges, dtype=np.float64), float(age), side="right"))
    ]


class _Statistics:
    """Every bootstrapped statistic of a set of rows, from counts per distinct score (no sort)."""

    def __init__(
        self, y: FloatArray, s: FloatArray, threshold: float | None, config: EvaluationConfig
    ) -> None:
        values, self.index = np.unique(s, return_inverse=True)
        self.y, self.s, self.k, self.config = y, s, values.size, config
        # the first distinct score >= threshold: tp[cut], fp[cut] are the flagged counts
        self.cut = (
            None if threshold is None else int(np.searchsorted(values, threshold, side="left"))
        )
        self.names = [
            "auc",
            "pf1",
            *(f"sensitivity_at_specificity:{v:g}" for v in config.specificities),
            *(f"specificity_at_sensitivity:{v:g}" for v in config.sensitivities),
            *(FIGURES if threshold is not None else ()),
        ]

    def __call__(self, rows: npt.NDArray[np.intp]) -> list[float]:
        y = self.y[rows]
        pos, neg = value_counts(self.index[rows], y, self.k)
        tp, fp = roc_counts(pos, neg)
        out = [auc_from_counts(pos, neg), probabilistic_f1(y, self.s[rows])]
        out += [best_rate(tp, fp, v, at_specificity=True) for v in self.config.specificities]
        out += [best_rate(tp, fp, v, at_specificity=False) for v in self.config.sensitivities]
        if self.cut is not None:
            figures = rates_from_counts(
                tp[self.cut], fp[self.cut], tp[0], fp[0], self.config.prevalence
            )
            out += [figures[name] for name in FIGURES]
        return out


def bootstrap_intervals(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    units: npt.ArrayLike,
    threshold: float | None,
    config: EvaluationConfig,
) -> dict[str, Interval]:
    """Percentile intervals of every statistic of :func:`evaluate`, from one set of resamples.

    Each resample draws whole units (e.g. patients) with replacement, seeded by
    ``config.seed``, and every statistic is computed on it; a statistic that is NaN on a
    resample (no positive drawn) is dropped there. Keys: "auc", "pf1",
    "sensitivity_at_specificity:<v>", "specificity_at_sensitivity:<v>" and, with a
    threshold, the :data:`FIGURES`. ``value`` is the statistic on all rows.
    """
    y, s = checked_pair(y_true, p)
    unit_array = np.asarray(units).ravel()
    if unit_array.shape != y.shape:
        raise ClinicalInputError(f"{unit_array.size} units for {y.size} rows")
    codes = pd.factorize(unit_array, sort=True)[0]
    if y.size == 0 or (codes < 0).any():
        raise ClinicalInputError("need at least one row and no missing unit")
    if threshold is not None:
        check_threshold(threshold)
    statistics, sampler = _Statistics(y, s, threshold, config), UnitSampler(codes)
    rng = np.random.default_rng(config.seed)
    draws = np.array([statistics(sampler.draw(rng)) for _ in range(config.n_resamples)])
    point = statistics(np.arange(y.size))
    alpha = (1.0 - config.confidence) / 2.0
    result: dict[str, Interval] = {}
    for j, name in enumerate(statistics.names):
        kept = draws[:, j][~np.isnan(draws[:, j])]
        low, high = np.quantile(kept, [alpha, 1.0 - alpha]) if kept.size else (NAN, NAN)
        result[name] = Interval(float(point[j]), float(low), float(high))
    return result


def _column(frame: pd.DataFrame, name: str) -> FloatArray:
    if name not in frame.columns:
        raise ClinicalInputError(f"column {name!r} missing")
    try:
        values: FloatArray = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ClinicalInputError(f"column {name!r} must be numeric") from None
    return values


def evaluate(
    breasts: pd.DataFrame,
    prob_col: str,
    threshold: float | None,
    config: EvaluationConfig,
    label_col: str = CANCER,
    unit_col: str = PATIENT_ID,
) -> dict[str, Any]:
    """JSON-ready clinical report of one row per breast.

    Keys: n_breasts, n_positive, n_patients, auc {value, delong, bootstrap}, pf1,
    operating_point (None without a threshold; else threshold, tp, fp, tn, fn and each of
    :data:`FIGURES`), sensitivity_at_specificity and specificity_at_sensitivity (by target),
    calibration, config. A figure is {value, bootstrap: [low, high]}, the bootstrap over
    whole ``unit_col`` units (patients), see :func:`bootstrap_intervals`.
    """
    y, p = checked_pair(_column(breasts, label_col), _column(breasts, prob_col))
    if unit_col not in breasts.columns:
        raise ClinicalInputError(f"column {unit_col!r} missing")
    report_calibration = calibration(y, p, config.calibration_bins)  # checks p in [0, 1]
    auc, _, low, high = delong_auc(y, p, config.confidence)
    boot = bootstrap_intervals(y, p, breasts[unit_col].to_numpy(), threshold, config)

    def entry(name: str) -> dict[str, Any]:
        return {"value": boot[name].value, "bootstrap": [boot[name].low, boot[name].high]}

    operating: dict[str, Any] | None = None
    if threshold is not None:
        point = operating_point(y, p, threshold, config.prevalence)
        operating = {"threshold": float(threshold)}
        operating |= {k: int(point[k]) for k in ("tp", "fp", "tn", "fn")}
        operating |= {name: entry(name) for name in FIGURES}
    return {
        "n_breasts": int(y.size),
        "n_positive": int(y.sum()),
        "n_patients": int(breasts[unit_col].nunique()),
        "auc": {"value": auc, "delong": [low, high], "bootstrap": entry("auc")["bootstrap"]},
        "pf1": entry("pf1"),
        "operating_point": operating,
        "sensitivity_at_specificity": {
            f"{v:g}": entry(f"sensitivity_at_specificity:{v:g}") for v in config.specificities
        },
        "specificity_at_sensitivity": {
            f"{v:g}": entry(f"specificity_at_sensitivity:{v:g}") for v in config.sensitivities
        },
        "calibration": report_calibration,
        "config": config.to_dict(),
    }


def _text(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # 49.0 (an int column with NaN) reads 49
    return str(value)


def _group_labels(
    series: pd.Series[Any], edges: Sequence[float] | None
) -> tuple[list[str], list[str]]:
    """Each row's group name, and the names in report order ("unknown" last)."""
    if edges is not None:
        labels = [age_band(v, edges) for v in series]
        order = [*age_bands(edges), "unknown"]
    else:
        labels = ["unknown" if pd.isna(v) else _text(v) for v in series]
        present = list(series.dropna().unique())
        try:
            present = sorted(present)
        except TypeError:
            present = sorted(present, key=str)
        order = [*(_text(v) for v in present), "unknown"]
    seen = set(labels)
    return labels, [name for name in dict.fromkeys(order) if name in seen]


def subgroups(
    breasts: pd.DataFrame,
    prob_col: str,
    threshold: float | None,
    columns: Sequence[str],
    config: EvaluationConfig,
    label_col: str = CANCER,
) -> list[dict[str, Any]]:
    """Point figures per value of each column present ("age" by :func:`age_band`).

    A subgroup under ``config.min_breasts`` breasts or ``config.min_positives`` positives is
    still computed but has ``sufficient`` False and a "text" saying why, so that no one reads
    it as evidence. Missing values form the group "unknown".
    """
    y, p = checked_pair(_column(breasts, label_col), _column(breasts, prob_col))
    if threshold is not None:
        check_threshold(threshold)
    rows: list[dict[str, Any]] = []
    for column in (c for c in columns if c in breasts.columns):
        labels, order = _group_labels(breasts[column], config.age_edges if column == AGE else None)
        label_array = np.asarray(labels, dtype=object)
        for value in order:
            mask = label_array == value
            yg, pg = y[mask], p[mask]
            n, n_pos = int(yg.size), int(yg.sum())
            auc, _, low, high = delong_auc(yg, pg, config.confidence)
            point = (
                operating_point(yg, pg, threshold, config.prevalence)
                if threshold is not None
                else {}
            )
            sufficient = n >= config.min_breasts and n_pos >= config.min_positives
            rows.append(
                {
                    "column": column,
                    "value": value,
                    "n_breasts": n,
                    "n_positive": n_pos,
                    "sufficient": sufficient,
                    "auc": auc,
                    **{k: point.get(k, NAN) for k in ("sensitivity", "specificity", "recall_rate")},
                    "auc_delong": [low, high],
                    "text": "" if sufficient else f"insufficient (n={n}, positives={n_pos})",
                }
            )
    return rows
