"""Ray Tune over the training task: one trial is one ``train_model`` run, a child MLflow run.

Order: the parent MLflow run is opened (:func:`search_run`) -> Ray Tune samples the [tune]
space (mammo.search) and runs each trial in a Ray actor holding no CPU -> the trial merges
its sample into the [train] values and calls the training task's function, which runs its
own TorchTrainer on the cluster's CPUs and tags its run with the parent's id -> the trial
reports the outcome's metrics -> the results come back as :class:`TrialResult` rows.

A trial gets everything it needs in a :class:`TrialJob` (settings, data, configs, parent
run), never from its actor's environment. Trials run one at a time unless [tune]
``max_concurrent_trials`` says otherwise; then each trainer worker takes its share of the
cluster's CPUs (``MAMMO_TRAIN_CPUS_PER_WORKER`` still wins), not all of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from mlflow.entities import RunStatus
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from mammo import tags as t
from mammo.config import ConfigError
from mammo.search import Param, TrialResult, TuneSettings, apply_sample
from mammo.training import TrainConfig, TrainConfigError
from tasks import tracking
from tasks.cluster import cluster_resources, ensure_ray
from tasks.settings import Settings
from tasks.storage import StorageError
from tasks.train import TrainingError, train_model

# What a trial turns into a failed row of the table (bad data for this sample, say);
# anything else fails the trial with its traceback, in Ray Tune's log.
TRIAL_ERRORS = (TrainingError, TrainConfigError, ConfigError, StorageError, FileNotFoundError)
# A trial only drives its TorchTrainer: no CPU, so the trainer and Ray Data get them all. Ray
# places an actor by some resource, and an all-zero request is refused: it reserves memory.
TRIAL_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 512 * 1024 * 1024}


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one search shares."""

    data: str
    train: dict[str, Any]  # the [train] values under the samples (file and flags)
    split: dict[str, Any]
    settings: Settings
    lineage: dict[str, str]  # tags of every child run: the parent's id, the Prefect flow run
    metric: str
    concurrent: int  # trials at the same time


def search_space(params: tuple[Param, ...]) -> dict[str, Any]:
    """The [tune] space as Ray Tune's sampling objects (randint: both bounds included)."""
    space: dict[str, Any] = {}
    for param in params:
        values = param.values
        if param.kind == "choice":
            space[param.key] = tune.choice(list(values))
        elif param.kind == "uniform":
            space[param.key] = tune.uniform(values[0], values[1])
        elif param.kind == "loguniform":
            space[param.key] = tune.loguniform(values[0], values[1])
        else:
            space[param.key] = tune.randint(values[0], values[1] + 1)
    return space


def _plain(value: Any) -> Any:
    """A sampled value as a Python scalar (Ray Tune may hand back numpy scalars)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """One trial, in its Ray actor: train with the sample, report the outcome's metrics."""
    sample = {key: _plain(value) for key, value in config.items()}
    values = TrainConfig.from_dict(apply_sample(job.train, sample))
    settings = job.settings
    if job.concurrent > 1 and settings.train_cpus_per_worker is None:
        share = cluster_resources().get("CPU", 1) // (job.concurrent * values.num_workers)
        settings = replace(settings, train_cpus_per_worker=max(1, int(share)))
    lineage = {**job.lineage, t.TUNE_TRIAL: tune.get_context().get_trial_id()}
    try:
        outcome = train_model.fn(job.data, values.to_dict(), job.split, settings, lineage)
    except TRIAL_ERRORS as exc:
        tune.report({job.metric: math.nan, "epochs": 0, "run_id": "", "error": str(exc)})
        return
    metric = outcome.metrics.get(job.metric, math.nan)
    report = {**outcome.metrics, job.metric: metric, "epochs": outcome.epochs_run}
    tune.report({**report, "run_id": outcome.run_id, "error": ""})


def run_search(job: TrialJob, search: TuneSettings, name: str) -> list[TrialResult]:
    """Run the trials of ``search`` (Ray Tune experiment ``name`` under the train storage)."""
    ensure_ray(job.settings)
    trainable = tune.with_resources(tune.with_parameters(run_trial, job=job), TRIAL_RESOURCES)
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(search.params()),
        tune_config=tune.TuneConfig(
            num_samples=search.trials,
            metric=search.metric,
            mode=search.mode,
            # The random search limits its own concurrency (TuneConfig's is for a Searcher).
            search_alg=BasicVariantGenerator(
                max_concurrent=search.max_concurrent_trials, random_state=search.seed
            ),
        ),
        run_config=tune.RunConfig(name=name, storage_path=job.settings.train_storage, verbose=1),
    )
    grid = tuner.fit()
    found = sorted((grid[i] for i in range(len(grid))), key=lambda result: str(result.path))
    rows: list[TrialResult] = []
    for number, result in enumerate(found, start=1):
        metrics = result.metrics or {}
        value = metrics.get(search.metric)
        error = str(metrics.get("error") or "") or _one_line(result.error)
        rows.append(
            TrialResult(
                trial=str(number),
                values={key: _plain(v) for key, v in (result.config or {}).items()},
                metric=float(value) if isinstance(value, int | float) and not error else None,
                epochs=int(metrics.get("epochs", 0)),
                run_id=str(metrics.get("run_id", "")),
                error=error,
            )
        )
    return rows


def _one_line(error: BaseException | None) -> str:
    lines = str(error or "").strip().splitlines()
    return lines[-1] if lines else ""


@contextmanager
def search_run(settings: Settings, search: TuneSettings, tags: dict[str, str]) -> Iterator[str]:
    """The parent MLflow run of a search, in the training runs' experiment; its id is what
    each child run's ``mlflow.parentRunId`` names. It ends FINISHED, or FAILED on an error."""
    client = tracking.client(settings)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        raise tracking.RegistryError(f"no MLflow experiment {settings.mlflow_experiment!r}")
    run = client.create_run(experiment.experiment_id, run_name="tune", tags=tags)
    run_id = run.info.run_id
    params = {
        "tune.trials": search.trials,
        "tune.metric": search.metric,
        "tune.mode": search.mode,
        "tune.max_concurrent_trials": search.max_concurrent_trials,
        "tune.seed": search.seed,
        **{f"tune.space.{k}": json.dumps(v) for k, v in search.space.items()},
    }
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield run_id
        status = RunStatus.to_string(RunStatus.FINISHED)
    finally:
        client.set_terminated(run_id, status)


def record_best(
    settings: Settings, run_id: str, metric: str, best: TrialResult, config_text: str
) -> None:
    """The best trial on the parent run: its metric, its run, its configuration file."""
    client = tracking.client(settings)
    if best.metric is not None:
        client.log_metric(run_id, f"best_{metric}", best.metric)
    client.set_tag(run_id, t.TUNE_BEST_RUN, best.run_id)
    client.log_text(run_id, config_text, t.TUNED_CONFIG)
