"""The OUT lock: one ingest at a time per output location, a lease object in the store.

``OUT/_lock/ingest.json`` (a :class:`mammo.lease.Lease`) is created only if absent
(``If-None-Match: *`` on S3; locally an exclusive ``os.link`` of a whole temporary file),
renewed by a heartbeat and deleted on exit by compare-and-swap (``If-Match`` on the ETag; a
``flock``-guarded compare and ``os.replace``): never over another owner's lock. Each write
is read back, for stores that ignore the conditions. A SIGKILLed owner's lock expires
(``MAMMO_INGEST_LOCK_EXPIRY_S``), at once if its pid is gone from this host; a contender
waits ``MAMMO_INGEST_LOCK_WAIT_S``, then refuses with :class:`OutLockedError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from mammo import contract as c
from mammo.lease import Lease, Owner, iso_utc, refusal, why_gone
from tasks.logs import run_logger
from tasks.settings import Settings
from tasks.storage import LocalStore, S3Store, StorageError, Store, join_uri, open_store

POLL_S = 0.5  # how often a waiting contender looks again
Logger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]


class OutLockedError(StorageError):
    """Another ingest holds (or took over) the lock of this OUT."""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def this_owner() -> Owner:
    from prefect.runtime import flow_run

    run_id = str(flow_run.id) if flow_run.id else None
    host, pid, token = socket.gethostname(), os.getpid(), secrets.token_hex(16)
    started = round(psutil.Process().create_time(), 2)
    return Owner(host, pid, token, run_id, started, _pid_namespace())


def _started(owner: Owner) -> float | None:
    """When the process with ``owner``'s pid started on this host; ``None``: there is none."""
    try:
        process = psutil.Process(owner.pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return owner.pid_started  # cannot tell: taken as alive, so only its expiry frees it


class _LocalLock:
    def __init__(self, store: LocalStore, relpath: str) -> None:
        self.path = store.root / relpath
        self.uri = str(self.path)

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """Compare-then-write under an exclusive ``flock`` of ``<lock>.guard``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".guard"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _staged(self, data: bytes) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent)
        os.write(fd, data)  # a few hundred bytes: one write
        os.fsync(fd)
        os.close(fd)
        return Path(tmp)

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str | None:
        with self._guarded():
            tmp = self._staged(data)
            try:
                os.link(tmp, self.path)  # exclusive, like O_CREAT | O_EXCL, and whole
            except FileExistsError:
                return None
            finally:
                tmp.unlink()
        return hashlib.sha256(data).hexdigest()

    def _swap(self, version: str, data: bytes | None) -> bool:
        """Replace (or with no ``data``, delete) the lock if it still is ``version``."""
        with self._guarded():
            current = self.read()
            if current is None or current[1] != version:
                return False
            if data is None:
                self.path.unlink()
            else:
                os.replace(self._staged(data), self.path)
        return True

    def replace(self, data: bytes, version: str) -> str | None:
        return hashlib.sha256(data).hexdigest() if self._swap(version, data) else None

    def delete(self, version: str) -> bool:
        return self._swap(version, None)


class _S3Lock:
    LOST = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404")

    def __init__(self, store: S3Store, relpath: str) -> None:
        self.store = store
        self.key = f"{store.prefix}/{relpath}" if store.prefix else relpath
        self.uri = join_uri(store.uri, relpath)

    def _call(self, action: str, **kwargs: Any) -> dict[str, Any] | None:
        """The request's answer, or ``None`` when its condition failed."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self.store.client, action)
        try:
            return dict(method(Bucket=self.store.bucket, Key=self.key, **kwargs))
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"]["Code"] in self.LOST:
                return None
            raise StorageError(f"S3 {action} failed for {self.uri}: {exc}") from exc

    def read(self) -> tuple[bytes, str] | None:
        answer = self._call("get_object")
        return None if answer is None else (bytes(answer["Body"].read()), answer["ETag"])

    def _put(self, data: bytes, **condition: str) -> str | None:
        answer = self._call("put_object", Body=data, **condition)
        return None if answer is None else str(answer["ETag"])

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: str) -> str | None:
        return self._put(data, IfMatch=version)

    def delete(self, version: str) -> bool:
        return self._call("delete_object", IfMatch=version) is not None


_Lock = _LocalLock | _S3Lock  # the lock object in one store; a version is what writes compare


def _backend(store: Store) -> _Lock:
    if isinstance(store, LocalStore):
        return _LocalLock(store, c.INGEST_LOCK_FILE)
    if isinstance(store, S3Store):
        return _S3Lock(store, c.INGEST_LOCK_FILE)
    raise TypeError(f"no lock for a store of type {type(store).__name__}")


