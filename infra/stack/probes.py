"""Whether a service of the stack answers: HTTP health endpoints, open ports, the Prefect
worker's heartbeat."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime

from infra.stack.config import WORKER_NAME, StackConfig
from infra.stack.processes import read_pid, session_processes


def _http_status(url: str, headers: Mapping[str, str] | None = None) -> int | None:
    """The HTTP status ``url`` answers with; None when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _ray_auth(cfg: StackConfig) -> dict[str, str]:
    if not cfg.ray_token_path.exists():
        return {}
    return {"Authorization": f"Bearer {cfg.ray_token_path.read_text().strip()}"}


def _worker_online(cfg: StackConfig, since: datetime | None = None) -> bool:
    """The pool's worker has sent a heartbeat (after ``since``, when given)."""
    url = f"{cfg.client_env()['PREFECT_API_URL']}/work_pools/{cfg.work_pool}/workers/filter"
    request = urllib.request.Request(
        url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            workers = json.load(response)
    except (OSError, ValueError):
        return False
    return any(
        worker.get("name") == WORKER_NAME
        and worker.get("status") == "ONLINE"
        and worker.get("last_heartbeat_time")
        and (since is None or datetime.fromisoformat(worker["last_heartbeat_time"]) >= since)
        for worker in workers
    )


def answers(cfg: StackConfig, service: str, since: datetime | None = None) -> bool:
    """``service`` is ready: S3 answers at all, Prefect's and MLflow's health endpoints say
    200, the worker is online, Ray's dashboard answers (with the token) and the GCS port is
    open."""
    urls = cfg.urls()
    if service == "s3":
        return _http_status(urls["s3"]) is not None
    if service == "prefect-server":
        return _http_status(f"{urls['prefect-server']}/api/health") == 200
    if service == "prefect-worker":
        return _worker_online(cfg, since)
    if service == "ray":
        dashboard = _http_status(f"{urls['ray']}/api/version", _ray_auth(cfg))
        return dashboard == 200 and port_open(cfg.host, cfg.ray_port)
    return _http_status(f"{urls['mlflow']}/health") == 200


def running(cfg: StackConfig, service: str) -> bool:
    """The recorded session of ``service`` is alive and the service answers."""
    leader = read_pid(cfg, service)
    if leader is None or not session_processes(cfg, leader):
        return False
    return answers(cfg, service)
