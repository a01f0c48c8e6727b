"""Train on Ray Train and record everything in MLflow: the training task of the pipeline.

Order: manifest -> patient splits (fixed by a seed, holdout stable across nights) ->
Ray Datasets per split -> TorchTrainer (GPUs when the cluster has them) -> best weights
from the last checkpoint -> predictions on validation and holdout -> decision threshold
chosen on validation -> plots -> MLflow: params, lineage tags, metrics, artifacts, the
pyfunc model (registered later) and the raw torch module.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import ray
import torch
from prefect import task
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mammo import clinical, plots
from mammo import contract as c
from mammo.features import MetadataEncoder
from mammo.inference import BundleConfig, ModelBundle
from mammo.metrics import aggregate_breasts, best_threshold_f1
from mammo.model_card import data_summary
from mammo.models import Classifier
from mammo.splits import Split, SplitConfig, assign_splits
from mammo.training import Target, TrainConfig, build_model
from tasks import tracking
from tasks.cluster import cluster_gpus, cluster_resources, ensure_ray, publish_training_metrics
from tasks.lineage import manifest_hash
from tasks.logs import run_logger
from tasks.model_card import EVALUATION_DIR
from tasks.settings import Settings
from tasks.storage import open_store, read_parquet
from tasks.train_data import (
    IMAGE,
    LABEL,
    METADATA,
    build_dataset,
    dataset_arrays,
    quiet_ray_data,
    split_rows,
)
from tasks.train_loop import TrainingError, read_state, train_loop_per_worker

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
MAMMO_CODE = Path(__file__).resolve().parents[1] / "mammo"
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
                "mammo.data": data,
                "mammo.data_hash": data_hash,
                "mammo.git_commit": tracking.git_commit(),
                **{f"mammo.rows.{k}": str(v) for k, v in rows.items()},
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
            wanted = split_rows(part, target, encoder, cfg.image_rows, cfg.image_cols)
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
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise TrainingError(f"training reported no checkpoint ({result.error})")
    with result.checkpoint.as_directory() as directory:
        state = read_state(directory)
    # create_model (so build_model) builds a Classifier: its ``spec`` goes in the bundle.
    model = cast(Classifier, build_model(cfg, target, encoder.n_features if encoder else 0))
    model.load_state_dict(state["best"])
    history: list[dict[str, float]] = state["history"]
    publish_training_metrics(history)

    predictions = {
        split: _predict(model, datasets[split], target) for split in datasets if split != "train"
    }
    threshold = None
    if target.is_binary:
        breasts = aggregate_breasts(
            predictions[Split.VAL], c.PROBABILITY, cfg.aggregation, label_col=LABEL
        )
        _, best = best_threshold_f1(breasts[LABEL].to_numpy(), breasts[c.PROBABILITY].to_numpy())
        threshold = None if math.isnan(best) else float(best)
    metrics = {}
    for split, frame_p in predictions.items():
        report = _report(target, frame_p, cfg, threshold)
        if split != Split.VAL:  # the threshold is chosen on validation, only applied elsewhere
            report = {k: v for k, v in report.items() if k not in ("best_f1", "best_threshold")}
        metrics.update({f"{split}_{k}": v for k, v in report.items() if math.isfinite(v)})
    mlflow.log_metrics(metrics)
    # MLflow types the argument as a dict; it logs any JSON/YAML-serializable value.
    mlflow.log_dict(history, "history.json")  # type: ignore[arg-type]
    _log_evaluations(predictions, frame, target, cfg, threshold, data, data_hash)

    bundle = ModelBundle(
        model,
        BundleConfig(
            model=cfg.model,
            spec=model.spec.to_dict(),
            target=cfg.target,
            image_rows=cfg.image_rows,
            image_cols=cfg.image_cols,
            aggregation=cfg.aggregation,
            threshold=threshold,
            preprocess=preprocess,
            encoder=encoder.to_dict() if encoder else None,
            train_config=cfg.to_dict(),
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _log_plots(work, history, predictions, datasets, target, cfg)
        frame[[c.PATIENT_ID, c.IMAGE_ID, c.SPLIT]].to_csv(work / "splits.csv", index=False)
        mlflow.log_artifact(str(work / "splits.csv"))
        for split, frame_p in predictions.items():
            frame_p.to_parquet(work / f"predictions_{split}.parquet")
            mlflow.log_artifact(str(work / f"predictions_{split}.parquet"), "predictions")
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


def _predict(model: torch.nn.Module, dataset: ray.data.Dataset, target: Target) -> pd.DataFrame:
    """Per-image probabilities of ``model`` on a materialized split, with its breast keys."""
    from mammo.training import make_batch, predict_batches

    arrays = dataset_arrays(dataset)
    n = len(arrays.get(c.IMAGE_ID, []))
    chunks = [np.arange(i, min(i + 64, n)) for i in range(0, n, 64)]
    batches = (
        make_batch(
            arrays[IMAGE][idx],
            arrays[LABEL][idx],
            arrays[METADATA][idx] if METADATA in arrays else None,
        )
        for idx in chunks
    )
    logits = predict_batches(model, batches, torch.device("cpu"))
    frame = pd.DataFrame(
        {col: arrays[col] for col in (c.IMAGE_ID, c.PATIENT_ID, c.LATERALITY, c.SITE_ID, LABEL)}
    )
    probabilities = target.probabilities(logits) if n else np.zeros(0)
    if target.is_binary:
        frame[c.PROBABILITY] = probabilities
    else:
        for k, name in enumerate(target.classes):
            frame[f"{c.PROBABILITY}_{name}"] = probabilities[:, k]
    return frame


def _log_evaluations(
    predictions: dict[str, pd.DataFrame],
    frame: pd.DataFrame,
    target: Target,
    cfg: TrainConfig,
    threshold: float | None,
    data: str,
    data_hash: str,
) -> None:
    """The clinical evaluation per split (validation: where the threshold was locked) and the
    data counts, as run artifacts the model card is made from."""
    summary = data_summary(frame, data, data_hash)
    mlflow.log_dict(summary, f"{EVALUATION_DIR}/data.json")
    if not target.is_binary:
        return
    for split, frame_p in predictions.items():
        breasts = aggregate_breasts(frame_p, c.PROBABILITY, cfg.aggregation, label_col=LABEL)
        if breasts.empty:
            continue
        evaluation = clinical.evaluate(
            breasts, c.PROBABILITY, threshold, clinical.EvaluationConfig(), label_col=LABEL
        )
        mlflow.log_dict(evaluation, f"{EVALUATION_DIR}/{split}.json")


def _report(
    target: Target, frame: pd.DataFrame, cfg: TrainConfig, threshold: float | None
) -> dict[str, float]:
    """The target's report, and for a binary target the figures at the locked threshold."""
    renamed = frame.rename(columns={LABEL: target.column})
    if target.is_binary:
        probabilities = renamed[c.PROBABILITY].to_numpy()
    else:
        probabilities = renamed[[f"{c.PROBABILITY}_{k}" for k in target.classes]].to_numpy()
    report = target.report(renamed, probabilities, cfg.aggregation)
    if target.is_binary and threshold is not None:
        breasts = aggregate_breasts(frame, c.PROBABILITY, cfg.aggregation, label_col=LABEL)
        point = clinical.operating_point(breasts[LABEL], breasts[c.PROBABILITY], threshold)
        report.update({k: point[k] for k in LOCKED_FIGURES})
    return {k: float(v) for k, v in report.items()}