def _confirmed(backend: _Lock, data: bytes, version: str | None) -> str | None:
    """``version`` if the store now holds ``data`` (a store may ignore the condition)."""
    current = backend.read() if version else None
    return version if current is not None and current[0] == data else None


class HeldLock:
    """A lock this process took: renewed by :meth:`start_heartbeat` until :meth:`release`."""

    def __init__(self, backend: _Lock, record: Lease, version: str, log: Logger) -> None:
        self.backend, self.record, self.version, self.log = backend, record, version, log
        self.lost: str | None = None  # why the lock is no longer ours
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def renew(self) -> None:
        """Push the expiry forward; :class:`OutLockedError` if another owner has it now."""
        with self._mutex:
            if self.lost is None:
                record = self.record.renewed(time.time())
                data = record.to_bytes()
                version = _confirmed(self.backend, data, self.backend.replace(data, self.version))
                if version is None:
                    current = read_lock(self.backend)
                    self.lost = current[0].describe() if current else "the lock was deleted"
                else:
                    self.record, self.version = record, version
            if self.lost is not None:
                raise OutLockedError(f"the lock on {self.backend.uri} was lost: {self.lost}")

    def start_heartbeat(self) -> None:
        interval = max(self.record.expiry_s / 4, 0.05)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except OutLockedError as exc:
                    self.log.error("%s; stopping the heartbeat", exc)
                    return
                except StorageError as exc:  # transient: the next beat tries again
                    self.log.warning("could not renew the lock on %s: %s", self.backend.uri, exc)

        self._beat = threading.Thread(target=beat, name="out-lock-heartbeat", daemon=True)
        self._beat.start()

    def release(self) -> None:
        """Stop renewing; delete the lock if it is still ours (never another owner's)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with self._mutex:
            try:
                if self.lost is None and not self.backend.delete(self.version):
                    self.log.warning("the lock on %s is no longer ours: left", self.backend.uri)
            except StorageError as exc:
                self.log.warning("%s; the lock expires at %s", exc, iso_utc(self.record.expires_at))


def read_lock(backend: _Lock) -> tuple[Lease, str] | None:
    """The lease in the store and its version; ``None`` when there is none."""
    current = backend.read()
    if current is None:
        return None
    try:
        return Lease.from_bytes(current[0]), current[1]
    except (ValueError, KeyError, TypeError) as exc:
        raise OutLockedError(
            f"the lock {backend.uri} cannot be read ({exc}); delete it if no ingest is running"
        ) from exc


def acquire(store: Store, expiry_s: float, wait_s: float, log: Logger | None = None) -> HeldLock:
    """Take the lock of ``store``, waiting up to ``wait_s`` for a live owner to release it;
    take it over from a dead one. :class:`OutLockedError` names the owner that kept it."""
    log = log or run_logger()
    backend, owner = _backend(store), this_owner()
    deadline, waiting = time.monotonic() + wait_s, False
    while True:
        now = time.time()
        record = Lease.taken(owner, now, expiry_s)
        data = record.to_bytes()
        version = _confirmed(backend, data, backend.create(data))
        current = read_lock(backend) if version is None else None
        if current is not None:
            theirs = current[0]
            dead = why_gone(theirs, now, owner.host, owner.pid_namespace, _started(theirs.owner))
            if dead is not None:
                version = _confirmed(backend, data, backend.replace(data, current[1]))
                if version is None:
                    continue  # someone else changed it first: look again
                log.warning("Took over %s from %s (%s)", backend.uri, theirs.describe(), dead)
            elif time.monotonic() >= deadline:
                raise OutLockedError(refusal(store.uri, backend.uri, theirs, wait_s))
            elif not waiting:
                log.info("Waiting up to %g s for the lock held by %s", wait_s, theirs.describe())
                waiting = True
        if version is not None:
            return HeldLock(backend, record, version, log)
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.05)))


@contextlib.contextmanager
def out_lock(out: str, settings: Settings) -> Iterator[Lease]:
    """Hold the lock of OUT, renewed, for the ``with`` block; yields the lease to check."""
    held = acquire(open_store(out), settings.ingest_lock_expiry_s, settings.ingest_lock_wait_s)
    held.start_heartbeat()
    try:
        yield held.record
    finally:
        held.release()


def confirm_held(store: Store, lease: Lease) -> None:
    """Raise :class:`OutLockedError` unless the lock of ``store`` is still ``lease``'s."""
    current = read_lock(_backend(store))
    if current is None or current[0].owner.token != lease.owner.token:
        held_by = current[0].describe() if current else "nobody"
        raise OutLockedError(f"the lock on {store.uri} is no longer this run's: {held_by}")
