"""The nightly history: one record per nightly run, kept under OUT/monitor/nights/, and the
table of the last nights side by side (`mammo monitor`, and a Prefect table artifact).

A record is written however the night ends: a night that stopped at the metadata gate says
so, with the stage and the one-line error. Pure: tasks/history.py reads and writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

STAGES = ("metadata gate", "ingest", "decoded-set gate", "drift", "eda", "train", "promote")


@dataclass(frozen=True)
class NightRecord:
    started: str  # ISO 8601, UTC
    finished: str
    flow_run: str  # the Prefect flow run's name
    flow_run_id: str
    status: str  # "completed" or "failed"
    stage: str  # the last stage reached (STAGES)
    error: str = ""  # one line, when failed
    rows: int | None = None  # manifest images after the ingest
    new_files: int | None = None  # decoded tonight
    quarantine_rate: float | None = None  # quarantined inputs / CSV rows
    validation: str = ""  # "passed", "failed", or "" when not reached
    drift_warnings: int | None = None
    drift_critical: int | None = None
    challenger: str = ""  # the version registered tonight
    champion: str = ""  # the champion after the night
    decision: str = ""  # the promotion decision
    data_docs: str = ""  # the Great Expectations Data Docs of the decoded-set gate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NightRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def night_record(
    stages: dict[str, Any],
    *,
    started: str,
    finished: str,
    flow_run: str,
    flow_run_id: str,
    error: str = "",
) -> NightRecord:
    """The record of a night from what its stages returned (``stages``: stage -> result, in
    the order reached; a stage that raised is the last key, with None)."""
    ingest = stages.get("ingest") or {}
    drift = (stages.get("drift") or {}).get("counts") or {}
    trained = stages.get("train") or {}
    promoted = stages.get("promote") or {}
    csv_rows = ingest.get("csv_rows")
    last = list(stages)[-1] if stages else ""
    validation = ""
    if error and last in ("metadata gate", "decoded-set gate"):
        validation = "failed"
    elif "decoded-set gate" in stages:
        validation = "passed"
    return NightRecord(
        started=started,
        finished=finished,
        flow_run=flow_run,
        flow_run_id=flow_run_id,
        status="failed" if error else "completed",
        stage=last,
        error=error,
        rows=ingest.get("manifest_rows"),
        new_files=ingest.get("decoded_this_run"),
        quarantine_rate=(ingest.get("quarantined", 0) / csv_rows) if csv_rows else None,
        validation=validation,
        drift_warnings=drift.get("warning"),
        drift_critical=drift.get("critical"),
        challenger=str((trained.get("registered") or {}).get("version") or ""),
        champion=str(promoted.get("champion") or ""),
        decision=str(promoted.get("decision") or ""),
        data_docs=str((stages.get("decoded-set gate") or {}).get("data_docs") or ""),
    )


ROWS = (
    ("started", "started"),
    ("status", "status"),
    ("stage", "last stage"),
    ("rows", "images"),
    ("new_files", "new files"),
    ("quarantine_rate", "quarantine rate"),
    ("validation", "validation"),
    ("drift_warnings", "drift warnings"),
    ("drift_critical", "drift critical"),
    ("challenger", "challenger"),
    ("champion", "champion"),
    ("decision", "decision"),
    ("error", "error"),
)


def cell(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if key == "quarantine_rate":
        return f"{float(value):.1%}"
    if key == "started":
        return str(value)[:16].replace("T", " ")
    if key == "error":
        return str(value)[:40]
    return str(value)


def side_by_side(records: Sequence[NightRecord]) -> str:
    """The nights as columns (oldest first), one row per figure, as `mammo monitor` prints."""
    if not records:
        return "no nightly run recorded yet"
    table = [[label, *(cell(key, getattr(r, key)) for r in records)] for key, label in ROWS]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def table_rows(records: Sequence[NightRecord]) -> list[dict[str, str]]:
    """The same figures, one dict per night (newest first), for a Prefect table artifact."""
    return [{label: cell(key, getattr(r, key)) for key, label in ROWS} for r in reversed(records)]
