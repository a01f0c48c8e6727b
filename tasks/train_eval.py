"""The evaluation of a trained model on its splits, logged into the active MLflow run.

Order: per-image probabilities on validation and holdout -> (binary target) the decision
threshold, chosen on validation by best F1 at breast level -> the target's report per split,
with sensitivity, specificity and recall rate at that threshold -> the clinical evaluation
per split and the data counts (``evaluation/``), which the model card is made from.
"""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import ray
import torch

from mammo import clinical
from mammo import contract as c
from mammo import tags as t
from mammo.metrics import aggregate_breasts, best_threshold_f1
from mammo.model_card import data_summary
from mammo.splits import Split
from mammo.training import Target, TrainConfig
from tasks.train_data import IMAGE, LABEL, METADATA, dataset_arrays

LOCKED_FIGURES = ("sensitivity", "specificity", "recall_rate")

__all__ = ["LOCKED_FIGURES", "choose_threshold", "log_evaluations", "predict", "split_metrics"]


def predict(
    model: torch.nn.Module, dataset: ray.data.Dataset, target: Target, vflip: bool = False
) -> pd.DataFrame:
    """Per-image probabilities of ``model`` on a materialized split, with its breast keys
    (``vflip``: with test-time flips, as the model was validated)."""
    from mammo.training import make_batch, predict_batches

    arrays = dataset_arrays(dataset)
    n = len(arrays.get(c.IMAGE_ID, []))
    chunks = [np.arange(i, min(i + 64, n)) for i in range(0, n, 64)]
    batches = (
        make_batch(
            arrays[IMAGE][idx],
            arrays[LABEL][idx],
            arrays[METADATA][idx] if METADATA in arrays else None,
        )
        for idx in chunks
    )
    logits = predict_batches(model, batches, torch.device("cpu"), vflip=vflip)
    frame = pd.DataFrame(
        {col: arrays[col] for col in (c.IMAGE_ID, c.PATIENT_ID, c.LATERALITY, c.SITE_ID, LABEL)}
    )
    probabilities = target.probabilities(logits) if n else np.zeros(0)
    if target.is_binary:
        frame[c.PROBABILITY] = probabilities
    else:
        for k, name in enumerate(target.classes):
            frame[f"{c.PROBABILITY}_{name}"] = probabilities[:, k]
    return frame


def choose_threshold(
    predictions: dict[str, pd.DataFrame], target: Target, cfg: TrainConfig
) -> float | None:
    """The decision threshold of a binary target: best F1 on the validation breasts."""
    if not target.is_binary:
        return None
    breasts = aggregate_breasts(
        predictions[Split.VAL], c.PROBABILITY, cfg.aggregation, label_col=LABEL
    )
    _, best = best_threshold_f1(breasts[LABEL].to_numpy(), breasts[c.PROBABILITY].to_numpy())
    return None if math.isnan(best) else float(best)


def split_metrics(
    predictions: dict[str, pd.DataFrame],
    target: Target,
    cfg: TrainConfig,
    threshold: float | None,
) -> dict[str, float]:
    """``{split}_{figure}`` for every finite figure of every split's report."""
    metrics: dict[str, float] = {}
    for split, frame_p in predictions.items():
        report = _report(target, frame_p, cfg, threshold)
        if split != Split.VAL:  # the threshold is chosen on validation, only applied elsewhere
            report = {k: v for k, v in report.items() if k not in ("best_f1", "best_threshold")}
        metrics.update({f"{split}_{k}": v for k, v in report.items() if math.isfinite(v)})
    return metrics


def _report(
    target: Target, frame: pd.DataFrame, cfg: TrainConfig, threshold: float | None
) -> dict[str, float]:
    """The target's report, and for a binary target the figures at the locked threshold."""
    renamed = frame.rename(columns={LABEL: target.column})
    if target.is_binary:
        probabilities = renamed[c.PROBABILITY].to_numpy()
    else:
        probabilities = renamed[[f"{c.PROBABILITY}_{k}" for k in target.classes]].to_numpy()
    report = target.report(renamed, probabilities, cfg.aggregation)
    if target.is_binary and threshold is not None:
        breasts = aggregate_breasts(frame, c.PROBABILITY, cfg.aggregation, label_col=LABEL)
        point = clinical.operating_point(breasts[LABEL], breasts[c.PROBABILITY], threshold)
        report.update({k: point[k] for k in LOCKED_FIGURES})
    return {k: float(v) for k, v in report.items()}


def log_evaluations(
    predictions: dict[str, pd.DataFrame],
    frame: pd.DataFrame,
    target: Target,
    cfg: TrainConfig,
    threshold: float | None,
    data: str,
    data_hash: str,
) -> None:
    """The clinical evaluation per split (validation: where the threshold was locked) and the
    data counts, as run artifacts the model card is made from."""
    summary = data_summary(frame, data, data_hash)
    mlflow.log_dict(summary, t.EVALUATION_DATA_FILE)
    if not target.is_binary:
        return
    for split, frame_p in predictions.items():
        breasts = aggregate_breasts(frame_p, c.PROBABILITY, cfg.aggregation, label_col=LABEL)
        if breasts.empty:
            continue
        evaluation = clinical.evaluate(
            breasts, c.PROBABILITY, threshold, clinical.EvaluationConfig(), label_col=LABEL
        )
        mlflow.log_dict(evaluation, t.evaluation_file(split))
