"""The local stack behind ``mammo up`` / ``mammo down``: every service on loopback, with its UI.

``up`` starts, in this order, each as a background process in its own session:

1. ``s3``: moto's S3 server, then the bucket (created with boto3).
2. ``prefect-server``: ``prefect server start`` on SQLite under ``STATE/prefect``.
3. ``prefect-worker``: the ``process`` work pool, then ``prefect worker start`` with the
   stack's environment, so the flow runs it executes see ``RAY_ADDRESS``, ``AWS_*`` ...
4. ``ray``: a head node (``ray start --head``); its workers inherit the AWS variables.
5. ``mlflow``: ``mlflow server`` on SQLite, artifacts proxied to ``s3://BUCKET/mlflow``.

Each service logs to ``STATE/logs/<service>.log`` and records its session leader in
``STATE/<service>.pid``. Flows reach the stack only through the ecosystem's variables, written
to ``STATE/env.sh``. The S3 credentials there are fixed local-only values, never real ones.

Ray keeps token authentication on: its API runs arbitrary code, and loopback does not keep
other local users out. The token lives in ``STATE/ray/auth_token`` (mode 0600) and env.sh
points ``RAY_AUTH_TOKEN_PATH`` at it, so drivers, ``ray job`` and ``ray get-auth-token`` (whose
output the dashboard asks for once) use it; ``~/.ray/auth_token`` is left alone.
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from swapping 127.0.0.1 for the machine's
routable address, which would make the GCS and raylet listen on every interface.

Every service process carries ``MAMMO_STACK_ID=<state dir>`` in its environment. ``down``
stops the members of each recorded session, their descendants (flow runs start their own
sessions) and any stray process still carrying that mark. It never runs ``ray stop``, which
stops every Ray process of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
import psutil
from botocore.exceptions import BotoCoreError, ClientError

SERVICES = ("s3", "prefect-server", "prefect-worker", "ray", "mlflow")
STACK_MARK = "MAMMO_STACK_ID"  # set in every service's environment, never in env.sh
LOCAL_ACCESS_KEY = "mammo-local"  # moto accepts any key; these only ever reach loopback
LOCAL_SECRET_KEY = "mammo-local-secret"
# Variables of the caller that must not leak into the stack (real AWS profiles, another
# Prefect profile or Ray cluster): the stack sets its own.
_OWN_PREFIXES = ("AWS_", "PREFECT_", "RAY_", "MLFLOW_")
_WORKER_NAME = "mammo-local"
_LOG_TAIL_LINES = 40

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """A service of the local stack could not start: why, and the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{service}: {reason}")


def _mammo_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("MAMMO_HOME", ".mammo")).expanduser().absolute()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which loopback ports it uses."""

    state_dir: Path = field(default_factory=lambda: _mammo_home(os.environ) / "stack")
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    ray_port: int = 6379  # the GCS: RAY_ADDRESS
    ray_dashboard_port: int = 8265
    ray_metrics_port: int = 8090  # Prometheus endpoint of the head node
    ray_client_port: int = 10001  # Ray Client server; ray start always runs one
    ray_agent_port: int = 52365  # dashboard agent's HTTP port
    s3_port: int = 9000
    bucket: str = "mammo"
    ray_num_cpus: int | None = None  # None: all cores
    ray_object_store_mb: int | None = None  # None: Ray's default share of memory
    work_pool: str = "mammo-process"
    mlflow_workers: int = 1
    access_key: str = LOCAL_ACCESS_KEY
    secret_key: str = LOCAL_SECRET_KEY
    region: str = "us-east-1"
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        """Read ``MAMMO_HOME`` (state in ``MAMMO_HOME/stack``), ``MAMMO_STACK_HOST``, the
        ``MAMMO_*_PORT`` overrides, ``MAMMO_BUCKET``, ``MAMMO_RAY_NUM_CPUS`` and
        ``MAMMO_RAY_OBJECT_STORE_MB``; anything unset keeps its default."""
        env = os.environ if env is None else env
        d = cls(state_dir=Path())  # the defaults

        def number(var: str, default: int) -> int:
            return int(env[var]) if env.get(var) else default

        def optional(var: str) -> int | None:
            return int(env[var]) if env.get(var) else None

        return cls(
            state_dir=_mammo_home(env) / "stack",
            host=env.get("MAMMO_STACK_HOST") or d.host,
            prefect_port=number("MAMMO_PREFECT_PORT", d.prefect_port),
            mlflow_port=number("MAMMO_MLFLOW_PORT", d.mlflow_port),
            ray_port=number("MAMMO_RAY_PORT", d.ray_port),
            ray_dashboard_port=number("MAMMO_RAY_DASHBOARD_PORT", d.ray_dashboard_port),
            ray_metrics_port=number("MAMMO_RAY_METRICS_PORT", d.ray_metrics_port),
            ray_client_port=number("MAMMO_RAY_CLIENT_PORT", d.ray_client_port),
            ray_agent_port=number("MAMMO_RAY_AGENT_PORT", d.ray_agent_port),
            s3_port=number("MAMMO_S3_PORT", d.s3_port),
            bucket=env.get("MAMMO_BUCKET") or d.bucket,
            ray_num_cpus=optional("MAMMO_RAY_NUM_CPUS"),
            ray_object_store_mb=optional("MAMMO_RAY_OBJECT_STORE_MB"),
        )

    @property
    def stack_id(self) -> str:
        return str(self.state_dir.absolute())

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's session directory holds Unix sockets, whose paths must stay under 107
        bytes: a short directory in /tmp named after the state directory."""
        digest = hashlib.sha256(self.stack_id.encode()).hexdigest()[:10]
        return Path("/tmp") / f"mammo-ray-{digest}"

    @property
    def ray_token_path(self) -> Path:
        return self.state_dir / "ray" / "auth_token"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env.sh"

    def log_path(self, service: str) -> Path:
        return self.state_dir / "logs" / f"{service}.log"

    def pid_path(self, service: str) -> Path:
        return self.state_dir / f"{service}.pid"

    def urls(self) -> dict[str, str]:
        """The address each service answers on (the worker has none: its pool's page)."""
        prefect = _url(self.host, self.prefect_port)
        return {
            "s3": _url(self.host, self.s3_port),
            "prefect-server": prefect,
            "prefect-worker": f"{prefect}/work-pools/work-pool/{self.work_pool}",
            "ray": _url(self.host, self.ray_dashboard_port),
            "mlflow": _url(self.host, self.mlflow_port),
        }

    def client_env(self) -> dict[str, str]:
        """The variables flows and clients use to reach the stack: env.sh's content."""
        urls = self.urls()
        return {
            "PREFECT_API_URL": f"{urls['prefect-server']}/api",
            "RAY_ADDRESS": f"{self.host}:{self.ray_port}",
            "RAY_API_SERVER_ADDRESS": urls["ray"],  # `ray job ...` talks to the dashboard
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.ray_token_path.absolute()),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "MLFLOW_TRACKING_URI": urls["mlflow"],
            "AWS_ENDPOINT_URL_S3": urls["s3"],
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


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


