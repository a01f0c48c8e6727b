"""The known-signal oracle: the ceiling a model-quality benchmark reports against.

For every synthetic image, ``mammo synth`` records the statistic of an observer that knows
what and where the planted lesion is (``mammo/synth/lesion.py``, ``matched_filter``): the
image's inner product with the lesion's zero-mean template over its patch, divided by the
template's norm. On a positive it is taken at the planted lesions (whatever share of their
contrast reached the image: dense tissue dims them, an occult view hides them); on a negative
at lesions drawn from the same distribution at random places of the breast, never added.
The tissue around the template is the observer's noise, so dense breasts score worse.

Scores are aggregated per breast as a model's are (mean or max over its views) and the
breast-level ROC AUC of that score is the oracle's AUC. It is a reference, not a proven
bound: a model that learned the tissue's texture could whiten it and do better than a
matched filter, which ignores the texture's correlations.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mammo.contract import CANCER
from mammo.metrics import Aggregation, aggregate_breasts
from mammo.roc import delong_auc

ORACLE = "oracle"  # the column of synthetic_oracle.csv


@dataclass(frozen=True)
class OracleAuc:
    auc: float | None  # None without a breast of each class
    ci_low: float | None  # 95% DeLong interval
    ci_high: float | None
    breasts: int
    positive_breasts: int
    aggregation: str


def oracle_auc(scores: pd.DataFrame, how: Aggregation = "mean") -> OracleAuc:
    """The breast-level AUC of the oracle statistic in ``scores`` (patient_id, laterality,
    cancer, oracle per image), with its DeLong interval."""
    breasts = aggregate_breasts(scores, ORACLE, how)
    positives = int(breasts[CANCER].sum())
    if positives == 0 or positives == len(breasts):
        return OracleAuc(None, None, None, len(breasts), positives, how)
    auc, _, low, high = delong_auc(breasts[CANCER], breasts[ORACLE])
    return OracleAuc(
        auc=float(auc),
        ci_low=None if pd.isna(low) else float(low),
        ci_high=None if pd.isna(high) else float(high),
        breasts=len(breasts),
        positive_breasts=positives,
        aggregation=how,
    )
