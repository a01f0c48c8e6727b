"""Model promotion: move ``champion`` to the challenger only when it is proven no worse.

Both versions are scored on the same held-out patients, seen by neither in training: the
patients that are in the stable hash holdout under each model's split rule. Their
breast-level metric is compared with a paired bootstrap (mammo.promotion); the policy
(tie, worse, better but not proven, floor for a first model, never on unvalidated data)
lives in :func:`mammo.promotion.decide`.

Promotions and rollbacks of one registered model are serialized by a Prefect global
concurrency limit, and the alias is moved only if the champion is still the one the
challenger was compared with: an alias names one version, so there are never two
champions, and it is only ever moved, never deleted, so there is never none. A promotion
that finds its challenger already promoted by a concurrent one leaves that record alone.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext

from mammo import contract as c
from mammo.metrics import aggregate_breasts, probabilistic_f1, roc_auc
from mammo.promotion import BootstrapResult, Decision, PromotionPolicy, decide, paired_bootstrap
from mammo.splits import SplitConfig, is_holdout
from tasks import tracking
from tasks.logs import run_logger
from tasks.scoring import load_bundle, read_manifest, score_rows
from tasks.settings import Settings

PREVIOUS = "mammo.previous_champion"
METRICS = {"auc": roc_auc, "pf1": probabilistic_f1}


class PromotionError(RuntimeError):
    """Promotion cannot be decided or carried out; the message says why."""


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@contextlib.contextmanager
def promotion_lock(model_name: str) -> Iterator[None]:
    """One promotion or rollback of ``model_name`` at a time, across processes and machines."""
    limit = "mammo-promote-" + re.sub(r"[^a-z0-9-]", "-", model_name.lower())
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit, 1)
    with concurrency(limit, occupy=1, timeout_seconds=600, strict=True):
        yield


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


def compare(
    scored: pd.DataFrame, aggregations: list[str], policy: PromotionPolicy
) -> BootstrapResult:
    """Breast-level paired bootstrap; column model_0 is the challenger, model_1 the champion."""
    breasts = []
    for index, how in enumerate(aggregations):
        column = f"model_{index}"
        breasts.append(
            aggregate_breasts(scored, column, how)[
                [c.PREDICTION_ID, c.PATIENT_ID, c.CANCER, column]
            ]
        )
    frame = breasts[0]
    for other in breasts[1:]:
        frame = frame.merge(other.drop(columns=[c.PATIENT_ID, c.CANCER]), on=c.PREDICTION_ID)
    metric = METRICS[policy.metric]
    y, challenger = frame[c.CANCER].to_numpy(), frame["model_0"].to_numpy()
    if len(aggregations) == 1:  # no champion: the challenger's figure alone
        value = float(metric(y, challenger))
        return BootstrapResult(math.nan, math.nan, math.nan, math.nan, value, len(frame))
    return paired_bootstrap(
        y,
        frame["model_1"].to_numpy(),
        challenger,
        metric,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        groups=frame[c.PATIENT_ID].to_numpy(),
        confidence=policy.confidence,
    )


@task(name="promote-challenger", retries=1, retry_delay_seconds=10)
def promote_challenger(data: str, settings: Settings, policy: dict[str, Any]) -> dict[str, Any]:
    """Compare challenger and champion on the holdout of ``data``; move the alias if earned."""
    logger = run_logger()
    rules = PromotionPolicy(**policy)
    client, name = tracking.client(settings), settings.model_name
    challenger = _alias(client, name, tracking.CHALLENGER)
    if challenger is None:
        raise PromotionError(f"{name} has no @{tracking.CHALLENGER} version to promote")
    champion = _alias(client, name, tracking.CHAMPION)
    if champion is not None and champion.version == challenger.version:
        return _unchanged(name, challenger, "it is already the champion")

    versions = [challenger] + ([champion] if champion is not None else [])
    uris = [f"models:/{name}/{v.version}" for v in versions]
    bundles = [load_bundle(uri, settings.mlflow_tracking_uri) for uri in uris]
    if any(b.config.target != c.CANCER for b in bundles):
        raise PromotionError("promotion compares cancer models (breast-level AUC or pF1)")
    if len({b.preprocess.config_hash() for b in bundles}) > 1:
        raise PromotionError(
            "the challenger and the champion use different preprocessing configs; they cannot "
            "be compared on one set of decoded images (promote by hand if this is intended)"
        )
    holdout = holdout_rows(read_manifest(data), [split_rule(client, v) for v in versions])
    if holdout.empty:
        raise PromotionError(f"no held-out patient of {data} is unseen by every model compared")
    scored = score_rows(data, holdout, uris, settings)
    result = compare(scored, [b.config.aggregation for b in bundles], rules)
    validated = challenger.tags.get("mammo.validation") == "passed"
    decision = decide(result, rules.margin, rules.floor, champion is not None, validated)

    with promotion_lock(name):
        applied = _apply(client, name, challenger, champion, decision, result, rules)
    if applied is None:
        return _unchanged(name, challenger, "a concurrent promotion of it came first")
    decision = applied
    outcome = {
        "decision": "promoted" if decision.promote else "refused",
        "reason": decision.reason,
        "challenger": challenger.version,
        "champion_before": champion.version if champion else None,
        "champion": challenger.version if decision.promote else (champion and champion.version),
        "metric": rules.metric,
        "challenger_value": result.challenger_value,
        "champion_value": result.champion_value,
        "diff": result.diff,
        "ci": [result.ci_low, result.ci_high],
        "breasts": result.n,
    }
    logger.info("Promotion of %s v%s: %s", name, challenger.version, decision.reason)
    _publish(name, outcome)
    return outcome


def _apply(
    client: MlflowClient,
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    decision: Decision,
    result: BootstrapResult,
    policy: PromotionPolicy,
) -> Decision | None:
    """Under the lock: compare-and-set of the champion alias, and the record of the decision.

    Refused if the champion is no longer the version the challenger was compared with. None
    (nothing recorded, nothing moved) if the challenger already is the champion: a concurrent
    promotion of the same challenger held the lock first, and its record stands.
    """
    current = _alias(client, name, tracking.CHAMPION)
    if current is not None and current.version == challenger.version:
        return None
    if (current and current.version) != (champion and champion.version):
        decision = Decision(False, "the champion changed during the comparison; run again")
    _record(client, name, challenger, champion, decision, result, policy)
    if decision.promote:  # last, one atomic step: a failure before it moves nothing
        if champion is not None:
            client.set_model_version_tag(name, challenger.version, PREVIOUS, champion.version)
        client.set_registered_model_alias(name, tracking.CHAMPION, challenger.version)
    return decision


def _unchanged(name: str, challenger: ModelVersion, why: str) -> dict[str, Any]:
    outcome = {
        "decision": "unchanged",
        "reason": f"version {challenger.version} is the champion: {why}",
        "challenger": challenger.version,
        "champion": challenger.version,
    }
    run_logger().info("Promotion of %s v%s: %s", name, challenger.version, outcome["reason"])
    _publish(name, outcome)
    return outcome


def _record(
    client: MlflowClient,
    name: str,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    decision: Decision,
    result: BootstrapResult,
    policy: PromotionPolicy,
) -> None:
    """The decision, its figures and its reason as tags on both versions."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    verdict = "promoted" if decision.promote else "refused"
    figures = {
        "metric": policy.metric,
        "challenger_value": result.challenger_value,
        "champion_value": result.champion_value,
        "diff": result.diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "breasts": result.n,
        "margin": policy.margin,
    }
    tags = {
        "mammo.promotion.decision": verdict,
        "mammo.promotion.reason": decision.reason,
        "mammo.promotion.at": now,
        "mammo.promotion.compared_to": champion.version if champion else "none",
        **{f"mammo.promotion.{k}": _text(v) for k, v in figures.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, challenger.version, key, value)
    if champion is not None:
        for key, value in {
            "mammo.promotion.challenged_by": challenger.version,
            "mammo.promotion.challenge_decision": verdict,
            "mammo.promotion.challenge_reason": decision.reason,
            "mammo.promotion.challenge_at": now,
        }.items():
            client.set_model_version_tag(name, champion.version, key, value)


def _text(value: float | int | str) -> str:
    if isinstance(value, str):
        return value
    return "nan" if isinstance(value, float) and np.isnan(value) else f"{value:.6g}"


@task(name="rollback-champion")
def rollback_champion(settings: Settings) -> dict[str, Any]:
    """Give ``champion`` back to the version it replaced."""
    client, name = tracking.client(settings), settings.model_name
    with promotion_lock(name):
        current = _alias(client, name, tracking.CHAMPION)
        if current is None:
            raise PromotionError(f"{name} has no champion to roll back")
        previous = current.tags.get(PREVIOUS)
        if not previous:
            raise PromotionError(f"{name} v{current.version} replaced no earlier champion")
        client.set_registered_model_alias(name, tracking.CHAMPION, previous)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, current.version, "mammo.promotion.rolled_back_at", now)
        client.set_model_version_tag(
            name, previous, "mammo.promotion.restored_from", current.version
        )
    outcome = {"decision": "rolled back", "champion": previous, "replaced": current.version}
    run_logger().info("Rolled %s back from v%s to v%s", name, current.version, previous)
    _publish(name, outcome)
    return outcome


def _publish(name: str, outcome: dict[str, Any]) -> None:
    if TaskRunContext.get() is None:
        return
    rows = "\n".join(f"| {key} | {value} |" for key, value in outcome.items())
    create_markdown_artifact(
        key="model-promotion",
        markdown=f"# Promotion of {name}\n\n| | |\n|---|---|\n{rows}\n",
        description=f"{name}: {outcome['decision']}",
    )
