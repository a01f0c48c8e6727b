"""Train on Ray Train and record everything in MLflow: the training task of the pipeline.

Order: manifest -> patient splits (fixed by a seed, holdout stable across nights) ->
Ray Datasets per split -> TorchTrainer (GPUs when the cluster has them) -> best weights
from the last checkpoint -> predictions on validation and holdout -> decision threshold
chosen on validation -> plots -> MLflow: params, lineage tags, metrics, artifacts, the
pyfunc model (registered later) and the raw torch module.

This module is the orchestration; the evaluation is tasks.train_eval, the figures
tasks.train_plots, the model as MLflow stores it tasks.packaging (its names are re-exported
here), the MLflow tag keys and artifact names mammo.tags.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, cast

import mlflow
import pandas as pd
import ray
from prefect import task
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mammo import contract as c
from mammo import tags as t
from mammo.auxiliary import aux_targets, main_state
from mammo.drift_report import reference_profile
from mammo.features import MetadataEncoder
from mammo.models import Classifier
from mammo.pretrained import PretrainedError
from mammo.splits import Split, SplitConfig, assign_splits
from mammo.training import Target, TrainConfig, build_model, check_pretrained
from tasks import tracking
from tasks.cluster import cluster_gpus, cluster_resources, ensure_ray, publish_training_metrics
from tasks.lineage import manifest_hash
from tasks.logs import run_logger
from tasks.packaging import (
    MAMMO_CODE,
    PYFUNC_CODE,
    SERVING_PACKAGES,
    log_models,
    model_bundle,
    serving_requirements,
)
from tasks.settings import Settings
from tasks.storage import open_store, read_parquet
from tasks.train_data import build_dataset, quiet_ray_data, split_rows
from tasks.train_eval import (
    LOCKED_FIGURES,
    choose_threshold,
    log_evaluations,
    predict,
    split_metrics,
)
from tasks.train_loop import TrainingError, read_state, train_loop_per_worker
from tasks.train_plots import log_plots

SPLITS = (Split.TRAIN, Split.VAL, Split.HOLDOUT)

__all__ = [
    "LOCKED_FIGURES",
    "MAMMO_CODE",
    "PYFUNC_CODE",
    "SERVING_PACKAGES",
    "SPLITS",
    "TrainOutcome",
    "TrainingError",
    "load_frame",
    "log_models",
    "serving_requirements",
    "train_model",
]


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    model_uri: str  # the pyfunc model to register
    torch_model_uri: str
    data: str
    data_hash: str
    run_key: str
    resumed: bool
    epochs_run: int
    threshold: float | None
    aggregation: str
    metrics: dict[str, float]
    rows: dict[str, int]


def load_frame(data: str, cfg: TrainConfig, split_cfg: SplitConfig) -> pd.DataFrame:
    """Manifest rows that carry the target, with their split (by patient, before sampling)."""
    manifest = read_parquet(open_store(data), c.MANIFEST_FILE).to_pandas()
    target = Target.for_column(cfg.target)
    frame = manifest[target.labeled(manifest)].reset_index(drop=True)
    if frame.empty:
        raise TrainingError(f"no manifest row of {data} has a usable {cfg.target!r} label")
    frame[c.SPLIT] = assign_splits(frame, split_cfg, label_column=c.CANCER).to_numpy()
    return frame


def _flat_params(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat_params(f"{prefix}{key}.", value))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


@task(name="train-model")
def train_model(
    data: str,
    train_config: dict[str, Any],
    split_config: dict[str, Any],
    settings: Settings,
    lineage: dict[str, str] | None = None,
) -> TrainOutcome:
    """Fit, evaluate and log one model; resumes an unfinished run of the same data+config."""
    logger = run_logger()
    cfg, split_cfg = TrainConfig.from_dict(train_config), SplitConfig.from_dict(split_config)
    target = Target.for_column(cfg.target)
    try:
        check_pretrained(cfg)
    except PretrainedError as error:
        raise TrainingError(f"--pretrained: {error}") from error
    frame = load_frame(data, cfg, split_cfg)
    rows = {s.value: int((frame[c.SPLIT] == s.value).sum()) for s in SPLITS}
    if rows[Split.TRAIN] == 0 or rows[Split.VAL] == 0:
        raise TrainingError(f"too few patients to train and validate: {rows}")
    data_hash = manifest_hash(data)
    config_hash = hashlib.sha256(
        json.dumps([cfg.to_dict(), split_cfg.to_dict()], sort_keys=True, default=str).encode()
    ).hexdigest()
    run_key = f"{data_hash[:12]}-{config_hash[:12]}"

    mlflow_client = tracking.client(settings)
    run = tracking.start_training_run(mlflow_client, settings, run_key, f"train-{run_key}")
    logger.info("MLflow run %s (%s); %s", run.run_id, "resumed" if run.resumed else "new", rows)
    preprocess = json.loads(open_store(data).read_bytes(c.PREPROCESS_CONFIG_FILE))
    with mlflow.start_run(run_id=run.run_id):
        if not run.resumed:
            mlflow.log_params(
                {
                    **_flat_params("train.", cfg.to_dict()),
                    **_flat_params("split.", split_cfg.to_dict()),
                    **_flat_params("preprocess.", preprocess),
                }
            )
        mlflow.set_tags(
            {
                t.DATA: data,
                t.DATA_HASH: data_hash,
                t.GIT_COMMIT: tracking.git_commit(),
                **{f"{t.ROWS_PREFIX}{k}": str(v) for k, v in rows.items()},
                **(lineage or {}),
            }
        )
        outcome = _fit_and_log(
            data, frame, cfg, target, split_cfg, settings, run, preprocess, data_hash, run_key
        )
    logger.info(
        "Trained %s for %d epochs: %s",
        cfg.model,
        outcome.epochs_run,
        {k: round(v, 4) for k, v in outcome.metrics.items() if k.startswith(("val_", "holdout_"))},
    )
    return outcome


def _fit_and_log(
    data: str,
    frame: pd.DataFrame,
    cfg: TrainConfig,
    target: Target,
    split_cfg: SplitConfig,
    settings: Settings,
    run: tracking.TrainingRun,
    preprocess: dict[str, Any],
    data_hash: str,
    run_key: str,
) -> TrainOutcome:
    logger = run_logger()
    encoder = None
    if cfg.fuse_metadata:
        encoder = MetadataEncoder.fit(frame[frame[c.SPLIT] == Split.TRAIN.value])
    ensure_ray(settings)
    quiet_ray_data()
    store = open_store(data)
    datasets: dict[str, ray.data.Dataset] = {}  # by Split value
    for member in SPLITS:
        part = frame[frame[c.SPLIT] == member.value]
        if len(part):
            wanted = split_rows(
                part, target, encoder, cfg.image_rows, cfg.image_cols, aux_targets(cfg)
            )
            datasets[member.value] = build_dataset(store, part, wanted)

    gpus = cluster_gpus()
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else gpus > 0
    # A worker must fit on one node: on a cluster with many decode nodes the fair share of
    # all CPUs is more than a GPU node has, so MAMMO_TRAIN_CPUS_PER_WORKER caps it there.
    cpus = settings.train_cpus_per_worker or max(
        1, int(cluster_resources().get("CPU", 1) // cfg.num_workers)
    )
    logger.info(
        "Ray Train: %d worker(s), %s, %d CPU each",
        cfg.num_workers,
        "GPU" if use_gpu else "CPU only",
        cpus,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.to_dict(),
            "metadata_features": encoder.n_features if encoder else 0,
            "threads": cpus,
            "mlflow": {"tracking_uri": settings.mlflow_tracking_uri, "run_id": run.run_id},
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=run.ray_run_name,
            storage_path=str(settings.train_storage),
            failure_config=FailureConfig(max_failures=settings.train_max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={k: v for k, v in datasets.items() if k in (Split.TRAIN, Split.VAL)},
        # Training rows are shared out (in equal parts, as DDP needs); every worker validates
        # on all the validation rows, so no row is dropped to make the parts equal.
        dataset_config=DataConfig(datasets_to_split=[Split.TRAIN.value]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TrainingError(f"training reported no checkpoint ({result.error})")
    with result.checkpoint.as_directory() as directory:
        state = read_state(directory)
    # create_model (so build_model) builds a Classifier: its ``spec`` goes in the bundle.
    # The trained weights replace every tensor: the pretrained file need not be read again.
    # The auxiliary heads were for training only: the shipped head is the target's own.
    bare = replace(cfg, pretrained=None, aux_targets=())
    model = cast(Classifier, build_model(bare, target, encoder.n_features if encoder else 0))
    model.load_state_dict(main_state(state["best"], target))
    history: list[dict[str, float]] = state["history"]
    publish_training_metrics(history)

    predictions = {
        split: predict(model, datasets[split], target, cfg.tta_vflip)
        for split in datasets
        if split != "train"
    }
    threshold = choose_threshold(predictions, target, cfg)
    metrics = split_metrics(predictions, target, cfg, threshold)
    mlflow.log_metrics(metrics)
    # MLflow types the argument as a dict; it logs any JSON/YAML-serializable value.
    mlflow.log_dict(history, t.HISTORY_FILE)  # type: ignore[arg-type]
    log_evaluations(predictions, frame, target, cfg, threshold, data, data_hash)

    bundle = model_bundle(model, cfg, threshold, preprocess, encoder)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log_plots(work, history, predictions, datasets, target, cfg)
        frame[[c.PATIENT_ID, c.IMAGE_ID, c.SPLIT]].to_csv(work / t.SPLITS_FILE, index=False)
        mlflow.log_artifact(str(work / t.SPLITS_FILE))
        for split, frame_p in predictions.items():
            frame_p.to_parquet(work / t.predictions_file(split))
            mlflow.log_artifact(str(work / t.predictions_file(split)), t.PREDICTIONS_DIR)
        scores = pd.concat(predictions.values()) if target.is_binary else None
        profile = work / PurePosixPath(t.DRIFT_REFERENCE).name
        reference_profile(frame, scores).to_parquet(profile)
        mlflow.log_artifact(str(profile), t.DRIFT_DIR)
        info = log_models(bundle, model, work)
    return TrainOutcome(
        run_id=run.run_id,
        model_uri=info[0],
        torch_model_uri=info[1],
        data=data,
        data_hash=data_hash,
        run_key=run_key,
        resumed=run.resumed,
        epochs_run=len(history),
        threshold=threshold,
        aggregation=cfg.aggregation,
        metrics=metrics,
        rows={k: int((frame[c.SPLIT] == k).sum()) for k in ("train", "val", "holdout")},
    )
