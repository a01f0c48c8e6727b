"""Where the local stack keeps its state, the loopback ports it uses and the variables that
point clients at it (env.sh's content)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("s3", "prefect-server", "prefect-worker", "ray", "mlflow")
STACK_MARK = "MAMMO_STACK_ID"  # set in every service's environment, never in env.sh
LOCAL_ACCESS_KEY = "mammo-local"  # moto accepts any key; these only ever reach loopback
LOCAL_SECRET_KEY = "mammo-local-secret"
WORKER_NAME = "mammo-local"  # the Prefect worker of the stack's process pool


def mammo_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("MAMMO_HOME", ".mammo")).expanduser().absolute()


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which loopback ports it uses."""

    state_dir: Path = field(default_factory=lambda: mammo_home(os.environ) / "stack")
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
            state_dir=mammo_home(env) / "stack",
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

    def ports(self, service: str) -> tuple[int, ...]:
        """The ports ``service`` listens on (the worker listens on none)."""
        return {
            "s3": (self.s3_port,),
            "prefect-server": (self.prefect_port,),
            "prefect-worker": (),
            "ray": (
                self.ray_port,
                self.ray_dashboard_port,
                self.ray_metrics_port,
                self.ray_client_port,
                self.ray_agent_port,
            ),
            "mlflow": (self.mlflow_port,),
        }[service]

    def urls(self) -> dict[str, str]:
        """The address each service answers on (the worker has none: its pool's page)."""
        prefect = http_url(self.host, self.prefect_port)
        return {
            "s3": http_url(self.host, self.s3_port),
            "prefect-server": prefect,
            "prefect-worker": f"{prefect}/work-pools/work-pool/{self.work_pool}",
            "ray": http_url(self.host, self.ray_dashboard_port),
            "mlflow": http_url(self.host, self.mlflow_port),
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
