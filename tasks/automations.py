"""The Prefect automations a nightly deployment relies on, created (or updated) by name.

- ``mammo: crash runs without heartbeats``: every flow run sends a heartbeat event
  (``prefect.flow-run.heartbeat``, every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds, 180 by
  default); a run whose heartbeats stop for the grace period without a final state is set
  Crashed, so a SIGKILLed driver does not leave it Running for ever.
- ``mammo: notify on drift``: each ``mammo.drift.*`` event (tasks/monitor.py) sent through a
  notification block: a webhook made here (``webhook_url``), or any block already saved on
  the server (``notify_block``, as ``block-type-slug/block-name``: Slack, email, ...).

``mammo up`` creates them on the local stack; ``mammo automations`` on any server that
PREFECT_API_URL names.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import cast
from uuid import UUID

from prefect.automations import Automation
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from tasks.monitor import EVENT_PREFIX

CRASH = "mammo: crash runs without heartbeats"
DRIFT = "mammo: notify on drift"
WEBHOOK_BLOCK = "mammo-drift-webhook"  # the CustomWebhookNotificationBlock made for a URL
FINAL = ("Completed", "Failed", "Cancelled", "Crashed")
DRIFT_SUBJECT = "mammo drift: {{ event.event }} on {{ event.resource.name }}"
DRIFT_BODY = (
    "{{ event.payload.severity }}: {{ event.payload.detail }} "
    "({{ event.payload.images }} image(s); {{ event.payload.key }})"
)


class AutomationError(RuntimeError):
    """An automation could not be set up (a missing block, a bad grace period)."""


def heartbeat_grace_s() -> int:
    """MAMMO_HEARTBEAT_GRACE_S, else three heartbeat periods of this client's settings."""
    given = os.environ.get("MAMMO_HEARTBEAT_GRACE_S")
    if given:
        return int(given)
    return 3 * (get_current_settings().flows.heartbeat_frequency or 180)


def crash_automation(grace_s: int) -> Automation:
    return Automation(
        name=CRASH,
        description=f"A flow run silent for {grace_s} s without a final state is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=grace_s),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"no heartbeat for {grace_s} s: its process died (mammo: {CRASH})",
            )
        ],
    )


def drift_automation(block_document_id: UUID) -> Automation:
    return Automation(
        name=DRIFT,
        description="Each drift finding of a nightly run, sent as a notification.",
        trigger=EventTrigger(
            expect={f"{EVENT_PREFIX}*"},
            match={"prefect.resource.id": ["mammo.*"]},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=DRIFT_SUBJECT,
                body=DRIFT_BODY,
            )
        ],
    )


def ensure_automations(
    webhook_url: str | None = None, notify_block: str | None = None, grace_s: int | None = None
) -> list[str]:
    """Create or update both automations on the current Prefect API (the drift one only with
    a notification target); return one line per automation, as `mammo` prints them."""
    grace = grace_s if grace_s is not None else heartbeat_grace_s()
    if grace < 30:
        raise AutomationError(f"the heartbeat grace period must be >= 30 s, got {grace}")
    lines = [_upsert(crash_automation(grace)) + f" (after {grace} s without a heartbeat)"]
    block_id: UUID | None = None
    if webhook_url:
        hook = CustomWebhookNotificationBlock(
            name=WEBHOOK_BLOCK,
            url=webhook_url,
            json_data={"subject": "{{subject}}", "body": "{{body}}"},
            headers=None,
            cookies=None,
        )
        block_id = cast(UUID, hook.save(WEBHOOK_BLOCK, overwrite=True))
        target = f"webhook {webhook_url}"
    elif notify_block:
        try:
            block_id = cast(Block, Block.load(notify_block))._block_document_id
        except (ValueError, ObjectNotFound) as exc:
            raise AutomationError(f"no notification block {notify_block!r}: {exc}") from exc
        target = f"block {notify_block}"
    if block_id is None:
        lines.append(f"{DRIFT}: not set (no --drift-webhook or --notify-block given)")
    else:
        lines.append(_upsert(drift_automation(block_id)) + f" -> {target}")
    return lines


def _upsert(automation: Automation) -> str:
    try:
        existing = cast(Automation, Automation.read(name=automation.name))
    except ValueError:
        existing = None
    if existing is None:
        automation.create()
        return f"{automation.name}: created"
    automation.id = existing.id
    automation.update()
    return f"{automation.name}: updated"
