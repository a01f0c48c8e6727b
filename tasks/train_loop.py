"""The loop every Ray Train worker runs: the mammo.training pieces, on Ray's data and devices.

Per epoch: sampled batches of this worker's share of the training rows (oversampling or
balanced batches, binary targets only) -> augment + optimizer steps (DDP when several
workers; gradients accumulated over ``accumulate`` batches; an EMA of the weights updated
after each step when ``ema_decay`` is set) -> predictions on all the validation rows, which
every worker holds (of the EMA when there is one; with test-time flips when ``tta_vflip``),
so each one computes the same breast-level metrics and takes the same early-stopping
decision -> ``ray.train.report`` with a checkpoint from rank 0. A restarted worker group
resumes from the last checkpoint: model, optimizer, EMA, epoch, history, early-stopping
state, best weights.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from mammo import contract as c
from mammo.auxiliary import stack_labels, training_loss
from mammo.sampling import SamplerKind, epoch_batches
from mammo.training import (
    Batch,
    EarlyStopping,
    Target,
    TrainConfig,
    build_model,
    make_batch,
    make_grad_scaler,
    make_optimizer,
    predict_batches,
    train_epoch,
    weight_ema,
)
from tasks.cluster import publish_training_metrics
from tasks.train_data import AUX, IMAGE, LABEL, METADATA, dataset_arrays

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training could not produce a model; the message says why."""


STATE_FILE = "state.pt"
EVAL_BATCH = 64


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(config["train"])
    target = Target.for_column(cfg.target)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(int(config.get("threads", 1)))
    torch.manual_seed(cfg.seed + rank)

    train = dataset_arrays(ray.train.get_dataset_shard("train"))
    val = dataset_arrays(ray.train.get_dataset_shard("val"))
    model = build_model(cfg, target, int(config["metadata_features"])).to(device)
    optimizer = make_optimizer(model, cfg)
    ema = weight_ema(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    scaler = make_grad_scaler(cfg.amp, device)
    stopper = EarlyStopping(cfg.early_stopping_patience, cfg.monitor_mode)
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = read_state(directory)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        stopper.__dict__.update(state["stopper"])
        history, best_state, start_epoch = state["history"], state["best"], state["epoch"] + 1
        log.info("rank %d resumes at epoch %d", rank, start_epoch)

    trained = ray.train.torch.prepare_model(model) if world > 1 else model
    loss_fn = training_loss(cfg, target)
    generator = torch.Generator().manual_seed(cfg.seed * 1009 + rank)
    augment = cfg.augment if cfg.augment.enabled else None

    for epoch in range(start_epoch, cfg.epochs):
        batches = _epoch_indices(train[LABEL] if train else np.zeros(0), cfg, target, rank, epoch)
        batches = batches[: _min_over_workers(len(batches), world, device)]
        loss = train_epoch(
            trained,
            (_batch(train, idx, aux=True) for idx in batches),
            optimizer,
            loss_fn,
            scaler,
            device,
            augment,
            generator,
            after_step=None if ema is None else lambda: ema.update_parameters(model),
            accumulate=cfg.accumulate,
        )
        loss = _mean_over_workers(loss, world, device)
        # With an EMA, the average is what is validated, kept and shipped.
        shipped = model if ema is None else ema.module
        metrics = {k: float(v) for k, v in _validate(shipped, val, target, cfg, device).items()}
        stop = stopper.update(metrics.get(cfg.monitor, math.nan))
        if stopper.improved or best_state is None:
            best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in shipped.state_dict().items()}
            )
        record = {"epoch": float(epoch), "train_loss": float(loss), **metrics}
        history.append(record)
        if rank == 0:  # before the checkpoint: a restart from it never leaves the epoch unlogged
            _log_live(config.get("mlflow"), record, epoch)
        _report(record, rank, model, ema, optimizer, stopper, history, best_state, epoch)
        if stop:
            break


