"""Drift flow: the images that arrived since the champion was trained, against its reference.

mammo drift --data OUT [--config nightly.toml]
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.config import load_config
from tasks.monitor import drift_report
from tasks.settings import default_out
from tasks.storage import absolute_uri


@flow(name="drift")
def drift(
    data: str = "", monitor: dict[str, Any] | None = None, config: str | None = None
) -> dict[str, Any]:
    """The drift report of ``data`` (default ``$MAMMO_HOME/data``); ``monitor`` (thresholds)
    overrides the [monitor] section of the ``config`` file. Findings warn; none fails it."""
    thresholds = load_config(config).merged("monitor", monitor)
    return drift_report(absolute_uri(data or default_out()), thresholds)


if __name__ == "__main__":
    from flows.cli import main

    main(["drift", *__import__("sys").argv[1:]])
