"""Night records from what the stages returned, and the side-by-side table."""

from __future__ import annotations

from mammo.history import NightRecord, night_record, side_by_side, table_rows

TIMES = {"started": "2026-12-07T01:00:00Z", "finished": "2026-12-07T01:30:00Z"}
COMPLETE = {
    "metadata gate": {"evaluated": 30},
    "ingest": {"csv_rows": 200, "manifest_rows": 196, "quarantined": 4, "decoded_this_run": 20},
    "decoded-set gate": {
        "manifest_hash": "ab",
        "data_docs": "out/validation/data-docs/t/index.html",
    },
    "drift": {"counts": {"warning": 2, "critical": 1}},
    "eda": {},
    "train": {"registered": {"version": "7"}},
    "promote": {"decision": "refused", "champion": "6", "challenger": "7"},
}


def record(stages: dict[str, object], error: str = "") -> NightRecord:
    return night_record(stages, flow_run="calm-fox", flow_run_id="f" * 36, error=error, **TIMES)


def test_a_complete_night_records_every_figure() -> None:
    night = record(COMPLETE)
    assert (night.status, night.stage, night.validation) == ("completed", "promote", "passed")
    assert (night.rows, night.new_files, night.quarantine_rate) == (196, 20, 0.02)
    assert (night.drift_warnings, night.drift_critical) == (2, 1)
    assert (night.challenger, night.champion, night.decision) == ("7", "6", "refused")
    assert night.data_docs == "out/validation/data-docs/t/index.html"
    assert NightRecord.from_dict({**night.to_dict(), "added_later": 1}) == night


def test_a_night_stopped_at_a_gate_says_where_and_why() -> None:
    stopped = record({"metadata gate": None}, error="DataValidationError: age out of range")
    assert (stopped.status, stopped.stage, stopped.validation) == (
        "failed",
        "metadata gate",
        "failed",
    )
    assert stopped.rows is None and stopped.decision == ""
    decoded = record({**dict(list(COMPLETE.items())[:2]), "decoded-set gate": None}, error="x")
    assert decoded.validation == "failed" and decoded.rows == 196
    trained = record({**dict(list(COMPLETE.items())[:5]), "train": None}, error="TrainingError")
    assert (trained.stage, trained.validation, trained.challenger) == ("train", "passed", "")


def test_nights_are_columns_oldest_first() -> None:
    nights = [record(COMPLETE), record({"metadata gate": None}, error="DataValidationError")]
    lines = side_by_side(nights).splitlines()
    rows = {line.split("  ")[0]: line.split() for line in lines}
    assert rows["status"][1:] == ["completed", "failed"]
    assert rows["quarantine rate"][2:] == ["2.0%", "-"]
    assert rows["decision"][1:] == ["refused", "-"]
    status, decision = (next(x for x in lines if x.startswith(k)) for k in ("status", "decision"))
    assert status.index("completed") == decision.index("refused")  # columns aligned
    assert table_rows(nights)[0]["status"] == "failed"  # newest first
    assert side_by_side([]) == "no nightly run recorded yet"
