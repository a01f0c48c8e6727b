"""The exploratory metadata report as a pipeline step: written beside the data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from mammo import contract as c
from mammo.eda import MARKDOWN_FILE, metadata_report
from mammo.inventory import read_csv_table
from tasks.logs import run_logger
from tasks.retry import transient_only
from tasks.storage import open_store


@task(name="eda-report", retries=1, retry_condition_fn=transient_only())
def eda_report(raw: str, data: str) -> dict[str, float]:
    """Write OUT/eda/ (eda.md and its PNG plots) from RAW's train.csv; return the key figures."""
    name = c.csv_name(c.Subset.TRAIN)
    csv = read_csv_table(open_store(raw).read_bytes(name), name)
    out = open_store(data)
    with tempfile.TemporaryDirectory() as tmp:
        report = metadata_report(csv, Path(tmp))
        for path in Path(tmp).rglob("*"):
            if path.is_file():
                out.write_bytes(
                    f"{c.EDA_DIR}/{path.relative_to(tmp).as_posix()}", path.read_bytes()
                )
    where = f"{out.uri}/{c.EDA_DIR}/{MARKDOWN_FILE}"
    run_logger().info("EDA report: %s (%s)", where, report.notes or "complete")
    return report.figures
