"""Challenger against champion on one set of held-out breasts, as a protocol asks.

Input: one row per breast with the label, the patient, the subgroup columns and one
probability column per model (``model_0`` the challenger, ``model_1`` the champion when
there is one). Output: each model's clinical evaluation (``mammo.clinical.evaluate``), the
paired differences of the primary metric and of the operating-point figures (each model at
its own threshold, locked on its validation set), and the subgroup table of both models side
by side. :func:`mammo.promotion.decide` turns this into a decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo import clinical
from mammo.contract import CANCER, PATIENT_ID
from mammo.metrics import probabilistic_f1, roc_auc
from mammo.promotion import BootstrapResult, Metric, paired_differences
from mammo.protocol import PromotionProtocol

CHALLENGER, CHAMPION = "model_0", "model_1"
PRIMARY: dict[str, Metric] = {"auc": roc_auc, "pf1": probabilistic_f1}


@dataclass(frozen=True)
class Comparison:
    evaluations: dict[str, dict[str, Any]]  # "challenger" and, with one, "champion"
    differences: dict[str, BootstrapResult] | None  # None for a first model
    subgroups: list[dict[str, Any]]  # one row per (column, value), both models' figures

    def to_dict(self) -> dict[str, Any]:
        return {
            "evaluations": self.evaluations,
            "differences": None
            if self.differences is None
            else {k: v.to_dict() for k, v in self.differences.items()},
            "subgroups": self.subgroups,
        }


def evaluation_config(protocol: PromotionProtocol) -> clinical.EvaluationConfig:
    """How figures are computed under ``protocol`` (its confidence, resamples, seed, sizes)."""
    return clinical.EvaluationConfig(
        prevalence=protocol.evaluation.prevalence,
        specificities=protocol.evaluation.specificities,
        sensitivities=protocol.evaluation.sensitivities,
        confidence=protocol.primary.confidence,
        n_resamples=protocol.primary.resamples,
        seed=protocol.primary.seed,
        min_breasts=protocol.subgroups.min_breasts,
        min_positives=protocol.subgroups.min_positive_breasts,
    )


def _at_threshold(figure: str, threshold: float | None, y: Any, p: Any) -> float:
    if threshold is None:
        return float("nan")
    return float(clinical.operating_point(y, p, threshold)[figure])


def compare(
    breasts: pd.DataFrame, thresholds: Sequence[float | None], protocol: PromotionProtocol
) -> Comparison:
    """Evaluate the challenger (and the champion, when ``thresholds`` has two entries)."""
    config = evaluation_config(protocol)
    columns = [CHALLENGER, CHAMPION][: len(thresholds)]
    names = ["challenger", "champion"][: len(thresholds)]
    evaluations = {
        name: clinical.evaluate(breasts, column, threshold, config)
        for name, column, threshold in zip(names, columns, thresholds, strict=True)
    }
    tables = [
        clinical.subgroups(breasts, column, threshold, protocol.subgroups.columns, config)
        for column, threshold in zip(columns, thresholds, strict=True)
    ]
    if len(thresholds) == 1:
        return Comparison(evaluations, None, [_side_by_side(row, None) for row in tables[0]])

    primary = PRIMARY[protocol.primary.metric]
    metrics: dict[str, tuple[Metric, Metric]] = {protocol.primary.metric: (primary, primary)}
    for figure in ("sensitivity", "specificity"):
        metrics[figure] = (
            partial(_at_threshold, figure, thresholds[0]),
            partial(_at_threshold, figure, thresholds[1]),
        )
    y: npt.NDArray[np.float64] = breasts[CANCER].to_numpy(dtype=np.float64)
    differences = paired_differences(
        y,
        breasts[CHAMPION].to_numpy(dtype=np.float64),
        breasts[CHALLENGER].to_numpy(dtype=np.float64),
        metrics,
        n_resamples=protocol.primary.resamples,
        seed=protocol.primary.seed,
        groups=breasts[PATIENT_ID].to_numpy(),
        confidence=protocol.primary.confidence,
    )
    champion_rows = {(r["column"], r["value"]): r for r in tables[1]}
    rows = [_side_by_side(r, champion_rows[(r["column"], r["value"])]) for r in tables[0]]
    return Comparison(evaluations, differences, rows)


FIGURES = ("auc", "sensitivity", "specificity", "recall_rate")


def _side_by_side(challenger: dict[str, Any], champion: dict[str, Any] | None) -> dict[str, Any]:
    row = {k: challenger[k] for k in ("column", "value", "n_breasts", "n_positive", "sufficient")}
    row["text"] = challenger["text"]
    row["challenger"] = {k: challenger[k] for k in FIGURES}
    row["champion"] = None if champion is None else {k: champion[k] for k in FIGURES}
    return row
