"""The local stack (``mammo up`` / ``mammo down``) on free loopback ports in a temporary state
directory. The stack starts once for the module; ``down`` runs at the end even on failure."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import psutil
import pytest

from infra.stack import SERVICES, STACK_MARK, StackConfig, StackError, StackInfo, down, status, up
from tests.support.servers import free_port

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
PORT_FIELDS = (
    "prefect_port",
    "mlflow_port",
    "ray_port",
    "ray_dashboard_port",
    "ray_metrics_port",
    "ray_client_port",
    "ray_agent_port",
    "s3_port",
)
DAEMONS = {"moto_server", "prefect", "gcs_server", "raylet", "mlflow"}  # process names
STANDARD_VARIABLES = {
    "PREFECT_API_URL",
    "RAY_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


def _test_config(state_dir: Path, bucket: str = "mammo") -> StackConfig:
    """A small stack (1 CPU, 200 MB object store) on distinct free ports."""
    ports: set[int] = set()
    while len(ports) < len(PORT_FIELDS):
        ports.add(free_port())
    prefect, mlflow, ray, dashboard, metrics, client, agent, s3 = sorted(ports)
    return StackConfig(
        state_dir=state_dir,
        prefect_port=prefect,
        mlflow_port=mlflow,
        ray_port=ray,
        ray_dashboard_port=dashboard,
        ray_metrics_port=metrics,
        ray_client_port=client,
        ray_agent_port=agent,
        s3_port=s3,
        bucket=bucket,
        ray_num_cpus=1,
        ray_object_store_mb=200,
        start_timeout_s=180,
    )


def _walk(cfg: StackConfig) -> dict[int, psutil.Process]:
    """Every live process in a session recorded by a pid file, and all their descendants."""
    leaders = {int(p.read_text()) for p in cfg.state_dir.glob("*.pid")}
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in leaders:
                found[proc.pid] = proc
        except OSError:
            continue
    for proc in list(found.values()):
        try:
            found.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.Error:
            continue
    return found


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie counts), or its pid now belongs to another process."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _marked(cfg: StackConfig) -> list[int]:
    pids = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(STACK_MARK) == cfg.stack_id and not _gone(proc):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def _status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _run_with_env_sh(info: StackInfo, script: str, *args: str) -> dict[str, object]:
    """Run ``script`` in a clean shell that only sourced env.sh; its last line is JSON."""
    command = 'source "$1" && shift && exec "$@"'
    argv = ["bash", "-c", command, "bash", str(info.env_file), sys.executable, "-c", script, *args]
    client_home = info.env_file.parent / "client-prefect"  # keep ~/.prefect untouched
    clean = {"HOME": os.environ["HOME"], "PATH": "/usr/bin:/bin", "PREFECT_HOME": str(client_home)}
    done = subprocess.run(argv, env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- configuration (no processes) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {}, {"prefect_port": 4200, "s3_port": 9000, "host": "127.0.0.1"}, id="defaults"
        ),
        pytest.param(
            {"MAMMO_HOME": "/srv/m"}, {"state_dir": Path("/srv/m/stack")}, id="home-sets-state-dir"
        ),
        pytest.param(
            {"MAMMO_PREFECT_PORT": "14200", "MAMMO_RAY_PORT": "16379", "MAMMO_S3_PORT": "19000"},
            {"prefect_port": 14200, "ray_port": 16379, "s3_port": 19000, "mlflow_port": 5000},
            id="port-overrides",
        ),
        pytest.param(
            {"MAMMO_RAY_NUM_CPUS": "3", "MAMMO_RAY_OBJECT_STORE_MB": "512", "MAMMO_BUCKET": "b1b"},
            {"ray_num_cpus": 3, "ray_object_store_mb": 512, "bucket": "b1b"},
            id="ray-sizing-and-bucket",
        ),
    ],
)
def test_config_from_env(env: dict[str, str], expected: dict[str, object]) -> None:
    cfg = StackConfig.from_env(env)
    assert {key: getattr(cfg, key) for key in expected} == expected


def test_client_env_points_at_loopback_with_local_credentials() -> None:
    cfg = StackConfig(state_dir=Path("/srv/m/stack"), s3_port=19000, ray_port=16379)
    env = cfg.client_env()
    assert set(env) >= STANDARD_VARIABLES
    assert env["RAY_ADDRESS"] == "127.0.0.1:16379"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:19000"
    assert env["AWS_ACCESS_KEY_ID"] == "mammo-local"
    assert env["RAY_AUTH_TOKEN_PATH"] == "/srv/m/stack/ray/auth_token"
    assert len(str(cfg.ray_temp_dir)) < 30  # Ray's socket paths stay under 107 bytes


# -- failures while starting ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        pytest.param("port-taken", "held by another program", id="s3-port-held-by-a-stranger"),
        pytest.param("bad-bucket", "cannot create bucket", id="bucket-rejected-after-s3-started"),
    ],
)
def test_failed_start_stops_what_it_started(tmp_path: Path, case: str, reason: str) -> None:
    cfg = _test_config(tmp_path / "state", bucket="x" if case == "bad-bucket" else "mammo")
    with socket.socket() as stranger:
        if case == "port-taken":
            stranger.bind((cfg.host, cfg.s3_port))
            stranger.listen()
        with pytest.raises(StackError, match=reason) as failure:
            up(cfg, echo=lambda line: None)
    assert failure.value.service == "s3"
    assert list(cfg.state_dir.glob("*.pid")) == []
    assert _marked(cfg) == []
    assert not cfg.env_file.exists()


# -- the running stack ---------------------------------------------------------------------


def _cli_env(cfg: StackConfig) -> dict[str, str]:
    """The environment a user sets for `mammo up` to start ``cfg``'s stack (from_env)."""
    ports = {f"MAMMO_{name.upper()}": str(getattr(cfg, name)) for name in PORT_FIELDS}
    return {
        **os.environ,
        **ports,
        "MAMMO_HOME": str(cfg.state_dir.parent),
        "MAMMO_BUCKET": cfg.bucket,
        "MAMMO_RAY_NUM_CPUS": str(cfg.ray_num_cpus),
        "MAMMO_RAY_OBJECT_STORE_MB": str(cfg.ray_object_store_mb),
    }


