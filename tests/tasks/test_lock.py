"""The OUT lock against a real local directory and a real S3 endpoint (moto server, loopback):
one winner among contenders, a refusal naming the owner, takeover of an expired or dead
owner's lock, renewal past the first expiry, and a release that never deletes another's lock.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from mammo import contract as c
from mammo.lease import Lease, Owner
from tasks.lock import HeldLock, OutLockedError, acquire, confirm_held, this_owner
from tasks.storage import LocalStore, Store, open_store
from tests.support.servers import create_bucket

LOG = logging.getLogger("tests.lock")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "out")
    request.getfixturevalue("s3_endpoint")
    bucket = f"lock-{uuid.uuid4().hex[:12]}"
    create_bucket(bucket)
    return open_store(f"s3://{bucket}/out")


def take(store: Store, expiry_s: float = 30.0, wait_s: float = 0.0) -> HeldLock:
    return acquire(store, expiry_s=expiry_s, wait_s=wait_s, log=LOG)


def stored(store: Store) -> Lease | None:
    if not store.exists(c.INGEST_LOCK_FILE):
        return None
    return Lease.from_bytes(store.read_bytes(c.INGEST_LOCK_FILE))


def test_of_two_contenders_exactly_one_wins(store: Store) -> None:
    start = threading.Barrier(2)
    won: list[HeldLock] = []
    refused: list[OutLockedError] = []

    def contend() -> None:
        start.wait()
        try:
            won.append(take(store))
        except OutLockedError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    record = stored(store)
    assert record is not None and record.owner.token == won[0].record.owner.token
    won[0].release()
    assert stored(store) is None


def test_the_loser_waits_then_refuses_naming_the_owner_and_times(store: Store) -> None:
    holder = take(store)
    started = time.monotonic()
    with pytest.raises(OutLockedError) as refusal:
        take(store, wait_s=1.0)
    assert time.monotonic() - started >= 1.0
    message = str(refusal.value)
    assert "\n" not in message
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    iso = "%Y-%m-%dT%H:%M:%S+00:00"
    taken = time.strftime(iso, time.gmtime(int(holder.record.taken_at)))
    expires = time.strftime(iso, time.gmtime(int(holder.record.expires_at)))
    assert f"taken at {taken}" in message and f"expires at {expires}" in message
    assert "waited 1 s" in message and c.INGEST_LOCK_FILE in message
    holder.release()


def test_a_waiting_contender_gets_the_lock_once_it_is_released(store: Store) -> None:
    holder = take(store)
    threading.Timer(0.5, holder.release).start()
    second = take(store, wait_s=10.0)
    record = stored(store)
    assert record is not None and record.owner.token == second.record.owner.token
    second.release()


def test_an_expired_lock_is_taken_over_with_a_log_line_naming_the_old_owner(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    dead = take(store, expiry_s=0.5)  # never renewed, as if its process had died elsewhere
    time.sleep(0.6)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        second = take(store)
    assert second.record.owner.token != dead.record.owner.token
    [line] = [r.getMessage() for r in caplog.records if "Took over" in r.getMessage()]
    assert f"pid {os.getpid()} on {socket.gethostname()}" in line and "expired at" in line
    second.release()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    now = time.time()
    ours = this_owner()

    def plant(owner: Owner) -> None:
        store.delete(c.INGEST_LOCK_FILE)
        store.write_bytes(c.INGEST_LOCK_FILE, Lease.taken(owner, now, 600).to_bytes())

    plant(replace(ours, host="another-host", pid=child.pid))
    with pytest.raises(OutLockedError, match="another-host"):
        take(store)  # another machine's lock: only its expiry frees it

    plant(replace(ours, pid=child.pid, token="killed"))
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        held = take(store)
    assert any(f"its process {child.pid} is gone" in r.getMessage() for r in caplog.records)
    held.release()


def test_renewal_keeps_the_lock_alive_past_its_first_expiry(store: Store) -> None:
    holder = take(store, expiry_s=1.0)  # renewed every 0.25 s
    first_expiry = holder.record.expires_at
    holder.start_heartbeat()
    time.sleep(2.0)
    assert time.time() > first_expiry
    with pytest.raises(OutLockedError):
        take(store)
    record = stored(store)
    assert record is not None and record.owner.token == holder.record.owner.token
    assert record.expires_at > first_expiry and holder.lost is None
    holder.release()
    take(store).release()


def test_release_removes_only_our_own_lock(store: Store) -> None:
    first = take(store, expiry_s=0.3)
    time.sleep(0.4)
    second = take(store)  # took the expired lock over

    first.release()  # its token no longer matches: the lock stays second's
    record = stored(store)
    assert record is not None and record.owner.token == second.record.owner.token
    with pytest.raises(OutLockedError, match="lost"):
        first.renew()
    with pytest.raises(OutLockedError, match="no longer this run's"):
        confirm_held(store, first.record)
    confirm_held(store, second.record)

    second.release()
    assert stored(store) is None


def test_finalize_removes_no_temporary_file_without_the_lock(tmp_path: Path) -> None:
    from tasks.ingest import DecodeReport, IngestPlan, finalize_ingest

    store = LocalStore(tmp_path / "out")
    lost = take(store, expiry_s=0.3)
    time.sleep(0.4)
    other = take(store)
    leftover = store.root / c.SHARDS_DIR / ".part-0.parquet.tmp-x"  # perhaps another's write
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    plan = IngestPlan("raw", store.uri, "train", "plan", {}, 0, 0, 0, 0, 0)
    with pytest.raises(OutLockedError):
        finalize_ingest.fn(plan, DecodeReport(0, 0, 0, 0.0, 0.0, None), lost.record)
    assert leftover.exists()
    other.release()
