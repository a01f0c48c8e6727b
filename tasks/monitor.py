"""Drift as a pipeline step: the images that arrived since the champion was trained, against
the profile of its training data recorded with it (mammo.drift, mammo.drift_report).

Each finding is a Prefect event ``mammo.drift.<kind>`` (resource: the dataset, or the model
version for a score or performance finding), the report a markdown artifact and two files
under OUT/monitor/drift/. The labelled new breasts the model scored are kept under
OUT/monitor/outcomes/ for its CUSUM charts. A report warns; it never stops the night.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext
from prefect.events import emit_event

from mammo import contract as c
from mammo import tags as t
from mammo.cusum import Chart
from mammo.drift import (
    CATEGORICAL,
    DriftSettings,
    FindingKind,
    compare,
    compare_scores,
)
from mammo.drift_plots import cusum_plot, score_histograms
from mammo.drift_report import DriftReport, unresolved_critical
from mammo.metrics import AGGREGATIONS, Aggregation
from tasks import tracking
from tasks.logs import run_logger
from tasks.performance import Scored, performance
from tasks.scoring import load_bundle, read_manifest, score_rows
from tasks.settings import Settings
from tasks.storage import join_uri, open_store

EVENT_PREFIX = "mammo.drift."


@task(name="drift-report")
def drift_report(data: str, monitor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compare ``data``'s new images with the champion's reference; write and publish the
    report; return it (as JSON) with where it was written."""
    logger = run_logger()
    settings = Settings.from_env()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report = build_report(data, DriftSettings(**(monitor or {})), settings, stamp)
    out = open_store(data)
    figures = {f"{stamp}-{name}.png": png for name, png in _figures(report).items()}
    for name, png in figures.items():
        out.write_bytes(f"{c.DRIFT_REPORTS_DIR}/{name}", png)
    report = replace(report, figures=tuple(figures))
    document = report.to_dict()
    out.write_bytes(f"{c.DRIFT_REPORTS_DIR}/{stamp}.json", json.dumps(document, indent=2).encode())
    out.write_bytes(f"{c.DRIFT_REPORTS_DIR}/{stamp}.md", report.markdown().encode())
    where = join_uri(out.uri, f"{c.DRIFT_REPORTS_DIR}/{stamp}.md")
    for note in report.notes:
        logger.info("Drift: %s", note)
    for finding in report.findings:
        logger.warning("Drift %s: %s", finding.severity.value, finding.detail)
    logger.info("Drift report %s: %s", where, report.summary())
    _publish(report, join_uri(out.uri, c.DRIFT_REPORTS_DIR) + "/")
    return {**document, "report": where}


