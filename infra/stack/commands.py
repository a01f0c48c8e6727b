"""``up``, ``down`` and ``status``: what ``mammo up`` / ``mammo down`` / ``mammo status``
run, and :class:`StackInfo`, what ``up`` gives back."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from infra.stack.config import SERVICES, StackConfig, http_url
from infra.stack.probes import answers, port_open, running
from infra.stack.processes import (
    marked_processes,
    read_pid,
    session_processes,
    stop_service,
    terminate,
)
from infra.stack.services import STARTERS, StackError, service_env
from infra.stack.state import prepare, write_env_file

Echo = Callable[[str], None]


@dataclass(frozen=True)
class StackInfo:
    """What ``up`` gives back: the UIs, the client environment and where env.sh is."""

    prefect_ui: str
    ray_dashboard: str
    mlflow_ui: str
    s3_endpoint: str
    ray_metrics: str
    env: Mapping[str, str]
    env_file: Path
    started: tuple[str, ...]  # services this call started; the others were already up

    def describe(self) -> str:
        return "\n".join(
            [
                f"Prefect UI      {self.prefect_ui}",
                f"Ray dashboard   {self.ray_dashboard}  (its token: `ray get-auth-token`)",
                f"Ray metrics     {self.ray_metrics}/metrics",
                f"MLflow UI       {self.mlflow_ui}",
                f"S3 endpoint     {self.s3_endpoint}",
                "",
                "Point your shell at the stack with:",
                f"  source {shlex.quote(str(self.env_file))}",
            ]
        )


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def up(cfg: StackConfig, echo: Echo = _echo_stderr) -> StackInfo:
    """Start the services that are not running, in order (S3, Prefect server, Prefect
    worker, Ray, MLflow); leave running ones alone; write env.sh.

    A service whose session is alive but does not answer is restarted. A port held by some
    other program is an error. If a service fails to start, what this call started is
    stopped again and :class:`StackError` carries the tail of the failing service's log."""
    prepare(cfg)
    env = service_env(cfg)
    started: list[str] = []
    try:
        for service in SERVICES:
            if running(cfg, service):
                echo(f"{service:<15} already running")
                continue
            stop_service(cfg, service)
            busy = [p for p in cfg.ports(service) if port_open(cfg.host, p)]
            if busy:
                raise StackError(service, f"port(s) {busy} on {cfg.host} held by another program")
            began = time.monotonic()
            started.append(service)
            STARTERS[service](cfg, env)
            echo(f"{service:<15} started in {time.monotonic() - began:4.1f} s")
    except BaseException as err:  # Ctrl-C included: stop what this call started, re-raise
        if isinstance(err, StackError) and err.log_tail:
            echo(f"{err.service} failed: {err.reason}\n{err.log_tail}")
        for service in reversed(started):
            stop_service(cfg, service)
        raise
    write_env_file(cfg)
    urls = cfg.urls()
    return StackInfo(
        prefect_ui=urls["prefect-server"],
        ray_dashboard=urls["ray"],
        mlflow_ui=urls["mlflow"],
        s3_endpoint=urls["s3"],
        ray_metrics=http_url(cfg.host, cfg.ray_metrics_port),
        env=cfg.client_env(),
        env_file=cfg.env_file,
        started=tuple(started),
    )


def down(cfg: StackConfig) -> list[str]:
    """Stop the services in reverse order, then any stray process carrying the stack's
    mark; remove the pid files. Returns what was stopped (services, then strays)."""
    stopped = [service for service in reversed(SERVICES) if stop_service(cfg, service)]
    strays = marked_processes(cfg)
    stopped += [f"stray process {p.pid}" for p in strays]
    terminate(strays, cfg.stop_timeout_s)
    return stopped


def status(cfg: StackConfig) -> dict[str, str]:
    """Each service: ``running``, ``not answering`` (alive but not ready) or ``stopped``,
    followed by its URL."""
    result = {}
    for service, url in cfg.urls().items():
        leader = read_pid(cfg, service)
        if leader is None or not session_processes(cfg, leader):
            state = "stopped"
        else:
            state = "running" if answers(cfg, service) else "not answering"
        result[service] = f"{state} {url}"
    return result