# -- processes ---------------------------------------------------------------------------

# Popen objects of services this process started, kept so that they are reaped on stop and
# do not warn "still running" when garbage-collected.
_LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}


def _read_pid(cfg: StackConfig, service: str) -> int | None:
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


def _session_processes(cfg: StackConfig, leader: int) -> list[psutil.Process]:
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


def _marked_processes(cfg: StackConfig) -> list[psutil.Process]:
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


def _terminate(procs: Iterable[psutil.Process], timeout_s: float) -> None:
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
    for pid, popen in list(_LAUNCHED.items()):
        if popen.poll() is not None:
            del _LAUNCHED[pid]


def _stop_service(cfg: StackConfig, service: str) -> bool:
    leader = _read_pid(cfg, service)
    procs = _session_processes(cfg, leader) if leader is not None else []
    _terminate(procs, cfg.stop_timeout_s)
    cfg.pid_path(service).unlink(missing_ok=True)
    return bool(procs)


# -- probes ------------------------------------------------------------------------------


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


def _port_open(host: str, port: int) -> bool:
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
        worker.get("name") == _WORKER_NAME
        and worker.get("status") == "ONLINE"
        and worker.get("last_heartbeat_time")
        and (since is None or datetime.fromisoformat(worker["last_heartbeat_time"]) >= since)
        for worker in workers
    )


def _answers(cfg: StackConfig, service: str, since: datetime | None = None) -> bool:
    urls = cfg.urls()
    if service == "s3":
        return _http_status(urls["s3"]) is not None
    if service == "prefect-server":
        return _http_status(f"{urls['prefect-server']}/api/health") == 200
    if service == "prefect-worker":
        return _worker_online(cfg, since)
    if service == "ray":
        dashboard = _http_status(f"{urls['ray']}/api/version", _ray_auth(cfg))
        return dashboard == 200 and _port_open(cfg.host, cfg.ray_port)
    return _http_status(f"{urls['mlflow']}/health") == 200


def _ports(cfg: StackConfig, service: str) -> tuple[int, ...]:
    return {
        "s3": (cfg.s3_port,),
        "prefect-server": (cfg.prefect_port,),
        "prefect-worker": (),
        "ray": (
            cfg.ray_port,
            cfg.ray_dashboard_port,
            cfg.ray_metrics_port,
            cfg.ray_client_port,
            cfg.ray_agent_port,
        ),
        "mlflow": (cfg.mlflow_port,),
    }[service]


def _running(cfg: StackConfig, service: str) -> bool:
    leader = _read_pid(cfg, service)
    if leader is None or not _session_processes(cfg, leader):
        return False
    return _answers(cfg, service)


# -- starting ----------------------------------------------------------------------------


