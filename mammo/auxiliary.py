"""Auxiliary targets: extra outputs trained beside the main target, never shipped.

The winners of the RSNA challenge trained the cancer logit together with heads for the
columns recorded for training images only (BIRADS, density, biopsy, invasive,
difficult_negative_case): the extra signal shapes the features, and the heads are dropped
after training. Here the auxiliary outputs are extra columns of the one linear head
(``build_model`` sizes it from ``TrainConfig.aux_targets``), so every backbone gets them
without change:

    logits (N, K + sum(widths))  =  [main K | aux 1 | aux 2 | ...]

The labels travel as one float matrix ``(N, 1 + A)``: the main label in column 0, one
column per auxiliary target (0/1 or a class index; NaN where the row has none, so that row
adds nothing to that target's loss). After training, :func:`main_state` cuts the head back
to the main target's K outputs: the shipped model is the shape a plain run makes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mammo.training import Target, TrainConfig

HEAD_WEIGHT, HEAD_BIAS = "head.1.weight", "head.1.bias"  # mammo.models.Classifier's head


def aux_targets(cfg: TrainConfig) -> tuple[Target, ...]:
    return tuple(Target.for_column(name, auxiliary=True) for name in cfg.aux_targets)


def aux_labels(frame: pd.DataFrame, targets: tuple[Target, ...]) -> npt.NDArray[np.float32]:
    """(N, A) float32: each row's value of each auxiliary target (NaN: none)."""
    columns = [t.values(frame) for t in targets]
    return np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0), np.float32)


def stack_labels(
    main: npt.NDArray[np.float32] | npt.NDArray[np.int64], aux: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """(N,) main labels and (N, A) auxiliary values -> the (N, 1 + A) matrix the loss takes."""
    return np.concatenate([np.asarray(main, np.float32)[:, None], aux], axis=1)


class MultiTaskLoss(nn.Module):
    """The main target's loss plus ``weight`` x the mean of the auxiliary losses.

    ``forward(logits (N, K + sum widths), labels (N, 1 + A) float)``. Each auxiliary loss is
    the mean over the rows of the batch that have a value; a target none of them has is left
    out of the mean.
    """

    def __init__(self, main: Target, targets: tuple[Target, ...], weight: float) -> None:
        super().__init__()
        self.main, self.main_loss = main, main.loss_fn()
        self.targets, self.weight = targets, weight

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        k = self.main.num_outputs
        main_labels = labels[:, 0] if self.main.is_binary else labels[:, 0].long()
        loss: Tensor = self.main_loss(logits[:, :k], main_labels)
        start, extra = k, []
        for j, target in enumerate(self.targets):
            width, values = target.num_outputs, labels[:, 1 + j]
            known = ~torch.isnan(values)
            part = logits[known, start : start + width]  # (n_known, width)
            start += width
            if not bool(known.any()):
                continue
            if target.is_binary:
                extra.append(F.binary_cross_entropy_with_logits(part[:, 0], values[known]))
            else:
                extra.append(F.cross_entropy(part, values[known].long()))
        if extra:
            loss = loss + self.weight * torch.stack(extra).mean()
        return loss


def training_loss(cfg: TrainConfig, target: Target) -> nn.Module:
    """The loss training minimizes: the target's own, or with the auxiliary heads'."""
    targets = aux_targets(cfg)
    return MultiTaskLoss(target, targets, cfg.aux_weight) if targets else target.loss_fn()


def main_state(state: dict[str, Tensor], target: Target) -> dict[str, Tensor]:
    """A trained state dict with the head cut to the target's own outputs."""
    cut = dict(state)
    for key in (HEAD_WEIGHT, HEAD_BIAS):
        cut[key] = cut[key][: target.num_outputs].clone()
    return cut
