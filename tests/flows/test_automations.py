"""The automations as a user sets them up: `mammo automations` against the session's real
Prefect server (the same command `mammo up` runs for the local stack).

- a drift finding, published as the drift step publishes it, reaches a webhook receiver this
  test runs on 127.0.0.1, through the notification block and the automation;
- a `mammo run` driver killed with SIGKILL leaves no Running flow run: its heartbeats stop,
  and the automation sets the run Crashed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from mammo.drift import Finding, FindingKind, Severity
from mammo.drift_report import DriftReport
from tasks.automations import CRASH, DRIFT
from tests.support.data import make_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
HEARTBEAT_S, GRACE_S = 30, 45  # Prefect's shortest heartbeat period; the grace given


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def mammo(prefect_server: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mammo"), *args],
        env={**os.environ, "PREFECT_API_URL": prefect_server, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def automations(prefect_server: str, webhook: str) -> Iterator[str]:
    """Both automations on the session's server, removed afterwards: a 45 s grace would crash
    the other tests' flow runs, which beat every 180 s."""
    args = ["automations", "--drift-webhook", webhook, "--heartbeat-grace", str(GRACE_S)]
    done = mammo(prefect_server, *args)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    again = mammo(prefect_server, *args)  # idempotent: the same two, updated
    assert f"{CRASH}: updated" in again.stdout and f"{DRIFT}: updated" in again.stdout
    try:
        yield done.stdout
    finally:
        from prefect.automations import Automation

        for name in (CRASH, DRIFT):
            Automation.read(name=name).delete()


def test_the_command_names_both_automations(automations: str, webhook: str) -> None:
    assert f"{CRASH}: created (after {GRACE_S} s without a heartbeat)" in automations
    assert f"{DRIFT}: created -> webhook {webhook}" in automations


def test_a_drift_finding_reaches_the_webhook(automations: str) -> None:
    from tasks.monitor import _publish

    finding = Finding(
        FindingKind.NEW_VALUE, "machine_id", "machine_id=251", "images", 9.0, None, 9,
        Severity.WARNING, "9 image(s) with machine_id 251, never seen in the reference",
    )  # fmt: skip
    Receiver.received.clear()
    _publish(DriftReport("s3://archive/out", "mammo-cancer", "3", 100, 9, (finding,)))
    deadline = time.monotonic() + 60
    while not Receiver.received and time.monotonic() < deadline:
        time.sleep(1)
    assert Receiver.received, "no notification reached the webhook in 60 s"
    (message,) = Receiver.received
    assert message["subject"] == "mammo drift: mammo.drift.new-value on s3://archive/out"
    assert message["body"].startswith("warning: 9 image(s) with machine_id 251, never seen")
    assert "new-value:machine_id:machine_id=251" in message["body"]


def test_a_killed_driver_s_flow_run_ends_crashed(
    automations: str, prefect_server: str, ray_cluster: dict[str, object], tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    raw = make_raw(tmp_path / "raw", patients=12, seed=3)
    began = time.time()
    driver = subprocess.Popen(
        [str(BIN / "mammo"), "run", "--raw", str(raw), "--out", str(tmp_path / "out")],
        env={
            **os.environ,
            "PREFECT_API_URL": prefect_server,
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
            "RAY_ADDRESS": str(ray_cluster["address"]),
            "MAMMO_HOME": str(tmp_path / "home"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def tonight() -> str | None:
        """The state of the nightly run this driver started, once it exists."""
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"]))
            )
        ours = [r for r in runs if r.created and r.created.timestamp() >= began]
        return ours[0].state.name if ours and ours[0].state else None

    deadline = time.monotonic() + 120
    while tonight() != "Running" and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before it was killed"
        time.sleep(1)
    assert tonight() == "Running"
    time.sleep(5)  # its first heartbeat is sent as the run starts
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    deadline = time.monotonic() + GRACE_S + HEARTBEAT_S + 60
    while tonight() == "Running" and time.monotonic() < deadline:
        time.sleep(2)
    assert tonight() == "Crashed"


def test_a_saved_notification_block_can_carry_the_drift_alerts(
    automations: str, prefect_server: str, webhook: str
) -> None:
    """`--notify-block type-slug/name`, as with a Slack block, here a webhook block saved by
    hand; a block that is not there is one clear line."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name="alerts", url=webhook, json_data={"body": "{{body}}"}, headers=None, cookies=None
    ).save("mammo-alerts", overwrite=True)
    done = mammo(prefect_server, "automations", "--notify-block", "custom-webhook/mammo-alerts")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{DRIFT}: updated -> block custom-webhook/mammo-alerts" in done.stdout
    missing = mammo(prefect_server, "automations", "--notify-block", "slack-webhook/nowhere")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no notification block 'slack-webhook/nowhere'" in missing.stderr