def _figures(report: DriftReport) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by name: scores per site, the CUSUMs."""
    against = f"{report.model} v{report.version}"
    figures: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if report.scores:
            title = f"{against}: scores of its reference and tonight's images"
            path = score_histograms(report.scores, Path(tmp) / "scores.png", title)
            figures["scores"] = path.read_bytes()
        if report.charts:
            title = f"{against}: misses and false recalls at its threshold"
            figures["cusum"] = cusum_plot(
                report.charts, Path(tmp) / "cusum.png", title
            ).read_bytes()
    return figures


def latest_report(data: str) -> dict[str, Any] | None:
    """The newest drift report under ``data`` (as JSON), or None."""
    store = open_store(data)
    names = sorted(
        f.relpath for f in store.list_files(c.DRIFT_REPORTS_DIR) if f.relpath.endswith(".json")
    )
    if not names:
        return None
    report: dict[str, Any] = json.loads(store.read_bytes(names[-1]))
    return report


def resolutions(data: str) -> dict[str, Any]:
    store = open_store(data)
    if not store.exists(c.DRIFT_RESOLVED_FILE):
        return {}
    resolved: dict[str, Any] = json.loads(store.read_bytes(c.DRIFT_RESOLVED_FILE))
    return resolved


def unresolved_drift(data: str) -> list[str]:
    """The critical findings of the newest report under ``data`` nobody resolved."""
    report = latest_report(data)
    return unresolved_critical(report, resolutions(data)) if report else []


def resolve_finding(data: str, key: str, reason: str) -> dict[str, Any]:
    """Record that finding ``key`` of the newest report is understood (``reason``), so that
    a protocol blocking on critical drift no longer counts it."""
    report = latest_report(data)
    keys = sorted(f["key"] for f in (report or {}).get("findings", []))
    if key not in keys:
        raise DriftError(
            f"{key!r} is not a finding of the latest drift report of {data}; "
            f"its findings: {keys or 'none'}"
        )
    if not reason.strip():
        raise DriftError("say why the finding is resolved: --reason TEXT")
    resolution = {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    resolved = {**resolutions(data), key: resolution}
    open_store(data).write_bytes(c.DRIFT_RESOLVED_FILE, json.dumps(resolved, indent=2).encode())
    return resolution


class DriftError(ValueError):
    """A drift resolution that cannot be recorded."""


def build_report(
    data: str, drift: DriftSettings, settings: Settings, night: str = ""
) -> DriftReport:
    """The report of ``data`` against the champion; ``night`` stamps the labelled breasts
    charted for the first time (mammo/performance.py)."""
    client, name = tracking.client(settings), settings.model_name
    manifest = read_manifest(data)
    version, notes = _reference_version(client, name)
    if version is None:
        notes.append("no registered model yet: nothing to compare with")
        return DriftReport(data, "", "", 0, len(manifest), notes=tuple(notes))
    reference = _reference(client, version.run_id or "")
    if reference is None:
        notes.append(
            f"version {version.version} was trained without a drift reference "
            f"({t.DRIFT_REFERENCE}); the next one trained records it"
        )
        return DriftReport(data, name, str(version.version), 0, len(manifest), notes=tuple(notes))
    current = manifest[~manifest[c.IMAGE_ID].isin(reference[c.IMAGE_ID])].reset_index(drop=True)
    findings = compare(reference, current, drift)
    charts: list[Chart] = []
    scores: dict[str, tuple[list[float], list[float]]] = {}
    if current.empty:
        notes.append(f"no image arrived since version {version.version} was trained")
    elif reference[c.PROBABILITY].notna().any():
        scored = _scores(data, current, name, version, settings)
        if scored is not None:
            # its scores of the new images against its own on its validation and holdout
            findings += compare_scores(
                reference, scored.rows, scored.threshold, drift, scored.aggregation
            )
            scores = _site_scores(reference, scored.rows)
            charts, found, note = performance(data, scored, client, version, drift, night)
            findings += found
            notes += [note] if note else []
    return DriftReport(
        data, name, str(version.version), len(reference), len(current), tuple(findings),
        tuple(notes), tuple(charts), scores=scores,
    )  # fmt: skip


def known_values(settings: Settings) -> dict[str, list[Any]] | None:
    """The values of each CATEGORICAL column in the champion's reference (the latest
    version's before a promotion), for the warning-level expectations of the decoded-set
    gate; None when there is no reference (or the registry cannot be read: logged)."""
    try:
        client = tracking.client(settings)
        version, _ = _reference_version(client, settings.model_name)
        reference = _reference(client, version.run_id or "") if version is not None else None
    except Exception as exc:  # noqa: BLE001 - the expectations are a warning, never a stop
        run_logger().warning("no reference values for the new-value expectations: %s", exc)
        return None
    if reference is None:
        return None
    return {
        column: sorted(reference[column].dropna().unique().tolist())
        for column in CATEGORICAL
        if column in reference
    }


def _reference_version(client: MlflowClient, name: str) -> tuple[ModelVersion | None, list[str]]:
    """The champion; before the first promotion, the latest version (said so in the notes)."""
    champion = tracking.alias_version(client, name, tracking.CHAMPION)
    if champion is not None:
        return champion, []
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        return None, []
    latest = max(versions, key=lambda v: int(v.version))
    return latest, [f"{name} has no @{tracking.CHAMPION} yet: compared with its latest version"]


def _reference(client: MlflowClient, run_id: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, t.DRIFT_REFERENCE, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return None
        return pd.read_parquet(io.BytesIO(Path(local).read_bytes()))


def _scores(
    data: str, current: pd.DataFrame, name: str, version: ModelVersion, settings: Settings
) -> Scored | None:
    """The model's scores of the new images (None unless its target is cancer)."""
    uri = f"models:/{name}/{version.version}"
    bundle = load_bundle(uri, settings.mlflow_tracking_uri)
    if bundle.config.target != c.CANCER:
        return None
    scored = score_rows(data, current, [uri], settings).rename(columns={"model_0": c.PROBABILITY})
    how = bundle.config.aggregation
    aggregation: Aggregation | None = how if how in AGGREGATIONS else None
    return Scored(scored, bundle.config.threshold, aggregation)


def _site_scores(
    reference: pd.DataFrame, current: pd.DataFrame
) -> dict[str, tuple[list[float], list[float]]]:
    """Per site: the model's scores of its own validation and holdout images, and tonight's."""
    groups: dict[str, tuple[list[float], list[float]]] = {}
    scored = reference.dropna(subset=[c.PROBABILITY])
    for site, part in current.groupby(c.SITE_ID, sort=True):
        mine = scored.loc[scored[c.SITE_ID] == site, c.PROBABILITY]
        groups[f"{c.SITE_ID}={site}"] = (mine.tolist(), part[c.PROBABILITY].tolist())
    return groups


def dataset_resource(data: str) -> dict[str, str]:
    digest = hashlib.sha256(data.encode()).hexdigest()[:16]
    return {"prefect.resource.id": f"mammo.dataset.{digest}", "prefect.resource.name": data}


def model_resource(name: str, version: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"mammo.model.{name}.v{version}",
        "prefect.resource.name": f"{name} v{version}",
    }


def _publish(report: DriftReport, figure_base: str = "") -> None:
    """One event per finding, and the report as a markdown artifact (inside a Prefect run)
    with its figures linked under ``figure_base``."""
    dataset = dataset_resource(report.data)
    model = model_resource(report.model, report.version) if report.version else None
    for finding in report.findings:
        on_model = finding.kind in (FindingKind.SCORE_SHIFT, FindingKind.PERFORMANCE_SHIFT)
        if on_model and model is not None:
            resource, related = model, [{**dataset, "prefect.resource.role": "dataset"}]
        else:
            resource = dataset
            related = [{**model, "prefect.resource.role": "reference-model"}] if model else []
        emit_event(
            event=f"{EVENT_PREFIX}{finding.kind.value}",
            resource=resource,
            related=related,
            payload=finding.to_dict(),
        )
    if TaskRunContext.get() is not None:
        create_markdown_artifact(
            key="drift-report",
            markdown=report.markdown(figure_base),
            description=report.summary(),
        )
