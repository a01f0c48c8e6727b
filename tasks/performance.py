"""The champion's CUSUMs in a drift report: tonight's labelled new breasts added to the
outcomes of its version (OUT/monitor/outcomes/), charted against its holdout operating
point (mammo/performance.py). tasks/monitor.py calls it with the scores it computed."""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from mammo import contract as c
from mammo import tags as t
from mammo.cusum import Chart
from mammo.drift import DriftSettings, Finding
from mammo.metrics import Aggregation, aggregate_breasts
from mammo.performance import new_outcomes, performance_charts
from tasks.storage import open_store


@dataclass(frozen=True)
class Scored:
    """The new images with the model's PROBABILITY, and how it calls a breast positive."""

    rows: pd.DataFrame
    threshold: float | None
    aggregation: Aggregation | None


def performance(
    data: str,
    scored: Scored,
    client: MlflowClient,
    version: ModelVersion,
    drift: DriftSettings,
    night: str,
) -> tuple[list[Chart], list[Finding], str]:
    """Tonight's labelled new breasts added to the version's outcomes; its CUSUM charts."""
    if scored.threshold is None:
        return [], [], ""
    point = holdout_operating_point(client, version.run_id or "")
    if point is None:
        return [], [], f"version {version.version} has no holdout operating point: no CUSUM"
    breasts = aggregate_breasts(scored.rows, c.PROBABILITY, scored.aggregation or "mean")
    store, path = open_store(data), f"{c.OUTCOMES_DIR}/{version.name}-v{version.version}.parquet"
    known = pd.read_parquet(io.BytesIO(store.read_bytes(path))) if store.exists(path) else None
    outcomes = new_outcomes(known, breasts, night)
    if outcomes.empty:
        return [], [], "no labelled breast among the new images yet: no CUSUM"
    buffer = io.BytesIO()
    outcomes.to_parquet(buffer, index=False)
    store.write_bytes(path, buffer.getvalue())
    charts, findings = performance_charts(outcomes, scored.threshold, point, drift)
    return charts, findings, ""


def holdout_operating_point(client: MlflowClient, run_id: str) -> dict[str, int] | None:
    """tp, fn, fp, tn of the run's holdout breasts at its locked threshold, when logged."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, t.evaluation_file("holdout"), tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return None
        point = json.loads(Path(local).read_text()).get("operating_point") or {}
    return point if {"tp", "fn", "fp", "tn"} <= set(point) else None
