"""Calibration of breast-level probabilities: Brier score, ECE and logistic recalibration.

A screening threshold and a re-weighted PPV mean something only if the probabilities do, so
``mammo.clinical.evaluate`` (which re-exports :func:`calibration`) reports how far they are
from the observed cancer rates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import expit, logit

from mammo.roc import ClinicalInputError, FloatArray, checked_pair

_CLIP = 1e-6  # p is clipped to [_CLIP, 1 - _CLIP] before the logit
_MAX_ITERATIONS = 100
_TOLERANCE = 1e-10  # Newton stops when no coefficient moves by more
_DIVERGED = 1e6  # coefficients beyond this mean separation: the fit does not exist


def _log_likelihood(design: FloatArray, y: FloatArray, beta: FloatArray) -> float:
    eta = design @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def recalibration(y: FloatArray, p: FloatArray) -> tuple[float, float]:
    """(intercept, slope) of logit P(y=1) = intercept + slope * logit(p), unpenalised.

    Fitted by Newton's method with step halving; (NaN, NaN) when the maximum likelihood does
    not exist: one class, constant p, or (quasi-)separation, seen as a singular Hessian,
    diverging coefficients or no convergence within the iteration cap.
    """
    nan = (math.nan, math.nan)
    if y.size == 0 or y.min() == y.max():
        return nan
    x = logit(np.clip(p, _CLIP, 1.0 - _CLIP))
    design = np.column_stack([np.ones_like(x), x])
    beta = np.array([0.0, 1.0])  # start from "already calibrated"
    current = _log_likelihood(design, y, beta)
    for _ in range(_MAX_ITERATIONS):
        mu = expit(design @ beta)
        hessian = design.T @ (design * (mu * (1.0 - mu))[:, None])
        try:
            step = np.linalg.solve(hessian, design.T @ (y - mu))
        except np.linalg.LinAlgError:
            return nan
        if not np.isfinite(step).all():
            return nan
        if np.abs(step).max() < _TOLERANCE:
            return float(beta[0]), float(beta[1])
        shrink = 1.0  # halve the step while it lowers the likelihood (Newton may overshoot)
        while (new := _log_likelihood(design, y, beta + shrink * step)) < current and shrink > 1e-6:
            shrink /= 2.0
        beta, current = beta + shrink * step, new
        if np.abs(beta).max() > _DIVERGED:
            return nan
    return nan


def calibration(y_true: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> dict[str, Any]:
    """Brier score, ECE, recalibration slope and intercept, and a reliability table.

    ECE uses ``bins`` equal-width bins on [0, 1] (bin b holds lower <= p < upper, the last
    also p = 1): the sum over bins of n_b / n * |mean p - observed rate|. ``bins`` lists the
    non-empty bins as {"lower", "upper", "n", "mean_predicted", "observed"}. A slope below 1
    means over-confident probabilities; an intercept below 0, too high ones.
    """
    y, q = checked_pair(y_true, p)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ClinicalInputError(f"bins must be an integer >= 1, got {bins!r}")
    if q.size == 0:
        raise ClinicalInputError("no breasts to calibrate")
    if ((q < 0.0) | (q > 1.0)).any():
        raise ClinicalInputError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, q, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=q, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    table: list[dict[str, Any]] = []
    ece = 0.0
    for b in np.flatnonzero(counts):
        mean_predicted, observed = sum_p[b] / counts[b], sum_y[b] / counts[b]
        ece += counts[b] / q.size * abs(mean_predicted - observed)
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "n": int(counts[b]),
                "mean_predicted": float(mean_predicted),
                "observed": float(observed),
            }
        )
    intercept, slope = recalibration(y, q)
    return {
        "brier": float(np.mean((q - y) ** 2)),
        "ece": float(ece),
        "slope": slope,
        "intercept": intercept,
        "bins": table,
    }
