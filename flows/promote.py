"""Promotion flow: the challenger judged under a pre-specified protocol; or a rollback.

mammo promote --data OUT [--protocol FILE]    mammo promote --rollback    mammo promote --history
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from mammo.config import PromotionSettings
from mammo.protocol import PromotionProtocol
from tasks.config import load_config
from tasks.promote import promote_challenger
from tasks.registry import rollback_champion
from tasks.settings import Settings, default_out
from tasks.storage import absolute_uri


@flow(name="promote")
def promote(
    data: str = "",
    protocol: str | None = None,
    metric: str | None = None,
    margin: float | None = None,
    rollback: bool = False,
    reason: str = "",
    config: str | None = None,
) -> dict[str, Any]:
    """Judge @challenger against @champion on the holdout of ``data`` (default
    ``$MAMMO_HOME/data``) under ``protocol`` (a YAML file; default: the shipped one), with
    optional overrides of its primary metric and margin. ``rollback`` restores the previous
    champion instead, and withdraws the current one for good. The [promotion] section of the
    ``config`` file gives the protocol, metric and margin that are not passed."""
    settings = Settings.from_env()
    if rollback:
        return rollback_champion(settings, reason)
    given = {"protocol": protocol, "metric": metric, "margin": margin}
    chosen = PromotionSettings(**load_config(config).merged("promotion", given) or {})
    rules = PromotionProtocol.load(chosen.protocol)
    rules = rules.with_primary(metric=chosen.metric, margin=chosen.margin)
    return promote_challenger(absolute_uri(data or default_out()), settings, rules)


if __name__ == "__main__":
    from flows.cli import main

    main(["promote", *__import__("sys").argv[1:]])