def _mammo(command: str, cfg: StackConfig) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mammo"), command],
        env=_cli_env(cfg),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackConfig, StackInfo]]:
    """`mammo up` as a user runs it, configured through the documented variables."""
    cfg = _test_config(tmp_path_factory.mktemp("stack") / "home" / "stack")
    assert StackConfig.from_env(_cli_env(cfg)).state_dir == cfg.state_dir
    try:
        shown = _mammo("up", cfg)
        info = up(cfg, echo=lambda line: None)  # already up: what it started, changes nothing
        assert f"Prefect UI      {info.prefect_ui}" in shown
        assert f"source {info.env_file}" in shown
        assert "mammo: crash runs without heartbeats: created (after 540 s" in shown
        yield cfg, info
    finally:
        stopped = _mammo("down", cfg)
        assert stopped.startswith("Stopped: ")
        shutil.rmtree(cfg.ray_temp_dir, ignore_errors=True)


def _token(info: StackInfo) -> dict[str, str]:
    token = Path(info.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("url", "headers", "expected"),
    [
        pytest.param(lambda i: f"{i.prefect_ui}/api/health", None, 200, id="prefect-api-health"),
        pytest.param(lambda i: f"{i.prefect_ui}/", None, 200, id="prefect-ui-page"),
        pytest.param(lambda i: f"{i.mlflow_ui}/health", None, 200, id="mlflow-health"),
        pytest.param(lambda i: f"{i.mlflow_ui}/", None, 200, id="mlflow-ui-page"),
        pytest.param(lambda i: f"{i.ray_dashboard}/", None, 200, id="ray-dashboard-page"),
        pytest.param(
            lambda i: f"{i.ray_dashboard}/api/version", _token, 200, id="ray-api-with-token"
        ),
        pytest.param(
            lambda i: f"{i.ray_dashboard}/api/version", None, 401, id="ray-api-refuses-anonymous"
        ),
        pytest.param(lambda i: f"{i.ray_metrics}/metrics", None, 200, id="ray-prometheus-metrics"),
    ],
)
def test_endpoint_answers(
    stack: tuple[StackConfig, StackInfo],
    url: Callable[[StackInfo], str],
    headers: Callable[[StackInfo], dict[str, str]] | None,
    expected: int,
) -> None:
    _, info = stack
    assert _status_of(url(info), headers(info) if headers else None) == expected