LOCKED_FIGURES = ("sensitivity", "specificity", "recall_rate")


def _log_plots(
    work: Path,
    history: list[dict[str, float]],
    predictions: dict[str, pd.DataFrame],
    datasets: dict[str, ray.data.Dataset],
    target: Target,
    cfg: TrainConfig,
) -> None:
    figures = work / "plots"
    figures.mkdir()
    monitored = [cfg.monitor, "pf1"] if target.is_binary else [cfg.monitor, "macro_f1"]
    paths = [plots.training_curves(history, figures / "training_curves.png", monitored)]
    if target.is_binary:
        curves = {
            split: (frame[LABEL].to_numpy(), frame[c.PROBABILITY].to_numpy())
            for split, frame in predictions.items()
        }
        paths.append(
            plots.roc_curves(curves, figures / "roc.png", f"ROC, {cfg.target} (image level)")
        )
        paths.append(plots.pr_curves(curves, figures / "pr.png", f"Precision-recall, {cfg.target}"))
    else:
        frame = predictions[Split.VAL]
        probs = frame[[f"{c.PROBABILITY}_{k}" for k in target.classes]].to_numpy()
        paths.append(
            plots.confusion_matrix_plot(
                frame[LABEL].to_numpy().astype(int),
                probs.argmax(axis=1),
                [str(k) for k in target.classes],
                figures / "confusion_val.png",
            )
        )
    sample = next(iter(datasets[Split.VAL].iter_batches(batch_size=64, batch_format="numpy")), None)
    if sample is not None:
        names = [f"{cfg.target}={_class_name(target, v)}" for v in sample[LABEL]]
        paths.append(plots.sample_grid(list(sample[IMAGE]), names, figures / "samples.png"))
    for path in paths:
        mlflow.log_artifact(str(path), "plots")


