"""The stack's processes: pid files, the sessions they name, the mark every service carries,
and stopping them.

Each service runs in its own session, whose leader's pid ``STATE/<service>.pid`` records. A
session counts as the stack's only while one of its processes carries ``MAMMO_STACK_ID=<state
dir>`` in its environment, so a stale pid file never points at someone else's processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

import psutil

from infra.stack.config import STACK_MARK, StackConfig

# Popen objects of services this process started, kept so that they are reaped on stop and
# do not warn "still running" when garbage-collected.
LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}


def read_pid(cfg: StackConfig, service: str) -> int | None:
    try:
        return int(cfg.pid_path(service).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _carries_mark(proc: psutil.Process, stack_id: str) -> bool:
    try:
        return bool(proc.environ().get(STACK_MARK) == stack_id)
    except psutil.Error:
        return False  # gone, another user's, or its environ was overwritten (setproctitle)


def _protected() -> set[int]:
    """This process and its ancestors: ``down`` run from inside a flow run must survive."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def session_processes(cfg: StackConfig, leader: int) -> list[psutil.Process]:
    """Live processes of the session ``leader`` started, with all their descendants.

    The session counts only if one of its processes carries this stack's mark, so a pid
    file that outlived a reboot never points ``down`` at someone else's processes."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == leader and _alive(proc):
                members.append(proc)
        except OSError:
            continue
    if not any(_carries_mark(p, cfg.stack_id) for p in members):
        return []
    found = {p.pid: p for p in members}
    for proc in members:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    protected = _protected()
    return [p for pid, p in found.items() if pid not in protected and _alive(p)]


def marked_processes(cfg: StackConfig) -> list[psutil.Process]:
    """Every live process carrying this stack's mark (this process and its ancestors
    excepted), whatever its session."""
    protected = _protected()
    return [
        p
        for p in psutil.process_iter()
        if p.pid not in protected and _alive(p) and _carries_mark(p, cfg.stack_id)
    ]


def _stop_rank(proc: psutil.Process) -> int:
    """Ray's own stop order: raylets first, the GCS last (it waits for them otherwise)."""
    try:
        name = proc.name()
    except psutil.Error:
        return 1
    return {"raylet": 0, "gcs_server": 2}.get(name, 1)


def terminate(procs: Iterable[psutil.Process], timeout_s: float) -> None:
    """SIGTERM by rank, wait up to ``timeout_s`` for each rank, then SIGKILL what is left."""
    by_rank: dict[int, list[psutil.Process]] = {}
    for proc in procs:
        by_rank.setdefault(_stop_rank(proc), []).append(proc)
    for rank in sorted(by_rank):
        group = by_rank[rank]
        for proc in group:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(group, timeout=timeout_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=5)
    for pid, popen in list(LAUNCHED.items()):
        if popen.poll() is not None:
            del LAUNCHED[pid]


def stop_service(cfg: StackConfig, service: str) -> bool:
    """Stop the session recorded for ``service`` and remove its pid file; whether anything
    was running."""
    leader = read_pid(cfg, service)
    procs = session_processes(cfg, leader) if leader is not None else []
    terminate(procs, cfg.stop_timeout_s)
    cfg.pid_path(service).unlink(missing_ok=True)
    return bool(procs)