@pytest.mark.integration
def test_prefect_ui_talks_to_this_api(stack: tuple[StackConfig, StackInfo]) -> None:
    _, info = stack
    with urllib.request.urlopen(f"{info.prefect_ui}/ui-settings", timeout=10) as response:
        assert json.load(response)["api_url"] == info.env["PREFECT_API_URL"]


@pytest.mark.integration
def test_bucket_is_listable_with_env_sh_credentials(stack: tuple[StackConfig, StackInfo]) -> None:
    cfg, info = stack
    client = boto3.client(
        "s3",
        endpoint_url=info.env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=info.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=info.env["AWS_SECRET_ACCESS_KEY"],
        region_name=info.env["AWS_DEFAULT_REGION"],
    )
    client.put_object(Bucket=cfg.bucket, Key="probe/hello.txt", Body=b"hello")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=cfg.bucket)["Contents"]]
    assert "probe/hello.txt" in keys


RAY_CLIENT = """
import json, os, ray
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="WARNING")
seen = ray.get(ray.remote(lambda: os.environ.get("AWS_ENDPOINT_URL_S3")).remote())
print(json.dumps({"cpus": ray.cluster_resources().get("CPU"), "worker_s3": seen}))
"""
MLFLOW_CLIENT = """
import json, mlflow
with mlflow.start_run() as run:
    mlflow.log_text("ok", "probe.txt")
print(json.dumps({"run_id": run.info.run_id}))
"""


@pytest.mark.integration
def test_ray_init_from_a_shell_that_sourced_env_sh(stack: tuple[StackConfig, StackInfo]) -> None:
    _, info = stack
    result = _run_with_env_sh(info, RAY_CLIENT)
    assert result == {"cpus": 1.0, "worker_s3": info.s3_endpoint}


@pytest.mark.integration
def test_mlflow_artifacts_land_in_the_bucket(stack: tuple[StackConfig, StackInfo]) -> None:
    cfg, info = stack
    run_id = _run_with_env_sh(info, MLFLOW_CLIENT)["run_id"]
    client = boto3.client(
        "s3",
        endpoint_url=info.s3_endpoint,
        aws_access_key_id=cfg.access_key,
        aws_secret_access_key=cfg.secret_key,
        region_name=cfg.region,
    )
    keys = [
        o["Key"] for o in client.list_objects_v2(Bucket=cfg.bucket, Prefix="mlflow/")["Contents"]
    ]
    assert any(key.endswith(f"{run_id}/artifacts/probe.txt") for key in keys), keys


PROBE_FLOW = """
import json, os, time
from pathlib import Path
from prefect import flow

@flow
def probe(out: str) -> None:
    keys = ["RAY_ADDRESS", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID"]
    seen = {key: os.environ.get(key) for key in keys}
    Path(out).write_text(json.dumps({"pid": os.getpid(), **seen}))
    time.sleep(600)  # still running when the stack goes down
"""
DEPLOY_AND_RUN = """
import json, sys
from prefect import flow
from prefect.deployments import run_deployment
source, out = sys.argv[1:]
flow.from_source(source=source, entrypoint="probe.py:probe").deploy(
    name="probe", work_pool_name="mammo-process", print_next_steps=False
)
run = run_deployment("probe/probe", parameters={"out": out}, timeout=0)
print(json.dumps({"flow_run": str(run.id)}))
"""


