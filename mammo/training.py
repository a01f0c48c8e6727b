"""The pieces of the training loop, in plain torch, identical on CPU and GPU.

The Ray Train loop (outside ``mammo``) composes them, once per epoch:
  ``epoch_batches`` (sampling) -> ``make_batch`` -> ``train_epoch`` (augment + ``train_step``)
  -> ``predict_batches`` on val -> ``Target.probabilities`` -> ``Target.report``
  -> ``EarlyStopping.update``.
Devices are arguments; mixed precision (fp16 autocast + GradScaler) is used only when
``amp`` is on and the device is CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammo.augment import AugmentConfig, augment_batch
from mammo.contract import (
    BIOPSY,
    BIRADS,
    BIRADS_VALUES,
    CANCER,
    DENSITIES,
    DENSITY,
    INVASIVE,
    LATERALITY,
    PATIENT_ID,
    SITE_ID,
)
from mammo.metrics import AGGREGATIONS, Aggregation, binary_report, multiclass_report
from mammo.models import ModelSpec, create_model, list_models
from mammo.pretrained import SUFFIXES, load_pretrained
from mammo.sampling import SamplerKind

BINARY_TARGETS = (CANCER, BIOPSY, INVASIVE)
MULTICLASS_TARGETS: dict[str, tuple[str, ...] | tuple[int, ...]] = {
    DENSITY: DENSITIES,
    BIRADS: BIRADS_VALUES,
}
_PROBABILITY = "_probability"  # scratch column for binary_report


class TrainConfigError(ValueError):
    """A training config or target that cannot be used."""


@dataclass(frozen=True)
class TrainConfig:
    """What to train; saved with every model (``to_dict``)."""

    model: str = "small_cnn"
    pretrained: str | None = None  # a local weights file for the backbone (mammo/pretrained.py)
    image_rows: int = 512
    image_cols: int = 256
    target: str = CANCER
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.2
    sampler: SamplerKind = SamplerKind.BALANCED
    target_positive_fraction: float = 0.125  # "oversample": 1 positive to 7 negatives
    min_positives: int = 1  # "balanced": positives in every batch
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fuse_metadata: bool = False
    early_stopping_patience: int = 3
    monitor: str = "auc"  # a key of Target.report
    monitor_mode: Literal["max", "min"] = "max"
    aggregation: Aggregation = "mean"
    seed: int = 0
    amp: bool = True
    num_workers: int = 1
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "sampler", SamplerKind(self.sampler))
        except ValueError as error:
            raise TrainConfigError(f"unknown sampler {self.sampler!r}") from error
        if self.model not in list_models():
            raise TrainConfigError(f"unknown model {self.model!r}; known: {list_models()}")
        Target.for_column(self.target)
        if self.pretrained is not None and Path(self.pretrained).suffix not in SUFFIXES:
            raise TrainConfigError(
                f"pretrained weights must be a {' or '.join(SUFFIXES)} file: {self.pretrained}"
            )
        positive = ("image_rows", "image_cols", "epochs", "batch_size", "num_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.early_stopping_patience >= 1):
            raise TrainConfigError("need lr > 0, weight_decay >= 0, early_stopping_patience >= 1")
        if self.aggregation not in AGGREGATIONS or self.monitor_mode not in ("max", "min"):
            raise TrainConfigError(
                f"bad aggregation/monitor_mode: {self.aggregation}, {self.monitor_mode}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sampler"] = self.sampler.value
        data["augment"] = self.augment.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise TrainConfigError(f"unknown TrainConfig keys: {sorted(unknown)}")
        values = dict(data)
        if "augment" in values:
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        return cls(**values)


class BinaryLogitLoss(nn.Module):
    """BCE-with-logits between (N, 1) logits and (N,) 0/1 labels."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.to(logits.dtype))


