"""The registry as a user acts on it: the promotion lock, rollback, and the history.

A rollback gives ``champion`` back to the version it replaced, tags the rolled-back version
(``mammo.rolled_back``) so that no later promotion picks it up again, and moves
``challenger`` off it: the next night compares the next new version, not the one a person
just withdrew. ``history`` lists every version newest first with its aliases, validation,
decision and reason (``mammo promote --history``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from mlflow.exceptions import MlflowException
from prefect import task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from mammo import tags as t
from tasks import tracking
from tasks.logs import run_logger
from tasks.settings import Settings


class PromotionError(RuntimeError):
    """Promotion or rollback cannot be carried out; the message says why."""


@contextlib.contextmanager
def promotion_lock(model_name: str) -> Iterator[None]:
    """One promotion or rollback of ``model_name`` at a time, across processes and machines."""
    limit = "mammo-promote-" + re.sub(r"[^a-z0-9-]", "-", model_name.lower())
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit, 1)
    with concurrency(limit, occupy=1, timeout_seconds=600, strict=True):
        yield


@task(name="rollback-champion")
def rollback_champion(settings: Settings, reason: str = "") -> dict[str, Any]:
    """Give ``champion`` back to the version it replaced; the replaced one is withdrawn."""
    client, name = tracking.client(settings), settings.model_name
    with promotion_lock(name):
        current = tracking.alias_version(client, name, tracking.CHAMPION)
        if current is None:
            raise PromotionError(f"{name} has no champion to roll back")
        previous = current.tags.get(t.PREVIOUS_CHAMPION)
        if not previous:
            raise PromotionError(f"{name} v{current.version} replaced no earlier champion")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        why = f"rolled back at {now}" + (f": {reason}" if reason else "")
        client.set_model_version_tag(name, current.version, t.ROLLED_BACK, why)
        client.set_model_version_tag(name, current.version, t.ROLLED_BACK_AT, now)
        client.set_model_version_tag(name, previous, t.RESTORED_FROM, current.version)
        challenger = tracking.alias_version(client, name, tracking.CHALLENGER)
        if challenger is not None and challenger.version == current.version:
            client.delete_registered_model_alias(name, tracking.CHALLENGER)
        client.set_registered_model_alias(name, tracking.CHAMPION, previous)
    outcome = {"decision": "rolled back", "champion": previous, "replaced": current.version}
    run_logger().info("Rolled %s back from v%s to v%s", name, current.version, previous)
    return outcome


def history(settings: Settings) -> list[dict[str, str]]:
    """Every version of the model, newest first, with what the registry says of it."""
    client, name = tracking.client(settings), settings.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'")
        # search results do not carry aliases on every store: the registered model does
        aliases: dict[str, list[str]] = {}
        if versions:
            for alias, number in client.get_registered_model(name).aliases.items():
                aliases.setdefault(str(number), []).append(alias)
    except MlflowException as exc:
        raise tracking.RegistryError(f"listing {name}: {exc.message}") from exc
    rows = []
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = version.tags
        rows.append(
            {
                "version": str(version.version),
                "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)
                .isoformat(timespec="minutes")
                .replace("+00:00", "Z"),
                "validation": tags.get(t.VALIDATION, ""),
                "decision": tags.get(t.PROMOTION_DECISION, "not decided"),
                "rolled_back": tags.get(t.ROLLED_BACK, ""),
                "reason": tags.get(t.PROMOTION_REASON, ""),
            }
        )
    return rows
