"""One logger for task code, inside a Prefect run (its run logger) or outside (``.fn()`` calls)."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def run_logger() -> logging.Logger | logging.LoggerAdapter:  # type: ignore[type-arg]
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("mammo")