def _exe(name: str) -> str:
    """A console script of this interpreter's environment (the venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise StackError(name, f"command {name!r} not found; install the project's dev extras")
    return found


def _service_env(cfg: StackConfig) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    bin_dir = str(Path(sys.executable).parent)
    return {
        **inherited,
        **cfg.client_env(),
        "PATH": os.pathsep.join([bin_dir, inherited.get("PATH", "")]),
        "MAMMO_HOME": str(_mammo_home(os.environ)),  # absolute: flow runs start elsewhere
        "PREFECT_HOME": str(cfg.state_dir.absolute() / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_S3_ENDPOINT_URL": _url(cfg.host, cfg.s3_port),
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
    _LAUNCHED[proc.pid] = proc
    cfg.pid_path(service).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(cfg: StackConfig, service: str, since: datetime | None = None) -> None:
    deadline = time.monotonic() + cfg.start_timeout_s
    leader = _read_pid(cfg, service)
    while time.monotonic() < deadline:
        if _answers(cfg, service, since):
            return
        if leader is None or not _session_processes(cfg, leader):
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
    """Create the process work pool (an existing one is kept), then start its worker."""
    prefect = _exe("prefect")
    template = Path(__file__).resolve().parents[1] / "infra/prefect/process-work-pool.json"
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
    worker = [prefect, "worker", "start", "--pool", cfg.work_pool, "--name", _WORKER_NAME]
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
        code = _LAUNCHED[leader].wait(timeout=cfg.start_timeout_s)
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


_STARTERS: dict[str, Callable[[StackConfig, Mapping[str, str]], None]] = {
    "s3": _start_s3,
    "prefect-server": _start_prefect_server,
    "prefect-worker": _start_prefect_worker,
    "ray": _start_ray,
    "mlflow": _start_mlflow,
}


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _prepare(cfg: StackConfig) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (cfg.state_dir / "logs").mkdir(exist_ok=True)
    cfg.ray_token_path.parent.mkdir(exist_ok=True, mode=0o700)
    if not cfg.ray_token_path.exists() or not cfg.ray_token_path.read_text().strip():
        _write_private(cfg.ray_token_path, secrets.token_hex(32))  # 256 bits, as Ray's own


def _write_env_file(cfg: StackConfig) -> None:
    lines = ["# The local stack (`mammo up`). Local-only credentials: never real ones."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in cfg.client_env().items()]
    _write_private(cfg.env_file, "\n".join(lines) + "\n")


def _echo_stderr(line: str) -> None:
    print(line, file=sys.stderr)


# -- the commands --------------------------------------------------------------------------


def up(cfg: StackConfig, echo: Echo = _echo_stderr) -> StackInfo:
    """Start the services that are not running, in order (S3, Prefect server, Prefect
    worker, Ray, MLflow); leave running ones alone; write env.sh.

    A service whose session is alive but does not answer is restarted. A port held by some
    other program is an error. If a service fails to start, what this call started is
    stopped again and :class:`StackError` carries the tail of the failing service's log."""
    _prepare(cfg)
    env = _service_env(cfg)
    started: list[str] = []
    try:
        for service in SERVICES:
            if _running(cfg, service):
                echo(f"{service:<15} already running")
                continue
            _stop_service(cfg, service)
            busy = [p for p in _ports(cfg, service) if _port_open(cfg.host, p)]
            if busy:
                raise StackError(service, f"port(s) {busy} on {cfg.host} held by another program")
            began = time.monotonic()
            started.append(service)
            _STARTERS[service](cfg, env)
            echo(f"{service:<15} started in {time.monotonic() - began:4.1f} s")
    except BaseException as err:  # Ctrl-C included: stop what this call started, re-raise
        if isinstance(err, StackError) and err.log_tail:
            echo(f"{err.service} failed: {err.reason}\n{err.log_tail}")
        for service in reversed(started):
            _stop_service(cfg, service)
        raise
    _write_env_file(cfg)
    urls = cfg.urls()
    return StackInfo(
        prefect_ui=urls["prefect-server"],
        ray_dashboard=urls["ray"],
        mlflow_ui=urls["mlflow"],
        s3_endpoint=urls["s3"],
        ray_metrics=_url(cfg.host, cfg.ray_metrics_port),
        env=cfg.client_env(),
        env_file=cfg.env_file,
        started=tuple(started),
    )


def down(cfg: StackConfig) -> list[str]:
    """Stop the services in reverse order, then any stray process carrying the stack's
    mark; remove the pid files. Returns what was stopped (services, then strays)."""
    stopped = [service for service in reversed(SERVICES) if _stop_service(cfg, service)]
    strays = _marked_processes(cfg)
    stopped += [f"stray process {p.pid}" for p in strays]
    _terminate(strays, cfg.stop_timeout_s)
    return stopped


def status(cfg: StackConfig) -> dict[str, str]:
    """Each service: ``running``, ``not answering`` (alive but not ready) or ``stopped``,
    followed by its URL."""
    result = {}
    for service, url in cfg.urls().items():
        leader = _read_pid(cfg, service)
        if leader is None or not _session_processes(cfg, leader):
            state = "stopped"
        else:
            state = "running" if _answers(cfg, service) else "not answering"
        result[service] = f"{state} {url}"
    return result
