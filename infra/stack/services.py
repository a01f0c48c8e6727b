"""How each service of the stack is started, and waited for until it answers.

Every service is a background process in its own session (``_spawn``), logging to
``STATE/logs/<service>.log``, with the stack's environment (``service_env``): the client
variables of env.sh, ``MAMMO_STACK_ID`` and nothing of the caller's ``AWS_*``, ``PREFECT_*``,
``RAY_*`` or ``MLFLOW_*``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infra.stack.config import STACK_MARK, WORKER_NAME, StackConfig, http_url, mammo_home
from infra.stack.probes import answers
from infra.stack.processes import LAUNCHED, read_pid, session_processes

# Variables of the caller that must not leak into the stack (real AWS profiles, another
# Prefect profile or Ray cluster): the stack sets its own.
_OWN_PREFIXES = ("AWS_", "PREFECT_", "RAY_", "MLFLOW_")
_LOG_TAIL_LINES = 40


class StackError(RuntimeError):
    """A service of the local stack could not start: why, and the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{service}: {reason}")


def _exe(name: str) -> str:
    """A console script of this interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise StackError(name, f"command {name!r} not found; install the project's dev extras")
    return found


def service_env(cfg: StackConfig) -> dict[str, str]:
    """The environment every service starts with (and the worker's flow runs inherit)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    bin_dir = str(Path(sys.executable).parent)
    return {
        **inherited,
        **cfg.client_env(),
        "PATH": os.pathsep.join([bin_dir, inherited.get("PATH", "")]),
        "MAMMO_HOME": str(mammo_home(os.environ)),  # absolute: flow runs start elsewhere
        "PREFECT_HOME": str(cfg.state_dir.absolute() / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_S3_ENDPOINT_URL": http_url(cfg.host, cfg.s3_port),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # GenAI jobs: 8 idle processes
        STACK_MARK: cfg.stack_id,
    }


def _failed(cfg: StackConfig, service: str, reason: str) -> StackError:
    path = cfg.log_path(service)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    return StackError(service, f"{reason} (log: {path})", "\n".join(lines[-_LOG_TAIL_LINES:]))


def _spawn(cfg: StackConfig, service: str, argv: list[str], env: Mapping[str, str]) -> int:
    """Start ``argv`` in a new session (its pid is the session id), logging to its file."""
    with cfg.log_path(service).open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cfg.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    LAUNCHED[proc.pid] = proc
    cfg.pid_path(service).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(cfg: StackConfig, service: str, since: datetime | None = None) -> None:
    deadline = time.monotonic() + cfg.start_timeout_s
    leader = read_pid(cfg, service)
    while time.monotonic() < deadline:
        if answers(cfg, service, since):
            return
        if leader is None or not session_processes(cfg, leader):
            raise _failed(cfg, service, "exited while starting")
        time.sleep(0.5)
    raise _failed(cfg, service, f"not ready after {cfg.start_timeout_s:.0f} s")


def _start_s3(cfg: StackConfig, env: Mapping[str, str]) -> None:
    _spawn(cfg, "s3", [_exe("moto_server"), "-H", cfg.host, "-p", str(cfg.s3_port)], env)
    _wait_ready(cfg, "s3")
    client = boto3.client(
        "s3",
        endpoint_url=cfg.urls()["s3"],
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        region_name=cfg.region,
    )
    try:
        client.create_bucket(Bucket=cfg.bucket)
    except (BotoCoreError, ClientError) as err:
        raise StackError("s3", f"cannot create bucket {cfg.bucket!r}: {err}") from err


def _start_prefect_server(cfg: StackConfig, env: Mapping[str, str]) -> None:
    """The UI finds the API at ``PREFECT_API_URL`` (else at port 4200, whatever ``--port``)."""
    argv = [_exe("prefect"), "server", "start", "--host", cfg.host]
    _spawn(cfg, "prefect-server", [*argv, "--port", str(cfg.prefect_port)], env)
    _wait_ready(cfg, "prefect-server")


def _start_prefect_worker(cfg: StackConfig, env: Mapping[str, str]) -> None:
    """Create the process work pool from infra/prefect/process-work-pool.json (an existing
    one is kept), then start its worker."""
    prefect = _exe("prefect")
    template = Path(__file__).resolve().parents[1] / "prefect" / "process-work-pool.json"
    pool = [prefect, "work-pool", "create", cfg.work_pool, "--type", "process"]
    pool += ["--base-job-template", str(template)]
    created = subprocess.run(
        pool, env=dict(env), capture_output=True, text=True, timeout=cfg.start_timeout_s
    )
    with cfg.log_path("prefect-worker").open("a") as log:
        log.write(created.stdout + created.stderr)
    if created.returncode != 0 and "already exists" not in created.stdout + created.stderr:
        raise _failed(cfg, "prefect-worker", f"cannot create work pool {cfg.work_pool!r}")
    since = datetime.now(UTC)
    worker = [prefect, "worker", "start", "--pool", cfg.work_pool, "--name", WORKER_NAME]
    _spawn(cfg, "prefect-worker", worker, env)
    _wait_ready(cfg, "prefect-worker", since)


def _start_ray(cfg: StackConfig, env: Mapping[str, str]) -> None:
    """``ray start --head`` launches the GCS, raylet, dashboard and agents, then exits; they
    stay in its session, whose id the pid file records."""
    argv = [
        _exe("ray"), "start", "--head", "--disable-usage-stats",
        "--node-ip-address", cfg.host, "--port", str(cfg.ray_port),
        "--dashboard-host", cfg.host, "--dashboard-port", str(cfg.ray_dashboard_port),
        "--metrics-export-port", str(cfg.ray_metrics_port),
        "--ray-client-server-port", str(cfg.ray_client_port),
        "--dashboard-agent-listen-port", str(cfg.ray_agent_port),
        "--temp-dir", str(cfg.ray_temp_dir),
    ]  # fmt: skip
    if cfg.ray_num_cpus is not None:
        argv += ["--num-cpus", str(cfg.ray_num_cpus)]
    if cfg.ray_object_store_mb is not None:
        argv += ["--object-store-memory", str(cfg.ray_object_store_mb * 1024 * 1024)]
    head_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    leader = _spawn(cfg, "ray", argv, head_env)
    try:
        code = LAUNCHED[leader].wait(timeout=cfg.start_timeout_s)
    except subprocess.TimeoutExpired:
        raise _failed(cfg, "ray", "ray start did not return") from None
    if code != 0:
        raise _failed(cfg, "ray", f"ray start exited with {code}")
    session_link = cfg.state_dir / "logs" / "ray-session"  # the GCS, raylet... logs
    session_link.unlink(missing_ok=True)
    session_link.symlink_to(cfg.ray_temp_dir / "session_latest" / "logs")
    _wait_ready(cfg, "ray")


def _start_mlflow(cfg: StackConfig, env: Mapping[str, str]) -> None:
    db = cfg.state_dir.absolute() / "mlflow.db"
    argv = [
        _exe("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", f"s3://{cfg.bucket}/mlflow",
        "--host", cfg.host, "--port", str(cfg.mlflow_port),
        "--workers", str(cfg.mlflow_workers),
    ]  # fmt: skip
    _spawn(cfg, "mlflow", argv, env)
    _wait_ready(cfg, "mlflow")


STARTERS: dict[str, Callable[[StackConfig, Mapping[str, str]], None]] = {
    "s3": _start_s3,
    "prefect-server": _start_prefect_server,
    "prefect-worker": _start_prefect_worker,
    "ray": _start_ray,
    "mlflow": _start_mlflow,
}
