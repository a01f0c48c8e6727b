"""Patient-level train / val / holdout splits, made before any oversampling or augmentation.

Two rules, in this order:

1. **Holdout** — a patient is in the holdout when a stable hash of ``(salt, patient_id)``
   (BLAKE2b, 64-bit digest, read as a fraction of 2**64) falls below ``holdout_fraction``.
   Membership depends on nothing but the salt and the patient's own id, so the holdout stays
   the same night after night as data grows: a challenger and the champion are compared on
   patients neither of them trained on.
2. **Train / val** — the other patients are split, stratified on the patient-level label (a
   patient is positive when any of their images is positive): within each stratum, the
   patients are sorted by id, shuffled with a generator seeded from ``(seed, stratum)``, and
   the first ``val_fraction * n`` (rounded half up) go to val. ``val_fraction`` is a share of the
   non-holdout patients.

Every image of a patient gets the patient's split. Save :meth:`SplitConfig.to_dict` with the
run: the same config on the same patients gives the same splits.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from mammo.contract import PATIENT_ID, SPLIT


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    HOLDOUT = "holdout"


class SplitError(ValueError):
    """The frame cannot be split as asked (missing column, missing label, bad fraction)."""


@dataclass(frozen=True)
class SplitConfig:
    holdout_fraction: float = 0.15
    val_fraction: float = 0.15
    seed: int = 0
    holdout_salt: str = "mammo-holdout-v1"

    def __post_init__(self) -> None:
        for name in ("holdout_fraction", "val_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise SplitError(f"{name} must be in [0, 1), got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitConfig:
        return cls(**data)


def holdout_score(patient_id: int, salt: str) -> float:
    """Stable pseudo-random number in [0, 1) for a patient: BLAKE2b-64 of ``"{salt}:{id}"``.

    Unlike Python's ``hash()``, it is the same in every process and on every machine.
    """
    digest = hashlib.blake2b(f"{salt}:{int(patient_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_holdout(patient_id: int, cfg: SplitConfig) -> bool:
    return holdout_score(patient_id, cfg.holdout_salt) < cfg.holdout_fraction


def assign_splits(df: pd.DataFrame, cfg: SplitConfig, label_column: str) -> pd.Series:
    """Split of every row of ``df`` ("train" / "val" / "holdout"), indexed like ``df``.

    ``df`` needs ``patient_id`` and ``label_column`` (0/1, no missing values).
    """
    for column in (PATIENT_ID, label_column):
        if column not in df.columns:
            raise SplitError(f"column {column!r} is missing")
    labels = pd.to_numeric(df[label_column], errors="coerce")
    if labels.isna().any():
        raise SplitError(f"{int(labels.isna().sum())} rows have no {label_column!r} label")
    patient_label = (labels > 0).groupby(df[PATIENT_ID].to_numpy()).any()  # patient -> bool

    patient_split: dict[int, Split] = {}
    remaining: dict[bool, list[int]] = {False: [], True: []}
    for patient, positive in patient_label.items():
        if is_holdout(int(patient), cfg):
            patient_split[int(patient)] = Split.HOLDOUT
        else:
            remaining[bool(positive)].append(int(patient))

    for stratum, patients in remaining.items():
        rng = np.random.default_rng([cfg.seed, int(stratum)])
        order = rng.permutation(sorted(patients))  # sorted first: independent of row order
        n_val = int(cfg.val_fraction * len(order) + 0.5)  # rounded half up
        for i, patient in enumerate(order):
            patient_split[int(patient)] = Split.VAL if i < n_val else Split.TRAIN

    values = [patient_split[int(p)].value for p in df[PATIENT_ID]]
    return pd.Series(values, index=df.index, name=SPLIT, dtype=object)
