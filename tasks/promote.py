"""Model promotion: move ``champion`` to the challenger only when a pre-specified protocol
says so (mammo.protocol), on evidence a safety board can read.

Both versions are scored on the same held-out patients, seen by neither in training (the
patients in the stable hash holdout of each model's split rule), at breast level; each model
keeps the threshold locked on its own validation set. mammo.comparison computes the clinical
evaluation, the paired differences and the subgroup table; mammo.promotion.decide applies the
protocol. The decision is one JSON document (figures, intervals, every rule, the protocol's
hash, both versions, the data hash), stored as an MLflow artifact and tags on the challenger,
under ``OUT/registry/<model>/v<N>/`` beside its model card, and as a Prefect artifact.

Promotions and rollbacks of one registered model are serialized by a Prefect global
concurrency limit, and the alias is moved only if the champion is still the one the
challenger was compared with: an alias names one version, so there are never two champions,
and it is only ever moved, never deleted, so there is never none. A rolled-back version is
never promoted again automatically (tasks.registry).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect import task

from mammo import contract as c
from mammo import tags as t
from mammo.comparison import Comparison, compare
from mammo.metrics import aggregate_breasts
from mammo.promotion import NOT_VALIDATED, PROMOTED, REFUSED, Decision, Rule, decide
from mammo.protocol import PromotionProtocol
from mammo.splits import SplitConfig, is_holdout
from tasks import tracking
from tasks.lineage import ValidationFact, manifest_hash, validation_fact
from tasks.logs import run_logger
from tasks.model_card import publish_card, publish_markdown, publish_note
from tasks.monitor import unresolved_drift
from tasks.registry import PromotionError, promotion_lock
from tasks.retry import transient_only
from tasks.scoring import load_bundle, read_manifest, score_rows
from tasks.settings import Settings


def split_rule(client: MlflowClient, version: ModelVersion) -> SplitConfig:
    """The split config a version was trained with (logged as ``split.*`` run params)."""
    params = client.get_run(str(version.run_id)).data.params
    return SplitConfig(
        holdout_fraction=float(params["split.holdout_fraction"]),
        val_fraction=float(params["split.val_fraction"]),
        seed=int(params["split.seed"]),
        holdout_salt=params["split.holdout_salt"],
    )


def holdout_rows(manifest: pd.DataFrame, rules: list[SplitConfig]) -> pd.DataFrame:
    """Images of patients in the holdout of every rule: unseen by every model compared."""
    patients = manifest[c.PATIENT_ID].drop_duplicates()
    unseen = patients[[all(is_holdout(int(p), rule) for rule in rules) for p in patients]]
    return manifest[manifest[c.PATIENT_ID].isin(set(unseen))].reset_index(drop=True)


def breast_table(
    scored: pd.DataFrame, aggregations: list[str], keep: tuple[str, ...]
) -> pd.DataFrame:
    """One row per held-out breast: label, patient, subgroup columns, one column per model."""
    frame: pd.DataFrame | None = None
    for index, how in enumerate(aggregations):
        column = f"model_{index}"
        breasts = aggregate_breasts(scored, column, how, keep=keep)  # type: ignore[arg-type]
        if frame is None:
            frame = breasts
        else:
            frame = frame.merge(breasts[[c.PREDICTION_ID, column]], on=c.PREDICTION_ID)
    assert frame is not None
    return frame


@task(
    name="promote-challenger",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=transient_only(PromotionError),
)
def promote_challenger(
    data: str, settings: Settings, protocol: PromotionProtocol
) -> dict[str, Any]:
    """Judge the challenger under ``protocol`` on the holdout of ``data``; move the alias if
    every rule passes."""
    logger = run_logger()
    client, name = tracking.client(settings), settings.model_name
    challenger = tracking.alias_version(client, name, tracking.CHALLENGER)
    if challenger is None:
        raise PromotionError(f"{name} has no @{tracking.CHALLENGER} version to promote")
    if challenger.tags.get(t.ROLLED_BACK):
        return _unchanged(
            name,
            challenger,
            REFUSED,
            f"version {challenger.version} was rolled back ({challenger.tags[t.ROLLED_BACK]}) and "
            "is never promoted again automatically",
        )
    champion = tracking.alias_version(client, name, tracking.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        return _unchanged(name, challenger, "unchanged", "it is already the champion")

    versions = [challenger] + ([champion] if champion is not None else [])
    uris = [f"models:/{name}/{v.version}" for v in versions]
    bundles = [load_bundle(uri, settings.mlflow_tracking_uri) for uri in uris]
    if any(b.config.target != c.CANCER for b in bundles):
        raise PromotionError("promotion compares cancer models (a binary cancer target)")
    if len({b.preprocess.config_hash() for b in bundles}) > 1:
        raise PromotionError(
            "the challenger and the champion use different preprocessing configs; they cannot "
            "be compared on one set of decoded images (promote by hand if this is intended)"
        )
    holdout = holdout_rows(read_manifest(data), [split_rule(client, v) for v in versions])
    if holdout.empty:
        raise PromotionError(f"no held-out patient of {data} is unseen by every model compared")
    scored = score_rows(data, holdout, uris, settings)
    keep = tuple(col for col in protocol.subgroups.columns if col in scored.columns)
    breasts = breast_table(scored, [b.config.aggregation for b in bundles], keep)
    comparison = compare(breasts, [b.config.threshold for b in bundles], protocol)
    fact = _validation(challenger, client)
    evaluations = comparison.evaluations
    decision = decide(
        protocol,
        fact.status,
        fact.detail,
        evaluations["challenger"],
        evaluations.get("champion"),
        comparison.differences,
        comparison.subgroups,
        unresolved_drift(data) if protocol.drift.block_on_critical else (),
    )
    data_hash = manifest_hash(data)
    with promotion_lock(name):
        applied = _check_champion(client, name, challenger, champion, decision)
        if applied is None:
            why = "a concurrent promotion of it came first"
            return _unchanged(name, challenger, "unchanged", why)
        document = decision_document(
            name, challenger, champion, applied, protocol, comparison, data, data_hash
        )
        document["validation"] = fact.to_dict()
        _record(client, name, challenger, champion, document)
        if applied.promote:  # last, one atomic step: a failure before it moves nothing
            if champion is not None:
                client.set_model_version_tag(
                    name, challenger.version, t.PREVIOUS_CHAMPION, champion.version
                )
            client.set_registered_model_alias(name, tracking.CHAMPION, challenger.version)
    config = bundles[0].config
    card = publish_card(
        client,
        name,
        challenger,
        data,
        document,
        comparison,
        breasts,
        config.threshold,
        config.aggregation,
    )
    document["model_card"] = card
    logger.info("Promotion of %s v%s: %s", name, challenger.version, applied.reason)
    publish_markdown(name, document)
    return summary(document)


def _validation(version: ModelVersion, client: MlflowClient) -> ValidationFact:
    """The validation of the exact manifest the version trained on, where it was trained."""
    tags = client.get_run(str(version.run_id)).data.tags
    data = version.tags.get(t.DATA) or tags.get(t.DATA, "")
    data_hash = version.tags.get(t.DATA_HASH) or tags.get(t.DATA_HASH, "")
    if not data or not data_hash:
        return ValidationFact(NOT_VALIDATED, f"version {version.version} records no training data")
    return validation_fact(data, data_hash)


def _check_champion(
    client: MlflowClient,
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    decision: Decision,
) -> Decision | None:
    """Under the lock, the compare of the compare-and-set: the decision stands only if the
    champion is still the version the challenger was compared with. None (nothing to record,
    nothing to move) if the challenger already is the champion: a concurrent promotion of the
    same challenger held the lock first, and its record stands."""
    current = tracking.alias_version(client, name, tracking.CHAMPION)
    if current is not None and current.version == challenger.version:
        return None
    if (current and current.version) != (champion and champion.version):
        moved = Rule("champion unchanged", False, "the champion changed during the comparison", "")
        return Decision(REFUSED, f"{moved.observed}; run again", (*decision.rules, moved))
    return decision


def decision_document(
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    decision: Decision,
    protocol: PromotionProtocol,
    comparison: Comparison,
    data: str,
    data_hash: str,
) -> dict[str, Any]:
    """Everything the decision rests on, as one JSON-serialisable document."""
    evaluation = comparison.evaluations["challenger"]
    return {
        "schema": "mammo.promotion-decision/1",
        "model": name,
        **decision.to_dict(),
        "challenger": _version(challenger),
        "champion": _version(champion) if champion is not None else None,
        "protocol": {
            "name": protocol.name,
            "version": protocol.version,
            "source": protocol.source,
            "hash": protocol.content_hash(),
            "content": protocol.to_dict(),
        },
        "data": {"location": data, "hash": data_hash},
        "holdout": {k: evaluation[k] for k in ("n_patients", "n_breasts", "n_positive")},
        **comparison.to_dict(),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _version(version: ModelVersion) -> dict[str, Any]:
    tags = version.tags
    return {
        "version": str(version.version),
        "run_id": version.run_id,
        "threshold": tags.get(t.THRESHOLD, ""),
        "data_hash": tags.get(t.DATA_HASH, ""),
    }


def summary(document: dict[str, Any]) -> dict[str, Any]:
    """The flow's return value: the decision and where its documents are."""
    champion = document.get("champion") or {}
    promoted = document["outcome"] == PROMOTED
    out = {
        "decision": document["outcome"],
        "reason": document["reason"],
        "challenger": document["challenger"]["version"],
        "champion_before": champion.get("version"),
        "champion": document["challenger"]["version"] if promoted else champion.get("version"),
        "protocol": f"{document['protocol']['name']} v{document['protocol']['version']}",
        "protocol_hash": document["protocol"]["hash"],
        "holdout": document["holdout"],
        "rules": document["rules"],
    }
    out.update(document.get("model_card", {}))
    return out


