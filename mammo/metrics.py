"""Competition metrics, computed per breast (``prediction_id`` = patient_id + laterality).

The RSNA metric is the probabilistic F1 (pF1): with probabilities p clipped to [0, 1] and
labels y in {0, 1},
    precision = sum(p * y) / sum(p),   recall = sum(p * y) / sum(y),
    pF1 = 2 * precision * recall / (precision + recall).
Image probabilities are first aggregated per breast (mean or max over its views). Teams then
also reported the F1 after binarizing at the threshold that maximized it on validation, and
the breast-level ROC AUC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.stats import rankdata

from mammo import contract
from mammo.contract import CANCER, LATERALITY, PATIENT_ID, PREDICTION_ID, SITE_ID

Aggregation = Literal["mean", "max"]
AGGREGATIONS: tuple[Aggregation, ...] = ("mean", "max")


class MetricInputError(ValueError):
    """Labels and predictions do not fit together (lengths, shapes, NaN, unknown columns)."""


def _pair(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], ...]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    q = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != q.shape:
        raise MetricInputError(f"{y.size} labels but {q.size} predictions")
    if np.isnan(y).any() or np.isnan(q).any():
        raise MetricInputError("labels and predictions must not contain NaN")
    return y, q


def probabilistic_f1(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """The competition pF1 (formula in the module docstring); p is clipped to [0, 1].

    Returns 0.0, never NaN, when there is no positive label, when sum(p) is 0, or when no
    probability lands on a positive.
    """
    y, q = _pair(y_true, p)
    q = np.clip(q, 0.0, 1.0)
    true_positive = float(np.sum(q * y))
    if y.sum() == 0 or q.sum() == 0 or true_positive == 0:
        return 0.0
    precision = true_positive / float(q.sum())
    recall = true_positive / float(y.sum())
    return 2.0 * precision * recall / (precision + recall)


def best_threshold_f1(y_true: npt.ArrayLike, p: npt.ArrayLike) -> tuple[float, float]:
    """Best F1 over thresholds, and the threshold: predict positive where ``p >= threshold``.

    Every distinct value of p is a candidate; with ties the highest threshold wins. Without
    a positive label F1 is 0 at every threshold and the threshold is NaN.
    """
    y, q = _pair(y_true, p)
    n_pos = float(y.sum())
    if n_pos == 0:
        return 0.0, float("nan")
    order = np.argsort(-q, kind="stable")
    q_sorted, y_sorted = q[order], y[order]
    true_pos = np.cumsum(y_sorted)  # positives among the k highest predictions
    predicted = np.arange(1, len(q) + 1, dtype=np.float64)
    # a threshold t = q_sorted[k] selects everything up to the last element equal to it
    last_of_value = np.r_[q_sorted[1:] != q_sorted[:-1], True]
    f1 = 2.0 * true_pos[last_of_value] / (predicted[last_of_value] + n_pos)
    best = int(np.argmax(f1))
    return float(f1[best]), float(q_sorted[last_of_value][best])


def roc_auc(y_true: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN for one class."""
    y, q = _pair(y_true, p)
    positive = y > 0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(q)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def aggregate_breasts(
    df: pd.DataFrame,
    prob_col: str,
    how: Aggregation,
    label_col: str = CANCER,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per breast: prediction_id, patient_id, laterality, the label (max over the
    breast's images), site_id and the ``keep`` columns when present (their first value:
    they are per patient or per breast), and ``prob_col`` aggregated with ``how``."""
    if how not in AGGREGATIONS:
        raise MetricInputError(f"aggregation must be one of {AGGREGATIONS}, got {how!r}")
    missing = [c for c in (PATIENT_ID, LATERALITY, prob_col) if c not in df.columns]
    if missing:
        raise MetricInputError(f"columns missing: {missing}")
    agg: dict[str, str] = {prob_col: how}
    if label_col in df.columns:
        agg[label_col] = "max"
    for column in (SITE_ID, *keep):
        if column in df.columns and column not in agg:
            agg[column] = "first"
    breasts = df.groupby([PATIENT_ID, LATERALITY], sort=True).agg(agg).reset_index()
    keys = zip(breasts[PATIENT_ID], breasts[LATERALITY], strict=True)
    breasts.insert(0, PREDICTION_ID, [contract.prediction_id(p, side) for p, side in keys])
    return breasts


def binary_report(
    df: pd.DataFrame,
    aggregation: Aggregation,
    site_col: str = SITE_ID,
    *,
    prob_col: str,
    label_col: str = CANCER,
) -> dict[str, float]:
    """Breast-level report from image-level predictions.

    Keys: ``pf1`` (with ``aggregation``), ``pf1_mean``, ``pf1_max``, ``best_f1`` and
    ``best_threshold`` (with ``aggregation``), ``auc`` (breast level), ``auc_image`` (image
    level), ``auc_site_<id>`` per site, ``n_breasts``, ``n_positive_breasts``.
    """
    report: dict[str, float] = {}
    by_how = {how: aggregate_breasts(df, prob_col, how, label_col) for how in AGGREGATIONS}
    for how, breasts in by_how.items():
        report[f"pf1_{how}"] = probabilistic_f1(breasts[label_col], breasts[prob_col])
    breasts = by_how[aggregation]
    y, p = breasts[label_col].to_numpy(), breasts[prob_col].to_numpy()
    report["pf1"] = report[f"pf1_{aggregation}"]
    report["best_f1"], report["best_threshold"] = best_threshold_f1(y, p)
    report["auc"] = roc_auc(y, p)
    report["auc_image"] = roc_auc(df[label_col], df[prob_col])
    if site_col in breasts.columns:
        for site, rows in breasts.groupby(site_col, sort=True):
            report[f"auc_site_{site}"] = roc_auc(rows[label_col], rows[prob_col])
    report["n_breasts"] = float(len(breasts))
    report["n_positive_breasts"] = float((breasts[label_col] > 0).sum())
    return report


def multiclass_report(
    y_true: npt.ArrayLike, probs: npt.ArrayLike, class_names: Sequence[str]
) -> dict[str, float]:
    """Image-level report for a K-class target; ``y_true`` holds class indices 0..K-1.

    Keys: ``accuracy`` (argmax), ``macro_f1`` (mean F1 over the classes that occur in the
    labels or the predictions), ``auc_<class>`` one-vs-rest (NaN when the class is absent
    or alone), ``auc`` the mean of the defined per-class AUCs (NaN if none).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    q = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if q.ndim != 2 or q.shape != (y.size, k):
        raise MetricInputError(f"probs must be ({y.size}, {k}), got {q.shape}")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise MetricInputError(f"class indices must be in [0, {k})")
    predicted = q.argmax(axis=1)
    report: dict[str, float] = {"accuracy": float(np.mean(predicted == y)) if y.size else 0.0}
    f1s: list[float] = []
    aucs: list[float] = []
    for index, name in enumerate(class_names):
        tp = int(np.sum((predicted == index) & (y == index)))
        fp = int(np.sum((predicted == index) & (y != index)))
        fn = int(np.sum((predicted != index) & (y == index)))
        if tp + fp + fn:
            f1s.append(2.0 * tp / (2.0 * tp + fp + fn))
        report[f"auc_{name}"] = auc = roc_auc(y == index, q[:, index])
        if not np.isnan(auc):
            aucs.append(auc)
    report["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    report["auc"] = float(np.mean(aucs)) if aucs else float("nan")
    return report