@dataclass(frozen=True)
class Target:
    """The label column a model learns: binary (one logit, BCE) or K classes (softmax CE)."""

    column: str
    classes: tuple[str, ...] | tuple[int, ...] = ()  # empty for a binary target

    @classmethod
    def for_column(cls, column: str) -> Target:
        if column in BINARY_TARGETS:
            return cls(column)
        if column in MULTICLASS_TARGETS:
            return cls(column, MULTICLASS_TARGETS[column])
        known = [*BINARY_TARGETS, *MULTICLASS_TARGETS]
        raise TrainConfigError(f"{column!r} is not a trainable target; choose from {known}")

    @property
    def is_binary(self) -> bool:
        return not self.classes

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_binary else len(self.classes)

    def _class_index(self, df: pd.DataFrame) -> pd.Series:
        """Class index per row (float, NaN where unlabeled or outside the classes)."""
        keys = {str(c): i for i, c in enumerate(self.classes)}
        values = df[self.column].map(lambda v: keys.get(_label_key(v), math.nan))
        return values.astype(float)

    def labeled(self, df: pd.DataFrame) -> pd.Series:
        """Boolean mask of rows that carry a usable label (train only on those)."""
        if self.is_binary:
            return pd.to_numeric(df[self.column], errors="coerce").isin((0, 1))
        return self._class_index(df).notna()

    def labels(self, df: pd.DataFrame) -> npt.NDArray[np.float32] | npt.NDArray[np.int64]:
        """(N,) float32 0/1 for binary, int64 class indices otherwise; every row labeled."""
        if not bool(self.labeled(df).all()):
            raise TrainConfigError(f"rows without a usable {self.column!r} label; filter first")
        if self.is_binary:
            binary: npt.NDArray[np.float32] = pd.to_numeric(df[self.column]).to_numpy(np.float32)
            return binary
        index: npt.NDArray[np.int64] = self._class_index(df).to_numpy(np.int64)
        return index

    def loss_fn(self) -> nn.Module:
        return BinaryLogitLoss() if self.is_binary else nn.CrossEntropyLoss()

    def probabilities(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """(N, 1) logits -> (N,) sigmoid, or (N, K) logits -> (N, K) softmax."""
        values = torch.from_numpy(np.asarray(logits, dtype=np.float64))
        if self.is_binary:
            return torch.sigmoid(values[:, 0]).numpy()
        return torch.softmax(values, dim=1).numpy()

    def report(
        self, df: pd.DataFrame, probabilities: npt.NDArray[np.float64], aggregation: Aggregation
    ) -> dict[str, float]:
        """Metrics of predictions for the rows of ``df`` (same order): breast-level
        ``binary_report`` or image-level ``multiclass_report``."""
        if not self.is_binary:
            names = [str(c) for c in self.classes]
            return multiclass_report(self.labels(df), probabilities, names)
        columns = [c for c in (PATIENT_ID, LATERALITY, SITE_ID, self.column) if c in df.columns]
        frame = df[columns].copy()
        frame[_PROBABILITY] = np.asarray(probabilities)
        return binary_report(frame, aggregation, prob_col=_PROBABILITY, label_col=self.column)


def _label_key(value: object) -> str:
    if isinstance(value, float | np.floating) and not math.isnan(value) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Batch:
    images: Tensor  # (N, 1, H, W) float32 in [0, 1]
    labels: Tensor  # (N,) float32 0/1, or int64 class indices
    metadata: Tensor | None = None  # (N, F) float32

    def to(self, device: torch.device) -> Batch:
        metadata = None if self.metadata is None else self.metadata.to(device, non_blocking=True)
        return Batch(
            self.images.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            metadata,
        )


def images_to_tensor(images: npt.NDArray[Any]) -> Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1] (floats are taken as in [0, 1])."""
    if images.ndim != 3:
        raise TrainConfigError(f"images must be (N, H, W), got {images.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    scaled = tensor.float() / 255.0 if images.dtype == np.uint8 else tensor.float()
    return scaled.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)


def make_batch(
    images: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    metadata: npt.NDArray[np.float32] | None = None,
) -> Batch:
    meta = None if metadata is None else torch.from_numpy(np.asarray(metadata, np.float32))
    return Batch(images_to_tensor(images), torch.from_numpy(np.asarray(labels)), meta)


def build_model(cfg: TrainConfig, target: Target, metadata_features: int = 0) -> nn.Module:
    """The registered ``cfg.model``, initialized from ``cfg.seed`` (the global RNG is left as
    it was); fuses a metadata vector of ``metadata_features`` when ``cfg.fuse_metadata``."""
    spec = ModelSpec(
        num_outputs=target.num_outputs,
        metadata_features=metadata_features if cfg.fuse_metadata else 0,
        dropout=cfg.dropout,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, spec)
    if cfg.pretrained is not None:
        load_pretrained(model.backbone, cfg.pretrained)
    return model


def check_pretrained(cfg: TrainConfig) -> None:
    """Raise PretrainedError now if ``cfg.pretrained`` is unreadable or does not fit
    ``cfg.model``'s backbone (before a cluster starts); nothing to check without one."""
    if cfg.pretrained is not None:
        load_pretrained(create_model(cfg.model, ModelSpec()).backbone, cfg.pretrained)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_grad_scaler(amp: bool, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler when mixed precision applies (``amp`` and a CUDA device), else None."""
    return torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None


def train_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
) -> float:
    """One optimizer step on ``batch``; returns the loss. fp16 autocast iff a scaler is given
    and the device is CUDA (see ``make_grad_scaler``); the loss is computed in float32."""
    model.train()
    batch = batch.to(device)
    optimizer.zero_grad(set_to_none=True)
    amp = scaler is not None and device.type == "cuda"
    with torch.autocast(device.type, torch.float16, enabled=amp):
        logits: Tensor = model(batch.images, batch.metadata)
    loss: Tensor = loss_fn(logits.float(), batch.labels)
    if scaler is not None:
        torch.autograd.backward(scaler.scale(loss))
        scaler.step(optimizer)
        scaler.update()
    else:
        torch.autograd.backward(loss)
        optimizer.step()
    return float(loss.detach())


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    after_step: Callable[[], None] | None = None,
) -> float:
    """``train_step`` over ``batches``, augmenting each on ``device`` first when ``augment``
    is given (training rows only), calling ``after_step`` after each optimizer step (an
    EMA update, for instance); returns the mean loss weighted by batch size."""
    if augment is not None and generator is None:
        raise TrainConfigError("augmentation needs a seeded torch.Generator")
    total, count = 0.0, 0
    for batch in batches:
        if augment is not None and generator is not None:
            images = augment_batch(batch.images.to(device), augment, generator)
            batch = Batch(images, batch.labels, batch.metadata)
        n = int(batch.labels.shape[0])
        total += train_step(model, batch, optimizer, loss_fn, scaler, device) * n
        count += n
        if after_step is not None:
            after_step()
    return total / count if count else math.nan


def predict_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    amp: bool = False,
    vflip: bool = False,
) -> npt.NDArray[np.float32]:
    """Logits (N, num_outputs) float32 for the batches, in order (eval mode, no gradients).

    ``vflip``: test-time augmentation, the mean of the logits of each image and of its
    top-bottom mirror (the flip training augments with; there is no left-right one)."""
    model.eval()
    outputs: list[npt.NDArray[np.float32]] = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, torch.float16, enabled=amp and device.type == "cuda"),
    ):
        for batch in batches:
            on_device = batch.to(device)
            logits: Tensor = model(on_device.images, on_device.metadata)
            if vflip:  # (N, 1, H, W): dim 2 is the rows
                mirrored: Tensor = model(on_device.images.flip(dims=(2,)), on_device.metadata)
                logits = (logits.float() + mirrored.float()) / 2
            outputs.append(logits.float().cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs, axis=0)


def weight_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights and BatchNorm statistics:
    call ``update_parameters(model)`` after each optimizer step; the average is a model."""
    if not 0.0 < decay < 1.0:
        raise TrainConfigError(f"EMA decay must be in (0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    average = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]  # torch leaves it bare
    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


class EarlyStopping:
    """Stop once ``patience`` epochs in a row have not improved ``best`` by more than
    ``min_delta`` (patience 3: improve at epoch 2, nothing at 3, 4, 5 -> stop after 5).

    ``update(value)`` returns True when training should stop; ``improved`` tells whether the
    last value was a new best (the moment to checkpoint). NaN never improves.
    """

    def __init__(self, patience: int, mode: Literal["max", "min"] = "max", min_delta: float = 0.0):
        if patience < 1 or mode not in ("max", "min") or min_delta < 0:
            raise TrainConfigError(f"bad early stopping: patience={patience}, mode={mode!r}")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: float | None = None
        self.best_epoch = -1
        self.epochs_without_improvement = 0
        self.improved = False
        self._epoch = -1

    def update(self, value: float) -> bool:
        self._epoch += 1
        if math.isnan(value):
            self.improved = False
        elif self.best is None:
            self.improved = True
        elif self.mode == "max":
            self.improved = value > self.best + self.min_delta
        else:
            self.improved = value < self.best - self.min_delta
        if self.improved:
            self.best, self.best_epoch = value, self._epoch
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= self.patience
