"""MLflow: the experiment, training runs with their lineage, and idempotent registration.

Embedded default: a SQLite tracking store and a local artifact root under MAMMO_HOME;
``MLFLOW_TRACKING_URI`` pointing at an ``mlflow server`` overrides both.

A training run is identified by ``mammo.run_key`` (hash of the manifest and of the training
config). Starting training again after a crash finds the unfinished run with that key and
resumes it, MLflow run and Ray Train checkpoints alike. Registration looks for a version
of the same run before creating one, so a retry after a failure never adds a duplicate.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mammo import tags as t
from tasks.settings import Settings

RUN_KEY, RAY_RUN = t.RUN_KEY, t.RAY_RUN_NAME
CHALLENGER, CHAMPION = "challenger", "champion"


class RegistryError(RuntimeError):
    """The model registry could not be reached or refused an operation."""


@dataclass(frozen=True)
class TrainingRun:
    run_id: str
    ray_run_name: str
    resumed: bool


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured store, with the experiment created if needed."""
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    uri = settings.mlflow_tracking_uri
    mlflow_client = MlflowClient(uri, registry_uri=uri)  # the registry lives in the same store
    try:
        if mlflow_client.get_experiment_by_name(settings.mlflow_experiment) is None:
            local = not settings.mlflow_tracking_uri.startswith(("http://", "https://"))
            location = _artifact_location(settings) if local else None
            mlflow_client.create_experiment(settings.mlflow_experiment, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # a concurrent first run made it
            raise RegistryError(f"MLflow at {settings.mlflow_tracking_uri}: {exc.message}") from exc
    return mlflow_client


def _artifact_location(settings: Settings) -> str:
    root = settings.mlflow_artifact_root
    if "://" in root:
        return root
    path = Path(root).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def start_training_run(
    mlflow_client: MlflowClient, settings: Settings, run_key: str, run_name: str
) -> TrainingRun:
    """Resume the unfinished run with this key, or create a new one."""
    experiment = mlflow_client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        raise RegistryError(f"no MLflow experiment {settings.mlflow_experiment!r}; call client()")
    previous = mlflow_client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RUN_KEY}` = '{run_key}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if previous and previous[0].info.status != RunStatus.to_string(RunStatus.FINISHED):
        run = previous[0]
        mlflow_client.update_run(run.info.run_id, status="RUNNING")
        return TrainingRun(run.info.run_id, run.data.tags[RAY_RUN], resumed=True)
    run = mlflow_client.create_run(
        experiment.experiment_id, run_name=run_name, tags={RUN_KEY: run_key}
    )
    ray_run = f"{run_key}-{run.info.run_id[:8]}"
    mlflow_client.set_tag(run.info.run_id, RAY_RUN, ray_run)
    return TrainingRun(run.info.run_id, ray_run, resumed=False)


def git_commit() -> str:
    """The commit of the code that runs: the checkout's HEAD, else MAMMO_GIT_COMMIT (set when
    a container image is built), else "unknown"."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return os.environ.get("MAMMO_GIT_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def register_version(
    mlflow_client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    alias: str = CHALLENGER,
) -> ModelVersion:
    """Register ``model_uri`` under ``name`` once per run, tag it, and point ``alias`` at it.

    Order: the registered model (if new) -> the version of this run, created only if there is
    none -> duplicates of it removed -> ready -> tags -> alias, last. A failure at any step
    leaves nothing that a retry does not reuse or repair.
    """
    try:
        try:
            mlflow_client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        if not _versions_of_run(mlflow_client, name, run_id):
            mlflow_client.create_model_version(
                name, model_uri, run_id=run_id, tags=tags, model_id=_logged_model_id(model_uri)
            )
        version = _first_version_of_run(mlflow_client, name, run_id)
        version = _wait_ready(mlflow_client, name, version.version)
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(name, version.version, key, value)
        mlflow_client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        raise RegistryError(
            f"registering {name} from run {run_id} failed: {exc.message} "
            "(retrying is safe: it reuses the version of this run)"
        ) from exc
    return version


def _logged_model_id(model_uri: str) -> str | None:
    """The id in ``models:/m-...`` (a model logged by MLflow 3). An ``mlflow server`` refuses
    such a source unless the id comes with it; a local store does not check."""
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    return match.group(1) if match else None


def _versions_of_run(mlflow_client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    found = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return sorted(found, key=lambda v: int(v.version))


def _first_version_of_run(mlflow_client: MlflowClient, name: str, run_id: str) -> ModelVersion:
    """The run's first version; later ones without an alias are deleted.

    MLflow's HTTP client retries a POST whose answer was lost (a dropped connection, a server
    stopped after it committed), so one ``create_model_version`` call can leave two versions
    of the run.
    """
    versions = _versions_of_run(mlflow_client, name, run_id)
    if not versions:
        raise RegistryError(f"{name} has no version of run {run_id} after creating one")
    first, *duplicates = versions
    for duplicate in duplicates:
        if not mlflow_client.get_model_version(name, duplicate.version).aliases:
            mlflow_client.delete_model_version(name, duplicate.version)
    return first


def _wait_ready(
    mlflow_client: MlflowClient, name: str, version: str, timeout: float = 120
) -> ModelVersion:
    deadline = time.monotonic() + timeout
    while True:
        current = mlflow_client.get_model_version(name, version)
        if current.status == "READY":
            return current
        if current.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version} is {current.status}")
        time.sleep(0.5)


def alias_version(mlflow_client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` names, or None when it names none (or the model does not exist)."""
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise RegistryError(f"reading {name}@{alias}: {exc.message}") from exc


_ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)")


def pin_model_uri(settings: Settings, model_uri: str) -> tuple[str, str | None]:
    """``models:/name@alias`` -> (``models:/name/N``, "N"), resolved once: everything a run
    scores then uses the same version, whatever moves the alias meanwhile. Other URIs are
    returned as they are, with the version when they name one."""
    match = _ALIAS_URI.fullmatch(model_uri)
    if match is None:
        pinned = re.fullmatch(r"models:/[^/@]+/(\d+)", model_uri)
        return model_uri, pinned.group(1) if pinned else None
    name, alias = match["name"], match["alias"]
    version = alias_version(client(settings), name, alias)
    if version is None:
        raise RegistryError(
            f"{name} has no version with the alias @{alias} in {settings.mlflow_tracking_uri}"
        )
    return f"models:/{name}/{version.version}", str(version.version)
