"""The lease record of the OUT lock: its bytes, its expiry, and when its owner counts as gone."""

from __future__ import annotations

import pytest

from mammo.lease import Lease, Owner, why_gone

OWNER = Owner("node-1", 4242, "f00d", "run-7", 1_700_000_000.25, "pid:[4026531836]")
LEASE = Lease.taken(OWNER, now=1_800_000_000.5, expiry_s=180.0)


def test_a_lease_survives_its_bytes_to_the_millisecond() -> None:
    assert Lease.from_bytes(LEASE.to_bytes()) == LEASE
    assert b'"expires_at": "2027-01-15T08:03:00.500+00:00"' in LEASE.to_bytes()


def test_renewal_moves_only_the_expiry() -> None:
    renewed = LEASE.renewed(LEASE.taken_at + 100)
    assert renewed.expires_at == LEASE.taken_at + 280 and renewed.taken_at == LEASE.taken_at
    assert LEASE.expired(LEASE.expires_at) and not LEASE.expired(LEASE.expires_at - 0.001)


def test_the_description_names_owner_run_and_times() -> None:
    assert LEASE.describe() == (
        "pid 4242 on node-1, flow run run-7, taken at 2027-01-15T08:00:00+00:00, "
        "expires at 2027-01-15T08:03:00+00:00 unless renewed"
    )


@pytest.mark.parametrize(
    ("host", "namespace", "started", "gone"),
    [
        ("node-1", OWNER.pid_namespace, OWNER.pid_started + 0.004, False),  # it runs
        ("node-1", OWNER.pid_namespace, None, True),  # no such process
        ("node-1", OWNER.pid_namespace, OWNER.pid_started + 3600, True),  # pid reused
        ("node-2", OWNER.pid_namespace, None, False),  # another host: only the expiry tells
        ("node-1", "pid:[4026532000]", None, False),  # another container: likewise
    ],
)
def test_an_unexpired_owner_is_gone_only_when_its_process_is(
    host: str, namespace: str, started: float | None, gone: bool
) -> None:
    reason = why_gone(LEASE, LEASE.taken_at + 1, host, namespace, started)
    assert (reason == "its process 4242 is gone") if gone else reason is None


def test_an_expired_lease_is_gone_wherever_it_is_read() -> None:
    reason = why_gone(LEASE, LEASE.expires_at, "node-2", "", None)
    assert reason == "expired at 2027-01-15T08:03:00+00:00"