def _class_name(target: Target, value: float) -> str:
    return str(int(value)) if target.is_binary else str(target.classes[int(value)])


SERVING_PACKAGES = ("torch", "numpy", "pandas", "opencv-python-headless", "pydicom", "mlflow")


def serving_requirements() -> list[str]:
    """What a registered model needs to load and score, pinned to this environment (MLflow
    would otherwise infer it by importing the model in a subprocess, seconds per model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_PACKAGES]


def _serving_code(target: Path) -> Path:
    """The ``mammo`` package as a model carries it: everything but the synthetic generator."""
    destination = target / "mammo"
    shutil.copytree(MAMMO_CODE, destination, ignore=shutil.ignore_patterns("synth", "__pycache__"))
    return destination


def log_models(bundle: ModelBundle, model: torch.nn.Module, work: Path) -> tuple[str, str]:
    """Log, into the active MLflow run, the pyfunc (PNG bytes + metadata -> probabilities)
    and the raw torch module; returns their model URIs."""
    target = bundle.target
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    bundle_dir = bundle.save(work / "bundle")
    code = _serving_code(work / "code")
    requirements = serving_requirements()
    inputs: list[ColSpec | TensorSpec] = [ColSpec("binary", c.PNG)]  # Schema's element type
    if bundle.encoder is not None:
        kinds = {c.AGE: "double", c.IMPLANT: "long", c.SITE_ID: "long", c.MACHINE_ID: "long"}
        inputs += [
            ColSpec(kinds.get(col, "string"), col, required=False) for col in bundle.encoder.columns
        ]
    outputs: list[ColSpec | TensorSpec] = (
        [ColSpec("double", c.PROBABILITY)]
        if target.is_binary
        else [ColSpec("double", f"{c.PROBABILITY}_{k}") for k in target.classes]
    )
    pyfunc = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_CODE),
        artifacts={"bundle": str(bundle_dir)},
        code_paths=[str(code)],
        signature=ModelSignature(Schema(inputs), Schema(outputs)),
        pip_requirements=requirements,
    )
    rows, cols = bundle.config.image_rows, bundle.config.image_cols
    torch_signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, 1, rows, cols), "image")]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, target.num_outputs), "logits")]),
    )
    raw = mlflow.pytorch.log_model(
        model,
        name="torch-model",
        signature=torch_signature,
        code_paths=[str(code)],
        serialization_format="pickle",
        pip_requirements=requirements,
    )
    return pyfunc.model_uri, raw.model_uri
