"""The figures of a training run, drawn by mammo.plots and logged under the run's ``plots/``.

Training curves of the monitored metrics; for a binary target the ROC and precision-recall
curves of every evaluated split (image level), else the validation confusion matrix; and a
grid of the first validation images with their labels.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import ray

from mammo import contract as c
from mammo import plots
from mammo import tags as t
from mammo.splits import Split
from mammo.training import Target, TrainConfig
from tasks.train_data import IMAGE, LABEL

__all__ = ["log_plots"]


def log_plots(
    work: Path,
    history: list[dict[str, float]],
    predictions: dict[str, pd.DataFrame],
    datasets: dict[str, ray.data.Dataset],
    target: Target,
    cfg: TrainConfig,
) -> None:
    """Draw the run's figures into ``work/plots/`` and log them into the active MLflow run."""
    figures = work / t.PLOTS_DIR
    figures.mkdir()
    monitored = [cfg.monitor, "pf1"] if target.is_binary else [cfg.monitor, "macro_f1"]
    paths = [plots.training_curves(history, figures / t.TRAINING_CURVES_PNG, monitored)]
    if target.is_binary:
        curves = {
            split: (frame[LABEL].to_numpy(), frame[c.PROBABILITY].to_numpy())
            for split, frame in predictions.items()
        }
        title = f"ROC, {cfg.target} (image level)"
        paths.append(plots.roc_curves(curves, figures / t.ROC_PNG, title))
        title = f"Precision-recall, {cfg.target}"
        paths.append(plots.pr_curves(curves, figures / t.PR_PNG, title))
    else:
        frame = predictions[Split.VAL]
        probs = frame[[f"{c.PROBABILITY}_{k}" for k in target.classes]].to_numpy()
        paths.append(
            plots.confusion_matrix_plot(
                frame[LABEL].to_numpy().astype(int),
                probs.argmax(axis=1),
                [str(k) for k in target.classes],
                figures / t.CONFUSION_VAL_PNG,
            )
        )
    sample = next(iter(datasets[Split.VAL].iter_batches(batch_size=64, batch_format="numpy")), None)
    if sample is not None:
        names = [f"{cfg.target}={_class_name(target, v)}" for v in sample[LABEL]]
        paths.append(plots.sample_grid(list(sample[IMAGE]), names, figures / t.SAMPLES_PNG))
    for path in paths:
        mlflow.log_artifact(str(path), t.PLOTS_DIR)


def _class_name(target: Target, value: float) -> str:
    return str(int(value)) if target.is_binary else str(target.classes[int(value)])
