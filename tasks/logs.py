"""One logger for task code, inside a Prefect run (its run logger) or outside (``.fn()`` calls)."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("mammo")


class _OneLineKnownErrors(logging.Formatter):
    """Formats as ``inner`` does, without the traceback of a ``known`` exception."""

    def __init__(self, inner: logging.Formatter, known: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.inner, self.known = inner, known

    def format(self, record: logging.LogRecord) -> str:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, self.known):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def one_line_known_errors(known: tuple[type[BaseException], ...]) -> None:
    """On the console, a run that failed with a known error (bad input, failed validation, a
    refused operation) is logged in one line, not with a traceback: the command then prints
    what went wrong. Prefect's API log, and so its UI, keeps the whole record."""
    import prefect.main  # noqa: F401 - configures Prefect's logging handlers
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(handler, PrefectConsoleHandler) and formatter is not None:
            if isinstance(formatter, _OneLineKnownErrors):
                continue
            handler.setFormatter(_OneLineKnownErrors(formatter, known))
