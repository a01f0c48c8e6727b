"""The Great Expectations context the suites run in: ephemeral and quiet, and, inside
:func:`data_docs_site`, one that also keeps every suite run's result in a results directory
and renders it into a GX Data Docs site (the HTML report GX users know). Both directories
hold earlier runs too (the caller brings them from OUT and publishes them back), so the one
site lists every night's gates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint.actions import UpdateDataDocsAction
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

SITE = "mammo"
_docs: ContextVar[tuple[Any, str] | None] = ContextVar("mammo_gx_data_docs", default=None)


def quiet_context(results: Path | None = None) -> Any:
    """An in-memory GX context: no analytics, no progress bars, nothing written to disk
    except, with ``results``, the validation results (GX's own JSON layout, one file per
    suite run: ``<suite>/<run name>/<run time>/<batch>.json``)."""
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    if results is not None:
        config.stores[config.validation_results_store_name] = {
            "class_name": "ValidationResultsStore",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(results),
            },
        }
    return gx.get_context(mode="ephemeral", project_config=config)


@contextmanager
def data_docs_site(directory: Path, results: Path, run_name: str) -> Iterator[None]:
    """Suites run inside the block share one context that stores their results in
    ``results`` under ``run_name`` and renders them into the Data Docs site in ``directory``
    (index.html, one page per suite run). The index lists every result in ``results``
    whose page is in ``directory``, earlier runs' included; pages without a result are
    removed (GX's own clean-up), which is how old runs leave the site."""
    context = quiet_context(results)
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
    token = _docs.set((context, run_name))
    try:
        yield
    finally:
        _docs.reset(token)


def context() -> tuple[Any, str | None]:
    """The context to run a suite in, and the run name it stores results under when it
    builds Data Docs (None when it does not)."""
    docs = _docs.get()
    return docs if docs is not None else (quiet_context(), None)


def run(
    gx_context: Any,
    definition: Any,
    frame: pd.DataFrame,
    result_format: dict[str, Any],
    run_name: str | None,
) -> Any:
    """One suite on one frame: the ExpectationSuiteValidationResult (stored under
    ``run_name`` and rendered into the Data Docs site through a checkpoint, when given)."""
    if run_name is None:
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
    outcome = checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
    )
    return next(iter(outcome.run_results.values()))
