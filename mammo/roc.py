"""Breast-level ROC statistics: DeLong AUC intervals, operating points and rates at targets.

Pure array functions behind ``mammo.clinical`` (which re-exports the public ones). Labels are
0/1, scores any real numbers; a breast is flagged where its score >= the threshold. The
count helpers work on positives and negatives per distinct score, so that a bootstrap
resample needs two ``bincount`` calls and no sort.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import numpy.typing as npt
from scipy.stats import norm, rankdata

FloatArray = npt.NDArray[np.float64]

DEFAULT_PREVALENCE = 0.0051  # 5.1 cancers per 1,000 screening exams (BCSC)
FIGURES = (
    "sensitivity",
    "specificity",
    "recall_rate",
    "ppv",
    "ppv_screening",
    "recall_rate_screening",
    "cancer_detection_per_1000",
)  # the rates of operating_point, in report order
_TIE = 1e-12  # a rate within this of its target meets it (k/n in floating point)
NAN = math.nan


class ClinicalInputError(ValueError):
    """Inputs of a clinical figure do not fit together, or a setting is out of range."""


def is_number(value: object) -> bool:
    """A real number, not a bool and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def checked_pair(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Labels and scores as flat float arrays; lengths must match, no NaN, labels 0 or 1."""
    try:
        y = np.asarray(y_true, dtype=np.float64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise ClinicalInputError(f"labels and scores must be numeric: {error}") from None
    if y.shape != s.shape:
        raise ClinicalInputError(f"{y.size} labels but {s.size} scores")
    if np.isnan(y).any() or np.isnan(s).any():
        raise ClinicalInputError("labels and scores must not contain NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = sorted(set(y[~np.isin(y, (0.0, 1.0))].tolist()))[:5]
        raise ClinicalInputError(f"labels must be 0 or 1, got {bad}")
    return y, s


def check_rate(name: str, value: float, open_interval: bool = False) -> None:
    """``value`` must lie in [0, 1], or in (0, 1) with ``open_interval``."""
    inside = is_number(value) and (0 < value < 1 if open_interval else 0 <= value <= 1)
    if not inside:
        allowed = "(0, 1)" if open_interval else "[0, 1]"
        raise ClinicalInputError(f"{name} must be in {allowed}, got {value!r}")


def _z(confidence: float) -> float:
    check_rate("confidence", confidence, open_interval=True)
    return float(norm.ppf(0.5 + confidence / 2.0))


def _placements(pos: FloatArray, neg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Sun & Xu (2014): DeLong's placement values from midranks, O(n log n).

    v10[i]: share of negatives below positive i; v01[j]: share of positives above negative
    j; ties count half.
    """
    ranks = rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[: pos.size] - rankdata(pos)) / neg.size
    v01 = 1.0 - (ranks[pos.size :] - rankdata(neg)) / pos.size
    return v10, v01


