"""Class-imbalance handling for the training rows (about 2% of images are positive).

Applied to training rows only, after the patient split. Three strategies:
- ``none``: every row once per epoch, shuffled;
- ``oversample``: positives repeated until they make ``target_positive_fraction`` of the
  epoch (1/8 is the winners' 1:7);
- ``balanced``: every row once per epoch, and every batch holds at least ``min_positives``
  positives (positives are repeated where there are too few to go round).

All functions return row indices into the ``labels`` array they were given.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.int64]


class SamplerKind(StrEnum):
    NONE = "none"
    OVERSAMPLE = "oversample"
    BALANCED = "balanced"


class SamplingError(ValueError):
    """Batches cannot be drawn as asked (bad fraction or batch size, no positive at all)."""


def _binary(labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise SamplingError(f"labels must be 1-D, got shape {array.shape}")
    return array > 0


def oversample_indices(
    labels: npt.ArrayLike, target_positive_fraction: float, rng: np.random.Generator
) -> IndexArray:
    """Shuffled indices where positives are repeated to make ``target_positive_fraction``.

    Negatives appear once. With P positives, Q negatives and target f, the positives fill
    K = round(f * Q / (1 - f)) slots (never fewer than P): each positive appears K // P times
    and K % P of them, chosen at random, once more. Without positives, or when positives
    already reach f, every row appears once.
    """
    if not 0.0 < target_positive_fraction < 1.0:
        raise SamplingError(
            f"target_positive_fraction must be in (0, 1): {target_positive_fraction}"
        )
    positive = _binary(labels)
    pos = np.flatnonzero(positive)
    neg = np.flatnonzero(~positive)
    slots = round(target_positive_fraction * len(neg) / (1.0 - target_positive_fraction))
    if len(pos) == 0 or slots <= len(pos):
        return rng.permutation(len(positive)).astype(np.int64)
    repeats, extra = divmod(slots, len(pos))
    chosen = np.concatenate([np.repeat(pos, repeats), rng.choice(pos, extra, replace=False)])
    return rng.permutation(np.concatenate([neg, chosen])).astype(np.int64)


def balanced_batches(
    labels: npt.ArrayLike,
    batch_size: int,
    min_positives: int = 1,
    *,
    rng: np.random.Generator,
) -> list[IndexArray]:
    """One epoch of batches covering every row once, each with >= ``min_positives`` positives.

    The number of batches B is the smallest that fits all negatives beside ``min_positives``
    positives per batch: B = max(ceil(N / batch_size), ceil(Q / (batch_size - min_positives))).
    Positives are shuffled, topped up with random repeats to B * min_positives when there are
    fewer, and dealt round-robin over the batches; shuffled negatives fill the rest. The
    batch order and the order inside each batch are shuffled.
    """
    if batch_size < 1 or not 0 <= min_positives < batch_size:
        raise SamplingError(
            f"need 0 <= min_positives ({min_positives}) < batch_size ({batch_size})"
        )
    positive = _binary(labels)
    pos = rng.permutation(np.flatnonzero(positive))
    neg = rng.permutation(np.flatnonzero(~positive))
    if len(positive) == 0:
        return []
    if len(pos) == 0 and min_positives > 0:
        raise SamplingError("no positive row: cannot put a positive in every batch")
    n_batches = max(-(-len(positive) // batch_size), -(-len(neg) // (batch_size - min_positives)))
    shortfall = n_batches * min_positives - len(pos)
    if shortfall > 0:
        pos = np.concatenate([pos, rng.choice(pos, shortfall, replace=True)])
    batches: list[IndexArray] = []
    start = 0
    for b in range(n_batches):
        dealt = pos[b::n_batches]
        take = batch_size - len(dealt)
        batch = np.concatenate([dealt, neg[start : start + take]])
        start += take
        batches.append(rng.permutation(batch).astype(np.int64))
    order = rng.permutation(n_batches)
    return [batches[i] for i in order]


def epoch_batches(
    labels: npt.ArrayLike,
    kind: SamplerKind | str,
    batch_size: int,
    *,
    rng: np.random.Generator,
    target_positive_fraction: float = 0.125,
    min_positives: int = 1,
) -> list[IndexArray]:
    """One training epoch as a list of index batches, with the strategy ``kind``."""
    if kind not in set(SamplerKind):
        raise SamplingError(
            f"unknown sampler {kind!r}; choose from {[k.value for k in SamplerKind]}"
        )
    kind = SamplerKind(kind)
    if kind is SamplerKind.BALANCED:
        return balanced_batches(labels, batch_size, min_positives, rng=rng)
    if batch_size < 1:
        raise SamplingError(f"batch_size must be >= 1, got {batch_size}")
    if kind is SamplerKind.OVERSAMPLE:
        order = oversample_indices(labels, target_positive_fraction, rng)
    else:
        order = rng.permutation(len(_binary(labels))).astype(np.int64)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
