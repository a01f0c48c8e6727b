"""The Great Expectations context the suites run in: ephemeral and quiet, and, inside
:func:`data_docs_site`, one that also builds a GX Data Docs site (the HTML report GX users
know) of every suite run, into a directory the caller then publishes under OUT."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint.actions import UpdateDataDocsAction
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

SITE = "mammo"
_docs: ContextVar[Any] = ContextVar("mammo_gx_data_docs", default=None)


def quiet_context() -> Any:
    """An in-memory GX context: no analytics, no progress bars, nothing written to disk."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


@contextmanager
def data_docs_site(directory: Path) -> Iterator[None]:
    """Suites run inside the block share one context whose results are rendered as a Data
    Docs site in ``directory`` (index.html, one page per suite and per validation)."""
    context = quiet_context()
    context.add_data_docs_site(
        site_name=SITE,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(directory),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    token = _docs.set(context)
    try:
        yield
    finally:
        _docs.reset(token)


def context() -> tuple[Any, bool]:
    """The context to run a suite in, and whether it builds Data Docs."""
    docs = _docs.get()
    return (docs, True) if docs is not None else (quiet_context(), False)


def run(
    gx_context: Any,
    definition: Any,
    frame: pd.DataFrame,
    result_format: dict[str, Any],
    docs: bool,
) -> Any:
    """One suite on one frame: the ExpectationSuiteValidationResult (rendered into the
    Data Docs site through a checkpoint when ``docs``)."""
    if not docs:
        return definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    stored = gx_context.validation_definitions.add(definition)
    checkpoint = gx_context.checkpoints.add(
        gx.Checkpoint(
            name=definition.name,
            validation_definitions=[stored],
            actions=[UpdateDataDocsAction(name="data-docs", site_names=[SITE])],
            result_format=result_format,
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    return next(iter(outcome.run_results.values()))