def _record(
    client: MlflowClient,
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    document: dict[str, Any],
) -> None:
    """The decision as tags on both versions and as an artifact of the challenger's run."""
    text = json.dumps(document, indent=2, default=str)
    stamp = document["decided_at"].replace(":", "")
    client.log_text(str(challenger.run_id), text, t.DECISION_ARTIFACT)
    client.log_text(str(challenger.run_id), text, t.decision_history_file(stamp))
    primary = document["protocol"]["content"]["primary"]["metric"]
    figure = (document.get("differences") or {}).get(primary) or {}
    tags = {
        t.PROMOTION_DECISION: document["outcome"],
        t.PROMOTION_REASON: document["reason"][:4900],
        t.PROMOTION_AT: document["decided_at"],
        t.PROMOTION_COMPARED_TO: champion.version if champion else "none",
        t.PROMOTION_PROTOCOL: document["protocol"]["name"],
        t.PROMOTION_PROTOCOL_HASH: document["protocol"]["hash"],
        t.PROMOTION_BREASTS: str(document["holdout"]["n_breasts"]),
        t.PROMOTION_POSITIVE_BREASTS: str(document["holdout"]["n_positive"]),
        **{f"{t.PROMOTION_PREFIX}{k}": f"{v:.6g}" for k, v in figure.items() if k != "n"},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger.version, key, value)
    if champion is not None:
        for key, value in {
            t.CHALLENGED_BY: challenger.version,
            t.CHALLENGE_DECISION: document["outcome"],
            t.CHALLENGE_REASON: document["reason"][:4900],
            t.CHALLENGE_AT: document["decided_at"],
        }.items():
            client.set_model_version_tag(name, champion.version, key, value)


def _unchanged(name: str, challenger: ModelVersion, outcome: str, why: str) -> dict[str, Any]:
    result = {
        "decision": outcome,
        "reason": f"version {challenger.version}: {why}",
        "challenger": challenger.version,
        "champion": challenger.version if outcome == "unchanged" else None,
    }
    run_logger().info("Promotion of %s v%s: %s", name, challenger.version, result["reason"])
    publish_note(name, outcome, str(result["reason"]))
    return result
