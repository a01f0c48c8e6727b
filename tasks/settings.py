"""Where to run: one settings object, read once at the entry point from the environment.

The ecosystem's own variables come first (``RAY_ADDRESS``, ``MLFLOW_TRACKING_URI``,
``PREFECT_API_URL``, ``AWS_*``); ``MAMMO_*`` variables cover the rest. Nothing here holds a
credential: S3 credentials stay in the environment, where boto3 and pyarrow read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path  # MAMMO_HOME: local state of the embedded defaults (MLflow store, Ray storage)
    ray_address: str | None  # RAY_ADDRESS: an existing cluster; unset = start a local one
    ray_num_cpus: int | None  # MAMMO_RAY_NUM_CPUS: CPUs of the local cluster (default: all)
    ray_object_store_mb: int  # MAMMO_RAY_OBJECT_STORE_MB: sized for small machines
    ray_dashboard: bool  # MAMMO_RAY_DASHBOARD=0 turns the local dashboard off
    ray_dashboard_port: int  # MAMMO_RAY_DASHBOARD_PORT
    ray_metrics_port: int | None  # MAMMO_RAY_METRICS_PORT: Prometheus endpoint of the local node
    train_storage: str  # MAMMO_TRAIN_STORAGE: Ray Train checkpoints (shared storage on clusters)
    train_max_failures: int  # MAMMO_TRAIN_MAX_FAILURES: worker-group restarts from a checkpoint
    train_cpus_per_worker: int | None  # MAMMO_TRAIN_CPUS_PER_WORKER (default: fair share)
    mlflow_tracking_uri: str  # MLFLOW_TRACKING_URI, default a SQLite store under home
    mlflow_artifact_root: str  # MAMMO_MLFLOW_ARTIFACT_ROOT, default a directory under home
    mlflow_experiment: str  # MLFLOW_EXPERIMENT_NAME
    model_name: str  # MAMMO_MODEL_NAME: the registered model
    ingest_lock_expiry_s: float = 180.0  # MAMMO_INGEST_LOCK_EXPIRY_S: a dead owner's lock lasts
    ingest_lock_wait_s: float = 60.0  # MAMMO_INGEST_LOCK_WAIT_S: a second ingest waits, refuses

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("MAMMO_HOME", ".mammo")).expanduser().absolute()
        metrics_port = env.get("MAMMO_RAY_METRICS_PORT")
        num_cpus = env.get("MAMMO_RAY_NUM_CPUS")
        return cls(
            home=home,
            ray_address=env.get("RAY_ADDRESS") or None,
            ray_num_cpus=int(num_cpus) if num_cpus else None,
            ray_object_store_mb=int(env.get("MAMMO_RAY_OBJECT_STORE_MB", "768")),
            ray_dashboard=env.get("MAMMO_RAY_DASHBOARD", "1") not in ("0", "false", "no"),
            ray_dashboard_port=int(env.get("MAMMO_RAY_DASHBOARD_PORT", "8265")),
            ray_metrics_port=int(metrics_port) if metrics_port else None,
            train_storage=env.get("MAMMO_TRAIN_STORAGE") or str(home / "ray_results"),
            train_max_failures=int(env.get("MAMMO_TRAIN_MAX_FAILURES", "2")),
            train_cpus_per_worker=int(cpus)
            if (cpus := env.get("MAMMO_TRAIN_CPUS_PER_WORKER"))
            else None,
            mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home}/mlflow.db",
            mlflow_artifact_root=env.get("MAMMO_MLFLOW_ARTIFACT_ROOT") or str(home / "mlartifacts"),
            mlflow_experiment=env.get("MLFLOW_EXPERIMENT_NAME", "mammo"),
            model_name=env.get("MAMMO_MODEL_NAME", "mammo-cancer"),
            ingest_lock_expiry_s=float(env.get("MAMMO_INGEST_LOCK_EXPIRY_S", "180")),
            ingest_lock_wait_s=float(env.get("MAMMO_INGEST_LOCK_WAIT_S", "60")),
        )


def default_out() -> str:
    """Where decoded data goes when a flow or deployment is given none: $MAMMO_HOME/data."""
    return str(Settings.from_env().home / "data")
