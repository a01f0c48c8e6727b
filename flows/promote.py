"""Promotion flow: challenger vs champion on held-out patients; or roll the champion back.

mammo promote --data OUT            mammo promote --rollback
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from mammo.promotion import PromotionPolicy
from tasks.promote import promote_challenger, rollback_champion
from tasks.settings import Settings


@flow(name="promote")
def promote(
    data: str | None = None, policy: dict[str, Any] | None = None, rollback: bool = False
) -> dict[str, Any]:
    settings = Settings.from_env()
    if rollback:
        return rollback_champion(settings)
    if data is None:
        raise ValueError("promote needs the decoded data (--data OUT) to score the holdout on")
    rules = PromotionPolicy(**(policy or {}))
    return promote_challenger(data, settings, rules.__dict__)


if __name__ == "__main__":
    from flows.cli import main

    main(["promote", *__import__("sys").argv[1:]])
