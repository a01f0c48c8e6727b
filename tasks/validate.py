"""The validation gate: Great Expectations suites on train.csv and on the decoded set.

Both reports are saved as JSON beside the data (``OUT/validation/``) and shown to a person
as a Prefect markdown artifact. A failed suite raises :class:`DataValidationError`, whose
message names each failed expectation with example offending values: the pipeline stops
there and trains nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext

from mammo import contract as c
from mammo.preprocess import PreprocessConfig
from tasks.ingest import INGEST_SUMMARY_FILE
from tasks.lineage import record_validation
from tasks.logs import run_logger
from tasks.storage import open_store
from tasks.validate_gx import (
    DataValidationError,
    ValidationConfig,
    ValidationReport,
    validate_decoded_set,
    validate_raw_metadata,
)

__all__ = ["DataValidationError", "validate_data"]


@task(name="validate-data")
def validate_data(raw: str, data: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run both suites; save and publish the reports; raise if either failed."""
    logger = run_logger()
    raw_store, out = open_store(raw), open_store(data)
    summary = json.loads(out.read_bytes(INGEST_SUMMARY_FILE))
    subset = c.Subset(summary["subset"])
    preprocess = PreprocessConfig.from_json(out.read_bytes(c.PREPROCESS_CONFIG_FILE).decode())
    cfg = ValidationConfig(
        **(config or {}), expected_rows=preprocess.out_rows, expected_cols=preprocess.out_cols
    )
    csv = pd.read_csv(
        io.BytesIO(raw_store.read_bytes(c.csv_name(subset))),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
    )
    columns = [f.name for f in c.MANIFEST_SCHEMA]
    manifest_bytes = out.read_bytes(c.MANIFEST_FILE)  # one read: the hash names what is checked
    data_hash = hashlib.sha256(manifest_bytes).hexdigest()
    manifest = pq.read_table(io.BytesIO(manifest_bytes), columns=columns).to_pandas()
    reports = [
        validate_raw_metadata(csv, cfg),
        validate_decoded_set(
            manifest, int(summary["csv_rows"]), int(summary["quarantined_csv_rows"]), cfg
        ),
    ]
    documents = {}
    for report in reports:
        document = json.dumps(report.to_dict(), indent=2, default=str).encode()
        out.write_bytes(f"{c.VALIDATION_DIR}/{report.suite}.json", document)
        documents[report.suite] = (report.success, document)
    where = record_validation(data, data_hash, documents)
    logger.info("Validation of manifest %s recorded in %s", data_hash[:12], where)
    _publish(reports)
    failed = [r for r in reports if not r.success]
    for report in reports:
        logger.info(
            "Suite %s: %s (%s)",
            report.suite,
            "passed" if report.success else "FAILED",
            report.statistics,
        )
    if failed:
        raise DataValidationError(*failed)
    return {"manifest_hash": data_hash, **{r.suite: r.statistics for r in reports}}


def _publish(reports: list[ValidationReport]) -> None:
    if TaskRunContext.get() is None:
        return  # called outside a Prefect run (e.g. .fn() in a test)
    markdown = "\n\n".join(f"## {r.suite}\n\n{r.to_markdown()}" for r in reports)
    ok = all(r.success for r in reports)
    create_markdown_artifact(
        key="data-validation",
        markdown=markdown,
        description="Great Expectations: " + ("passed" if ok else "FAILED"),
    )
