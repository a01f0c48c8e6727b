"""Prefect retries what a retry can mend, and only that (a real Prefect server)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client

from tasks.ingest import plan_ingest
from tasks.retry import transient_only
from tasks.storage import StorageError

pytestmark = pytest.mark.integration


def _run_count(task_run_id: UUID | None) -> int:
    assert task_run_id is not None
    with get_client(sync_client=True) as client:
        return client.read_task_run(task_run_id).run_count


def test_a_missing_train_csv_fails_planning_once_not_three_times(
    prefect_server: str, tmp_path: Path
) -> None:
    (tmp_path / "raw").mkdir()

    @flow
    def plan() -> tuple[bool, str, UUID | None]:
        state = plan_ingest(str(tmp_path / "raw"), str(tmp_path / "out"), return_state=True)
        return state.is_failed(), str(state.message), state.state_details.task_run_id

    failed, message, task_run_id = plan()
    assert failed and "no train.csv" in message
    assert _run_count(task_run_id) == 1


def test_a_storage_outage_is_retried(prefect_server: str) -> None:
    calls: list[int] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=transient_only())
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise StorageError("cannot read s3://bucket/x: connection reset")
        return len(calls)

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=transient_only())
    def misconfigured() -> None:
        raise ValueError("epochs must be >= 1")

    @flow
    def both() -> list[tuple[bool, UUID | None]]:
        states = [flaky(return_state=True), misconfigured(return_state=True)]
        return [(s.is_completed(), s.state_details.task_run_id) for s in states]

    (mended, mended_id), (refused, refused_id) = both()
    assert mended and len(calls) == 3 and _run_count(mended_id) == 3
    assert not refused and _run_count(refused_id) == 1