@pytest.fixture(scope="module")
def flow_run(
    stack: tuple[StackConfig, StackInfo], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """A deployment run by the stack's worker; what its flow-run process saw, and its pid."""
    cfg, info = stack
    source = tmp_path_factory.mktemp("flow-source")
    (source / "probe.py").write_text(PROBE_FLOW)
    out = source / "seen.json"
    _run_with_env_sh(info, DEPLOY_AND_RUN, str(source), str(out))
    deadline = time.monotonic() + 90
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert out.exists(), cfg.log_path("prefect-worker").read_text()[-3000:]
    return dict(json.loads(out.read_text()))


@pytest.mark.integration
def test_flow_runs_of_the_worker_see_the_stack(
    stack: tuple[StackConfig, StackInfo], flow_run: dict[str, object]
) -> None:
    _, info = stack
    keys = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID")
    assert {key: flow_run[key] for key in keys} == {key: info.env[key] for key in keys}


@pytest.mark.integration
def test_env_sh_is_private_and_exports_the_standard_variables(
    stack: tuple[StackConfig, StackInfo],
) -> None:
    cfg, info = stack
    assert stat.S_IMODE(info.env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.ray_token_path.stat().st_mode) == 0o600
    exported = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "bash", str(info.env_file)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = dict(item.split("=", 1) for item in exported.split("\0") if "=" in item)
    assert {key: pairs[key] for key in info.env} == dict(info.env)
    assert set(info.env) >= STANDARD_VARIABLES
    assert STACK_MARK not in info.env


@pytest.mark.integration
def test_every_listening_socket_is_on_loopback(stack: tuple[StackConfig, StackInfo]) -> None:
    cfg, _ = stack
    listening: set[tuple[str, int]] = set()
    for proc in _walk(cfg).values():
        try:
            connections = proc.net_connections("inet")
        except psutil.NoSuchProcess:
            continue
        listening |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == "LISTEN"}
    assert {ip for ip, _ in listening} <= LOOPBACK, sorted(listening)
    assert {getattr(cfg, name) for name in PORT_FIELDS} <= {port for _, port in listening}


@pytest.mark.integration
def test_status_reports_every_service_running(stack: tuple[StackConfig, StackInfo]) -> None:
    cfg, info = stack
    report = status(cfg)
    assert list(report) == list(SERVICES)
    assert all(line.startswith("running http://127.0.0.1:") for line in report.values()), report
    assert report["mlflow"] == f"running {info.mlflow_ui}"
    shown = _mammo("status", cfg).splitlines()
    assert [line.split()[0] for line in shown] == list(SERVICES)
    assert f"running {info.mlflow_ui}" in shown[list(SERVICES).index("mlflow")]


@pytest.mark.integration
def test_second_up_changes_nothing(stack: tuple[StackConfig, StackInfo]) -> None:
    cfg, info = stack
    leaders = {p.name: p.read_text() for p in cfg.state_dir.glob("*.pid")}
    daemons = {pid for pid, p in _walk(cfg).items() if p.name() in DAEMONS}
    again = up(cfg, echo=lambda line: None)
    assert again.started == ()
    assert again.env == info.env
    assert len(leaders) == len(SERVICES)
    assert {p.name: p.read_text() for p in cfg.state_dir.glob("*.pid")} == leaders
    assert {pid for pid, p in _walk(cfg).items() if p.name() in DAEMONS} == daemons


@pytest.mark.integration
def test_down_leaves_no_process_and_spares_strangers(
    stack: tuple[StackConfig, StackInfo], flow_run: dict[str, object], tmp_path: Path
) -> None:
    cfg, _ = stack
    stranger = subprocess.Popen(  # another stack's process: down must not touch it
        ["sleep", "300"],
        env={**os.environ, STACK_MARK: str(tmp_path / "other-stack")},
        start_new_session=True,
    )
    try:
        processes = _walk(cfg)
        assert {p.name() for p in processes.values()} >= DAEMONS
        assert flow_run["pid"] in processes  # a flow run: the worker's child, own session
        stopped = down(cfg)
        assert stopped == list(reversed(SERVICES))
        survivors = [pid for pid, proc in processes.items() if not _gone(proc)]
        assert survivors == []
        assert _marked(cfg) == []
        assert list(cfg.state_dir.glob("*.pid")) == []
        assert all(line.startswith("stopped ") for line in status(cfg).values())
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
