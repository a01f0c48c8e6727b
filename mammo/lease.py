"""The record of a time-limited lock (a lease): who holds it, since when, until when.

``tasks/lock.py`` keeps one per OUT in the store (``contract.INGEST_LOCK_FILE``), so that
one ingest at a time writes there. Times are seconds since the epoch on the owner's clock,
written as ISO 8601 UTC with milliseconds; hosts that share an OUT need synchronized clocks
(NTP), as an expiry is compared with the reader's clock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str  # random, per acquisition: what renewal, release and checks compare
    flow_run_id: str | None  # the Prefect flow run that took it, if any
    pid_started: float  # the process's start time: a reused pid is another process
    pid_namespace: str  # pids compare only within one namespace (containers)

    def describe(self) -> str:
        run = f", flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"pid {self.pid} on {self.host}{run}"


@dataclass(frozen=True)
class Lease:
    owner: Owner
    taken_at: float
    expires_at: float
    expiry_s: float  # each renewal sets expires_at to now + expiry_s

    @classmethod
    def taken(cls, owner: Owner, now: float, expiry_s: float) -> Lease:
        return cls(owner, now, now + expiry_s, expiry_s)

    def renewed(self, now: float) -> Lease:
        return replace(self, expires_at=now + self.expiry_s)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self) -> str:
        return (
            f"{self.owner.describe()}, taken at {iso_utc(self.taken_at)}, "
            f"expires at {iso_utc(self.expires_at)} unless renewed"
        )

    def to_bytes(self) -> bytes:
        fields = {
            **asdict(self),
            "taken_at": iso_utc(self.taken_at, "milliseconds"),
            "expires_at": iso_utc(self.expires_at, "milliseconds"),
        }
        return json.dumps(fields, indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Lease:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` for anything but a lease."""
        fields = json.loads(data)
        return cls(
            owner=Owner(**fields["owner"]),
            taken_at=datetime.fromisoformat(fields["taken_at"]).timestamp(),
            expires_at=datetime.fromisoformat(fields["expires_at"]).timestamp(),
            expiry_s=float(fields["expiry_s"]),
        )


def why_gone(
    lease: Lease, now: float, host: str, pid_namespace: str, started: float | None
) -> str | None:
    """Why ``lease``'s owner no longer holds it, or ``None`` while it may be alive.

    ``host`` and ``pid_namespace`` are the reader's; ``started`` is when the process with
    the owner's pid started on the reader's host (``None``: there is none). A pid is only
    looked at on the owner's own host and namespace; elsewhere only the expiry tells.
    """
    if lease.expired(now):
        return f"expired at {iso_utc(lease.expires_at)}"
    owner = lease.owner
    if (owner.host, owner.pid_namespace) != (host, pid_namespace):
        return None
    if started is not None and abs(started - owner.pid_started) <= 1.0:  # not a reused pid
        return None
    return f"its process {owner.pid} is gone"


def iso_utc(seconds: float, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec=timespec)


def refusal(out: str, lock: str, holder: Lease, waited_s: float) -> str:
    """The one-line message of an ingest that gave up waiting for ``holder``."""
    return (
        f"another ingest is writing to {out}: the lock {lock} is held by {holder.describe()}; "
        f"waited {waited_s:g} s. Wait for that ingest to finish; if it died, run again once "
        "the lock has expired, or delete the lock by hand (docs/reliability.md, The OUT lock)"
    )
