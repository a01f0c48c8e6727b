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
    DIFFICULT_NEGATIVE,
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
# Columns a model may learn as auxiliary outputs beside its target (mammo/auxiliary.py).
AUX_TARGETS = (BIRADS, DENSITY, BIOPSY, INVASIVE, DIFFICULT_NEGATIVE)
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
    aux_targets: tuple[str, ...] = ()  # extra heads, training only (mammo/auxiliary.py)
    aux_weight: float = 0.2  # the auxiliary losses' mean, weighted, is added to the loss
    early_stopping_patience: int = 3
    monitor: str = "auc"  # a key of Target.report
    monitor_mode: Literal["max", "min"] = "max"
    aggregation: Aggregation = "mean"
    seed: int = 0
    amp: bool = True
    accumulate: int = 1  # batches per optimizer step (gradient accumulation)
    ema_decay: float | None = None  # keep and ship an EMA of the weights (e.g. 0.999)
    tta_vflip: bool = False  # score each image and its top-bottom mirror, mean of the logits
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
        object.__setattr__(self, "aux_targets", tuple(self.aux_targets))  # TOML/JSON: a list
        unknown = [n for n in self.aux_targets if n not in AUX_TARGETS]
        if unknown or len(set(self.aux_targets)) < len(self.aux_targets):
            bad = unknown or "a name repeated"
            raise TrainConfigError(f"aux_targets must be distinct, from {list(AUX_TARGETS)}: {bad}")
        if self.target in self.aux_targets or not self.aux_weight > 0:
            raise TrainConfigError("aux_targets cannot hold the target; aux_weight must be > 0")
        if self.pretrained is not None and Path(self.pretrained).suffix not in SUFFIXES:
            raise TrainConfigError(
                f"pretrained weights must be a {' or '.join(SUFFIXES)} file: {self.pretrained}"
            )
        positive = ("image_rows", "image_cols", "epochs", "batch_size", "accumulate", "num_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.early_stopping_patience >= 1):
            raise TrainConfigError("need lr > 0, weight_decay >= 0, early_stopping_patience >= 1")
        decay = self.ema_decay
        if decay is not None and not (isinstance(decay, int | float) and 0.0 < decay < 1.0):
            raise TrainConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.aggregation not in AGGREGATIONS or self.monitor_mode not in ("max", "min"):
            raise TrainConfigError(
                f"bad aggregation/monitor_mode: {self.aggregation}, {self.monitor_mode}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sampler"] = self.sampler.value
        data["augment"] = self.augment.to_dict()
        data["aux_targets"] = list(self.aux_targets)
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
    def for_column(cls, column: str, auxiliary: bool = False) -> Target:
        """The target of ``column``; ``auxiliary`` admits the columns only trained beside one
        (``difficult_negative_case``)."""
        if column in BINARY_TARGETS or (auxiliary and column == DIFFICULT_NEGATIVE):
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

    def values(self, df: pd.DataFrame) -> npt.NDArray[np.float32]:
        """(N,) float32: 0/1 or the class index of each row, NaN where it has none."""
        if self.column not in df.columns:
            return np.full(len(df), np.nan, np.float32)
        if self.is_binary:
            numeric = pd.to_numeric(df[self.column].astype("object"), errors="coerce")
            index = numeric.astype(float).where(numeric.isin((0, 1)))
        else:
            index = self._class_index(df)
        values: npt.NDArray[np.float32] = index.to_numpy(np.float32)
        return values

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
    it was); fuses a metadata vector of ``metadata_features`` when ``cfg.fuse_metadata``; its
    head has the outputs of ``cfg.aux_targets`` after the target's (mammo/auxiliary.py)."""
    auxiliary = sum(Target.for_column(n, auxiliary=True).num_outputs for n in cfg.aux_targets)
    spec = ModelSpec(
        num_outputs=target.num_outputs + auxiliary,
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
    optimizer.zero_grad(set_to_none=True)
    loss = _backward(model, batch, loss_fn, scaler, device, 1.0)
    _optimizer_step(optimizer, scaler)
    return loss


def _backward(
    model: nn.Module,
    batch: Batch,
    loss_fn: nn.Module,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
    weight: float,
) -> float:
    """Add the gradient of ``weight`` x the loss of ``batch``; returns the (unweighted) loss."""
    model.train()
    batch = batch.to(device)
    amp = scaler is not None and device.type == "cuda"
    with torch.autocast(device.type, torch.float16, enabled=amp):
        logits: Tensor = model(batch.images, batch.metadata)
    loss: Tensor = loss_fn(logits.float(), batch.labels)
    weighted = loss * weight
    torch.autograd.backward(scaler.scale(weighted) if scaler is not None else weighted)
    return float(loss.detach())


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


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
    accumulate: int = 1,
) -> float:
    """Optimizer steps over ``batches``, augmenting each on ``device`` first when ``augment``
    is given (training rows only); returns the mean loss weighted by batch size.

    ``accumulate``: the gradients of that many batches, each loss weighted by 1/accumulate,
    make one step (a batch ``accumulate`` times larger in the memory of one; a last partial
    group steps too). ``after_step`` runs after each optimizer step (an EMA update)."""
    if augment is not None and generator is None:
        raise TrainConfigError("augmentation needs a seeded torch.Generator")
    if accumulate < 1:
        raise TrainConfigError(f"accumulate must be >= 1, got {accumulate}")
    total, count, pending = 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        if augment is not None and generator is not None:
            images = augment_batch(batch.images.to(device), augment, generator)
            batch = Batch(images, batch.labels, batch.metadata)
        n = int(batch.labels.shape[0])
        total += _backward(model, batch, loss_fn, scaler, device, 1.0 / accumulate) * n
        count, pending = count + n, pending + 1
        if pending == accumulate:
            _optimizer_step(optimizer, scaler)
            pending = 0
            if after_step is not None:
                after_step()
    if pending:
        _optimizer_step(optimizer, scaler)
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
    """Logits (N, num_outputs) float32 for the batches, in order (eval mode, no gradients);
    ``vflip`` as in :func:`logits_of`."""
    model.eval()
    outputs: list[npt.NDArray[np.float32]] = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, torch.float16, enabled=amp and device.type == "cuda"),
    ):
        for batch in batches:
            on_device = batch.to(device)
            logits = logits_of(model, on_device.images, on_device.metadata, vflip)
            outputs.append(logits.cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs, axis=0)


def logits_of(
    model: nn.Module, images: Tensor, metadata: Tensor | None, vflip: bool = False
) -> Tensor:
    """float32 logits of an (N, 1, H, W) batch. ``vflip``: test-time augmentation, the mean
    of the logits of each image and of its top-bottom mirror (the flip training augments
    with; there is no left-right one)."""
    logits: Tensor = model(images, metadata)
    if vflip:  # (N, 1, H, W): dim 2 is the rows
        mirrored: Tensor = model(images.flip(dims=(2,)), metadata)
        return (logits.float() + mirrored.float()) / 2
    return logits.float()


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
