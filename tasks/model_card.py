"""Model cards and decisions where people look: MLflow, OUT, and the Prefect UI.

A card is written when a version is registered (validation figures and the model's own
holdout, "not decided yet") and rewritten when it is judged for promotion (the shared
holdout, the subgroup table, the decision). Each goes to the run's artifacts
(``model_card/``) and to ``OUT/registry/<model>/v<N>/`` with the decision document; the
version's ``mammo.model_card`` tag says where.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext

from mammo import contract as c
from mammo import plots
from mammo import tags as t
from mammo.comparison import Comparison
from mammo.model_card import CALIBRATION_PNG, CardInputs, render
from mammo.splits import Split
from tasks.storage import join_uri, open_store


def run_json(client: MlflowClient, run_id: str, path: str) -> Any:
    """A JSON artifact of a run, or None when the run has none at ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            return None
        return json.loads(Path(local).read_text())


def is_synthetic(data: str) -> bool:
    """Whether the RAW that ``data`` was ingested from was written by ``mammo synth``."""
    try:
        raw = json.loads(open_store(data).read_bytes(c.INGEST_SUMMARY_FILE))["raw"]
        return open_store(raw).exists(c.SYNTHETIC_MARKER)
    except (FileNotFoundError, KeyError, ValueError):
        return False


def _configs(params: dict[str, str]) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {"training": {}, "preprocessing": {}, "split": {}}
    for key, value in sorted(params.items()):
        prefix, _, rest = key.partition(".")
        group = {"train": "training", "preprocess": "preprocessing", "split": "split"}.get(prefix)
        if group:
            groups[group][rest] = value
    return groups


def publish_card(
    client: MlflowClient,
    name: str,
    version: ModelVersion,
    data: str,
    decision: dict[str, Any] | None,
    comparison: Comparison | None,
    breasts: pd.DataFrame | None,
    threshold: float | None,
    aggregation: str,
) -> dict[str, str]:
    """Render the card of ``version`` and store it (and the decision) in MLflow and OUT."""
    run_id = str(version.run_id)
    run = client.get_run(run_id)
    validation = run_json(client, run_id, t.evaluation_file(Split.VAL))
    if comparison is not None:
        holdout = comparison.evaluations["challenger"]
        subgroups = comparison.subgroups
    else:
        holdout, subgroups = run_json(client, run_id, t.evaluation_file(Split.HOLDOUT)), []
    curves = {
        label: evaluation["calibration"]["bins"]
        for label, evaluation in (("validation", validation), ("holdout", holdout))
        if evaluation
    }
    png = None
    with tempfile.TemporaryDirectory() as tmp:
        if curves:
            path = plots.reliability_plot(curves, Path(tmp) / CALIBRATION_PNG, "Calibration")
            png = path.read_bytes()
    summary = run_json(client, run_id, t.EVALUATION_DATA_FILE) or {
        "location": data,
        "hash": version.tags.get(t.DATA_HASH, ""),
    }
    notes = []
    if breasts is not None and decision is not None:
        notes.append(
            f"The shared holdout of this decision: {len(breasts)} breasts of patients that no "
            "compared model trained on."
        )
    card = CardInputs(
        model=name,
        version=str(version.version),
        run_id=run_id,
        data=summary,
        configs=_configs(dict(run.data.params)),
        threshold=threshold,
        aggregation=aggregation,
        evaluations={"validation": validation, "holdout": holdout},
        subgroups=subgroups,
        decision=decision,
        synthetic=is_synthetic(data),
        calibration_png=png,
        notes=notes,
    )
    markdown, page = render(card)
    files = {c.MODEL_CARD_FILE: markdown.encode(), c.MODEL_CARD_HTML_FILE: page.encode()}
    if png is not None:
        files[CALIBRATION_PNG] = png
    if decision is not None:
        files[c.DECISION_FILE] = json.dumps(decision, indent=2, default=str).encode()
    store, folder = open_store(data), f"{c.REGISTRY_DIR}/{name}/v{version.version}"
    with tempfile.TemporaryDirectory() as tmp:
        for filename, content in files.items():
            store.write_bytes(f"{folder}/{filename}", content)
            (Path(tmp) / filename).write_bytes(content)
            if filename != c.DECISION_FILE:
                client.log_artifact(run_id, str(Path(tmp) / filename), t.CARD_DIR)
    where = {
        "model_card": join_uri(data, f"{folder}/{c.MODEL_CARD_FILE}"),
        "model_card_html": join_uri(data, f"{folder}/{c.MODEL_CARD_HTML_FILE}"),
    }
    if decision is not None:
        where["decision_file"] = join_uri(data, f"{folder}/{c.DECISION_FILE}")
    client.set_model_version_tag(name, version.version, t.MODEL_CARD, where["model_card"])
    return where


def publish_markdown(name: str, document: dict[str, Any]) -> None:
    """The decision as a Prefect artifact: outcome, reason, the rules, links to the card."""
    if TaskRunContext.get() is None:
        return
    rules = "\n".join(
        f"| {r['name']} | {'pass' if r['passed'] else 'FAIL'} | {r['observed']} | {r['required']} |"
        for r in document["rules"]
    )
    card = document.get("model_card", {})
    protocol = document["protocol"]
    markdown = (
        f"# Promotion of {name} v{document['challenger']['version']}: {document['outcome']}\n\n"
        f"{document['reason']}\n\n"
        f"Protocol {protocol['name']} v{protocol['version']} (hash `{protocol['hash'][:16]}`); "
        f"holdout {document['holdout']['n_breasts']} breasts, "
        f"{document['holdout']['n_positive']} positive.\n\n"
        f"| rule | result | observed | required |\n|---|---|---|---|\n{rules}\n\n"
        f"Model card: {card.get('model_card', 'n/a')} (HTML: {card.get('model_card_html', 'n/a')})"
        f"; decision: {card.get('decision_file', 'n/a')}\n"
    )
    create_markdown_artifact(
        key="model-promotion", markdown=markdown, description=f"{name}: {document['outcome']}"
    )


def publish_note(name: str, outcome: str, reason: str) -> None:
    """A promotion that decided nothing new (already champion, rolled back) as a Prefect
    artifact of the same key, so every promote run shows its outcome in the UI."""
    if TaskRunContext.get() is None:
        return
    create_markdown_artifact(
        key="model-promotion",
        markdown=f"# Promotion of {name}: {outcome}\n\n{reason}\n",
        description=f"{name}: {outcome}",
    )