def _epoch_indices(
    labels: np.ndarray, cfg: TrainConfig, target: Target, rank: int, epoch: int
) -> list[np.ndarray]:
    rng = np.random.default_rng([cfg.seed, rank, epoch])
    kind = cfg.sampler if target.is_binary and bool((labels > 0).any()) else SamplerKind.NONE
    return epoch_batches(
        labels,
        kind,
        cfg.batch_size,
        rng=rng,
        target_positive_fraction=cfg.target_positive_fraction,
        min_positives=cfg.min_positives,
    )


def _batch(arrays: dict[str, np.ndarray], idx: np.ndarray, aux: bool = False) -> Batch:
    """Rows ``idx`` as a batch; ``aux``: the labels with the auxiliary targets' values."""
    metadata = arrays[METADATA][idx] if METADATA in arrays else None
    labels = arrays[LABEL][idx]
    if aux and AUX in arrays:
        labels = stack_labels(labels, arrays[AUX][idx])
    return make_batch(arrays[IMAGE][idx], labels, metadata)


def _validate(
    model: torch.nn.Module,
    val: dict[str, np.ndarray],
    target: Target,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Breast-level metrics on all the validation rows (each worker has them all, so each
    computes the same figures and takes the same early-stopping decision)."""
    n = len(val.get(c.IMAGE_ID, []))
    if n == 0:
        return {}
    chunks = [np.arange(i, min(i + EVAL_BATCH, n)) for i in range(0, n, EVAL_BATCH)]
    batches = (_batch(val, idx) for idx in chunks)
    logits = predict_batches(model, batches, device, cfg.amp, cfg.tta_vflip)
    logits = logits[:, : target.num_outputs]  # the auxiliary heads' outputs are not scored
    frame = pd.DataFrame(
        {
            c.PATIENT_ID: val[c.PATIENT_ID],
            c.LATERALITY: val[c.LATERALITY],
            c.SITE_ID: val[c.SITE_ID],
            target.column: val[LABEL],
        }
    )
    probabilities = target.probabilities(logits.astype(np.float32))
    return {k: float(v) for k, v in target.report(frame, probabilities, cfg.aggregation).items()}


def _min_over_workers(value: int, world: int, device: torch.device) -> int:
    """DDP needs the same number of steps on every worker."""
    if world == 1:
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def _mean_over_workers(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    tensor = torch.tensor([0.0 if math.isnan(value) else value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / world


def _report(
    record: dict[str, float],
    rank: int,
    model: torch.nn.Module,
    ema: torch.optim.swa_utils.AveragedModel | None,
    optimizer: torch.optim.Optimizer,
    stopper: EarlyStopping,
    history: list[dict[str, float]],
    best_state: dict[str, torch.Tensor],
    epoch: int,
) -> None:
    """Report the epoch; rank 0 attaches the checkpoint that a restart resumes from."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            state = {
                "model": _cpu(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "ema": None if ema is None else _cpu(ema.state_dict()),
                "stopper": dict(stopper.__dict__),
                "history": history,
                "best": best_state,
                "epoch": epoch,
            }
            torch.save(state, Path(directory) / STATE_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(record, checkpoint=checkpoint)
    publish_training_metrics([record])


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def read_state(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's training state: tensors and plain values only.

    Checkpoints live on shared storage; ``weights_only`` refuses any pickled object, so
    whoever can write the bucket cannot run code in training.
    """
    try:
        state: dict[str, Any] = torch.load(
            Path(directory) / STATE_FILE, map_location="cpu", weights_only=True
        )
    except pickle.UnpicklingError as exc:
        raise TrainingError(f"checkpoint {directory} holds more than tensors: {exc}") from exc
    return state


def _log_live(tracking: dict[str, str] | None, record: dict[str, float], epoch: int) -> None:
    """Per-epoch metrics to the MLflow run while training runs (the driver created it)."""
    if not tracking:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    finite = {k: v for k, v in record.items() if k != "epoch" and math.isfinite(v)}
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, epoch) for k, v in finite.items()]
    try:
        MlflowClient(tracking["tracking_uri"], tracking["tracking_uri"]).log_batch(
            tracking["run_id"], metrics=metrics
        )
    except MlflowException as exc:  # metrics also travel in the checkpoint's history
        log.warning("could not log epoch %d to MLflow: %s", epoch, exc)