def _placements_brute(pos: FloatArray, neg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The same placement values by every positive-negative comparison, O(n_pos * n_neg)."""
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def _variance(v10: FloatArray, v01: FloatArray) -> float:
    if v10.size < 2 or v01.size < 2:
        return NAN  # a sample variance needs two of each class
    return float(v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size)


def _delong(
    y_true: npt.ArrayLike, p: npt.ArrayLike, confidence: float, brute: bool
) -> tuple[float, float, float, float]:
    y, s = checked_pair(y_true, p)
    z = _z(confidence)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return NAN, NAN, NAN, NAN
    v10, v01 = (_placements_brute if brute else _placements)(pos, neg)
    auc, variance = float(v10.mean()), _variance(v10, v01)
    half = z * math.sqrt(variance)
    return auc, variance, float(np.clip(auc - half, 0, 1)), float(np.clip(auc + half, 0, 1))


def delong_auc(
    y_true: npt.ArrayLike, p: npt.ArrayLike, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(auc, variance, ci_low, ci_high) by fast DeLong; CI = auc ± z·sd clipped to [0, 1].

    All NaN for one class; variance and CI NaN with fewer than two breasts of a class.
    """
    return _delong(y_true, p, confidence, brute=False)


def delong_auc_brute(
    y_true: npt.ArrayLike, p: npt.ArrayLike, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """:func:`delong_auc` by explicit comparisons: the reference the fast one is tested on."""
    return _delong(y_true, p, confidence, brute=True)


def paired_delong(
    y_true: npt.ArrayLike, p_a: npt.ArrayLike, p_b: npt.ArrayLike, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(auc_a - auc_b, its DeLong variance, ci_low, ci_high), both models on the same breasts.

    var_a + var_b - 2 cov is computed as the variance of the placement differences (the
    same number), so that a model compared with itself gives exactly 0.
    """
    y, a = checked_pair(y_true, p_a)
    _, b = checked_pair(y, p_b)
    z, pos = _z(confidence), y == 1
    if pos.all() or not pos.any():
        return NAN, NAN, NAN, NAN
    a10, a01 = _placements(a[pos], a[~pos])
    b10, b01 = _placements(b[pos], b[~pos])
    diff, variance = float(a10.mean() - b10.mean()), _variance(a10 - b10, a01 - b01)
    half = z * math.sqrt(variance)
    return diff, variance, float(np.clip(diff - half, -1, 1)), float(np.clip(diff + half, -1, 1))


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else NAN


def rates_from_counts(
    tp: float, fp: float, n_pos: float, n_neg: float, prevalence: float
) -> dict[str, float]:
    """The :data:`FIGURES` from counts: observed rates, and rates re-weighted by Bayes to a
    screening ``prevalence`` (training sets are enriched with cancers)."""
    sensitivity, specificity = _ratio(tp, n_pos), _ratio(n_neg - fp, n_neg)
    detected = sensitivity * prevalence  # per screened breast
    false_recalls = (1.0 - specificity) * (1.0 - prevalence)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "recall_rate": _ratio(tp + fp, n_pos + n_neg),
        "ppv": _ratio(tp, tp + fp),
        "ppv_screening": _ratio(detected, detected + false_recalls),
        "recall_rate_screening": detected + false_recalls,
        "cancer_detection_per_1000": 1000.0 * detected,
    }


def check_threshold(threshold: object) -> None:
    if not is_number(threshold):
        raise ClinicalInputError(f"threshold must be a number, got {threshold!r}")


def operating_point(
    y_true: npt.ArrayLike,
    p: npt.ArrayLike,
    threshold: float,
    prevalence: float = DEFAULT_PREVALENCE,
) -> dict[str, float]:
    """Counts tp, fp, tn, fn (ints) and the :data:`FIGURES` where ``p >= threshold``.

    ``recall_rate`` (share flagged) and ``ppv`` are as observed; ``ppv_screening``,
    ``recall_rate_screening`` and ``cancer_detection_per_1000`` re-weight sensitivity and
    specificity to ``prevalence``. Undefined figures (no positive, nothing flagged) are NaN.
    """
    y, s = checked_pair(y_true, p)
    check_threshold(threshold)
    check_rate("prevalence", prevalence, open_interval=True)
    flagged, positive = s >= threshold, y == 1
    tp, fp = int(np.sum(flagged & positive)), int(np.sum(flagged & ~positive))
    n_pos = int(positive.sum())
    n_neg = y.size - n_pos
    counts = {"threshold": float(threshold), "tp": tp, "fp": fp, "tn": n_neg - fp, "fn": n_pos - tp}
    return {**counts, **rates_from_counts(tp, fp, n_pos, n_neg, prevalence)}


def value_counts(
    index: npt.NDArray[np.intp], y: FloatArray, k: int
) -> tuple[FloatArray, FloatArray]:
    """Positives and negatives at each of k distinct scores, ``index`` coding each row's."""
    pos = np.bincount(index, weights=y, minlength=k).astype(np.float64)
    neg = np.bincount(index, minlength=k) - pos
    return pos, neg


def roc_counts(pos: FloatArray, neg: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(tp, fp) flagging the scores >= each distinct score (ascending), then flagging nobody.

    tp[0] and fp[0] (everyone flagged) are the numbers of positives and negatives.
    """
    return np.append(np.cumsum(pos[::-1])[::-1], 0.0), np.append(np.cumsum(neg[::-1])[::-1], 0.0)


def auc_from_counts(pos: FloatArray, neg: FloatArray) -> float:
    """Mann-Whitney AUC (ties half) from :func:`value_counts`; NaN for one class."""
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    return float(pos @ (np.cumsum(neg) - 0.5 * neg) / (n_pos * n_neg))


def best_rate(tp: FloatArray, fp: FloatArray, target: float, at_specificity: bool) -> float:
    """From :func:`roc_counts`: the highest sensitivity where specificity >= target, or
    (``at_specificity`` False) the highest specificity where sensitivity >= target."""
    n_pos, n_neg = float(tp[0]), float(fp[0])
    if n_pos == 0 or n_neg == 0:
        return NAN
    se, sp = tp / n_pos, (n_neg - fp) / n_neg
    if at_specificity:
        return float(se[sp >= target - _TIE].max())
    return float(sp[se >= target - _TIE].max())


def _at_target(y_true: npt.ArrayLike, p: npt.ArrayLike, target: float, spec: bool) -> float:
    y, s = checked_pair(y_true, p)
    check_rate("specificity" if spec else "sensitivity", target)
    values, index = np.unique(s, return_inverse=True)
    return best_rate(*roc_counts(*value_counts(index, y, values.size)), target, spec)


def sensitivity_at_specificity(
    y_true: npt.ArrayLike, p: npt.ArrayLike, specificity: float
) -> float:
    """Highest sensitivity over the thresholds (every distinct score, and flagging nobody)
    whose specificity is >= ``specificity``, on the empirical ROC; NaN for one class."""
    return _at_target(y_true, p, specificity, spec=True)


def specificity_at_sensitivity(
    y_true: npt.ArrayLike, p: npt.ArrayLike, sensitivity: float
) -> float:
    """Highest specificity over the thresholds whose sensitivity is >= ``sensitivity``."""
    return _at_target(y_true, p, sensitivity, spec=False)
