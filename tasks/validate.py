"""The validation gates: Great Expectations suites on train.csv and on the decoded set.

The nightly flow runs two gates. :func:`validate_metadata` checks RAW's train.csv before
anything is decoded, so a broken feed stops the night in seconds; :func:`validate_data`
checks the decoded set after the ingest and records both outcomes under the manifest's hash
(what promotion looks up). Reports are saved as JSON beside the data (``OUT/validation/``)
and shown to a person as a Prefect markdown artifact. A failed suite raises
:class:`DataValidationError`, whose message names each failed expectation with example
offending values: the pipeline stops there and trains nothing.
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
from mammo.inventory import read_csv_table
from mammo.preprocess import PreprocessConfig
from tasks.data_docs import data_docs
from tasks.lineage import record_validation
from tasks.logs import run_logger
from tasks.monitor import known_values
from tasks.retry import transient_only
from tasks.settings import Settings
from tasks.storage import open_store
from tasks.validate_gx import (
    DataValidationError,
    ValidationConfig,
    ValidationReport,
    validate_decoded_set,
    validate_raw_metadata,
)

__all__ = ["DataValidationError", "validate_data", "validate_metadata"]


@task(name="validate-metadata", retries=1, retry_condition_fn=transient_only(DataValidationError))
def validate_metadata(
    raw: str, data: str, config: dict[str, Any] | None = None, subset: str = "train"
) -> dict[str, int]:
    """The first gate, before any decode: the metadata suite on RAW's CSV; raise if it fails."""
    name = c.csv_name(c.Subset(subset))
    csv = read_csv_table(open_store(raw).read_bytes(name), name)
    with data_docs(data, "metadata") as docs:
        report = validate_raw_metadata(csv, ValidationConfig(**(config or {})))
    document = json.dumps(report.to_dict(), indent=2, default=str).encode()
    open_store(data).write_bytes(f"{c.VALIDATION_DIR}/{report.suite}.json", document)
    _publish([report], key="metadata-validation", docs=docs)
    run_logger().info(
        "Metadata gate on %s: %s (%s)",
        name,
        "passed" if report.success else "FAILED",
        report.statistics,
    )
    if not report.success:
        raise DataValidationError(report)
    return report.statistics


@task(name="validate-data", retries=1, retry_condition_fn=transient_only(DataValidationError))
def validate_data(raw: str, data: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run both suites; save and publish the reports; raise if either failed."""
    logger = run_logger()
    raw_store, out = open_store(raw), open_store(data)
    summary = json.loads(out.read_bytes(c.INGEST_SUMMARY_FILE))
    subset = c.Subset(summary["subset"])
    preprocess = PreprocessConfig.from_json(out.read_bytes(c.PREPROCESS_CONFIG_FILE).decode())
    cfg = ValidationConfig(
        **(config or {}), expected_rows=preprocess.out_rows, expected_cols=preprocess.out_cols
    )
    csv = read_csv_table(raw_store.read_bytes(c.csv_name(subset)), c.csv_name(subset))
    columns = [f.name for f in c.MANIFEST_SCHEMA]
    manifest_bytes = out.read_bytes(c.MANIFEST_FILE)  # one read: the hash names what is checked
    data_hash = hashlib.sha256(manifest_bytes).hexdigest()
    table = pq.read_table(io.BytesIO(manifest_bytes))  # an older manifest lacks added columns
    missing = c.missing_added_columns(table.column_names, columns)
    manifest = c.with_added_columns(table, missing, columns).to_pandas()
    with data_docs(data, "data") as docs:
        reports = _both_suites(csv, manifest, summary, cfg)
    documents = {}
    for report in reports:
        document = json.dumps(report.to_dict(), indent=2, default=str).encode()
        out.write_bytes(f"{c.VALIDATION_DIR}/{report.suite}.json", document)
        documents[report.suite] = (report.success, document)
    where = record_validation(data, data_hash, documents)
    logger.info("Validation of manifest %s recorded in %s", data_hash[:12], where)
    _publish(reports, docs=docs)
    failed = [r for r in reports if not r.success]
    for report in reports:
        logger.info(
            "Suite %s: %s (%s)",
            report.suite,
            "passed" if report.success else "FAILED",
            report.statistics,
        )
        for warning in report.warnings:
            logger.warning("Suite %s, a warning: %s", report.suite, warning.line())
    if failed:
        raise DataValidationError(*failed)
    result = {"manifest_hash": data_hash, **{r.suite: r.statistics for r in reports}}
    return {**result, **({"data_docs": docs[0]} if docs else {})}


def _both_suites(
    csv: pd.DataFrame, manifest: pd.DataFrame, summary: dict[str, Any], cfg: ValidationConfig
) -> list[ValidationReport]:
    return [
        validate_raw_metadata(csv, cfg),
        validate_decoded_set(
            manifest,
            int(summary["csv_rows"]),
            int(summary["quarantined_csv_rows"]),
            cfg,
            known_values(Settings.from_env()),
        ),
    ]


def _publish(
    reports: list[ValidationReport], key: str = "data-validation", docs: list[str] | None = None
) -> None:
    if TaskRunContext.get() is None:
        return  # called outside a Prefect run (e.g. .fn() in a test)
    markdown = "\n\n".join(f"## {r.suite}\n\n{r.to_markdown()}" for r in reports)
    if docs:
        markdown = f"Great Expectations Data Docs: [{docs[0]}]({docs[0]})\n\n{markdown}"
    ok = all(r.success for r in reports)
    create_markdown_artifact(
        key=key,
        markdown=markdown,
        description="Great Expectations: " + ("passed" if ok else "FAILED"),
    )
