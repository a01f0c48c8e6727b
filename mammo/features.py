"""The metadata vector a fusion model takes beside the image.

Only details known at prediction time may be inputs (``contract.PREDICTION_TIME_COLUMNS``:
age, implant, site_id, machine_id, view, laterality). density, BIRADS, biopsy, invasive,
cancer and difficult_negative_case are missing for test images, so an encoder that names any
of them cannot be constructed (:class:`ForbiddenFeatureError`).

Layout of the vector, in this order, for the default columns:
  age        -> [age standardized with the training mean/std (0 when missing), age missing 0/1]
  implant    -> [implant 0/1 (0 when missing)]
  site_id    -> one-hot over the training sites + "unknown"
  machine_id -> one-hot over the training machines + "unknown" (the test set has machines
                never seen in training; they all land in "unknown")
  view       -> one-hot over contract.View + "unknown"
  laterality -> one-hot over contract.Laterality + "unknown"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo.contract import (
    AGE,
    IMPLANT,
    LATERALITY,
    MACHINE_ID,
    PREDICTION_TIME_COLUMNS,
    SITE_ID,
    TRAIN_ONLY_COLUMNS,
    VIEW,
    Laterality,
    View,
)

UNKNOWN = "unknown"


class FeatureError(ValueError):
    """The metadata encoder cannot be built or applied as asked."""


class ForbiddenFeatureError(FeatureError):
    """A column that is not known at prediction time was configured as a model input."""


@dataclass(frozen=True)
class MetadataEncoder:
    """Fitted, fixed encoding of prediction-time metadata into a float32 vector.

    Build it with :meth:`fit` on the training rows only; save it with the model
    (:meth:`to_dict`) so prediction uses the same vocabularies and age statistics.
    """

    columns: tuple[str, ...] = PREDICTION_TIME_COLUMNS
    age_mean: float = 0.0
    age_std: float = 1.0
    site_ids: tuple[int, ...] = ()
    machine_ids: tuple[int, ...] = ()
    views: tuple[str, ...] = tuple(v.value for v in View)
    lateralities: tuple[str, ...] = tuple(s.value for s in Laterality)

    def __post_init__(self) -> None:
        forbidden = [c for c in self.columns if c in TRAIN_ONLY_COLUMNS]
        if forbidden:
            raise ForbiddenFeatureError(
                f"{forbidden} are not known at prediction time and can never be model inputs"
            )
        unknown = [c for c in self.columns if c not in PREDICTION_TIME_COLUMNS]
        if unknown:
            raise ForbiddenFeatureError(
                f"{unknown} are not prediction-time columns {PREDICTION_TIME_COLUMNS}"
            )
        if len(set(self.columns)) != len(self.columns) or not self.columns:
            raise FeatureError(f"columns must be non-empty and distinct: {self.columns}")
        if not (math.isfinite(self.age_std) and self.age_std > 0):
            raise FeatureError(f"age_std must be a positive number, got {self.age_std}")

    @classmethod
    def fit(
        cls, df: pd.DataFrame, columns: Sequence[str] = PREDICTION_TIME_COLUMNS
    ) -> MetadataEncoder:
        """Learn age mean/std and the site and machine vocabularies from training rows."""
        columns = tuple(columns)
        cls(columns=columns)  # refuse forbidden columns before touching the data
        _require_columns(df, columns)
        age_mean, age_std = 0.0, 1.0
        if AGE in columns:
            ages = pd.to_numeric(df[AGE], errors="coerce").dropna().to_numpy(np.float64)
            if ages.size:
                age_mean = float(ages.mean())
                age_std = float(ages.std()) if ages.size > 1 and ages.std() > 0 else 1.0
        return cls(
            columns=columns,
            age_mean=age_mean,
            age_std=age_std,
            site_ids=_int_vocabulary(df, SITE_ID) if SITE_ID in columns else (),
            machine_ids=_int_vocabulary(df, MACHINE_ID) if MACHINE_ID in columns else (),
        )

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for column in self.columns:
            if column == AGE:
                names += [f"{AGE}_z", f"{AGE}_missing"]
            elif column == IMPLANT:
                names.append(IMPLANT)
            else:
                names += [f"{column}={v}" for v in (*self._vocabulary(column), UNKNOWN)]
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, df: pd.DataFrame) -> npt.NDArray[np.float32]:
        """Encode each row of ``df`` -> (N, n_features) float32, columns as feature_names."""
        _require_columns(df, self.columns)
        if not len(df):
            return np.zeros((0, self.n_features), dtype=np.float32)
        parts: list[npt.NDArray[np.float32]] = []
        for column in self.columns:
            if column == AGE:
                age = pd.to_numeric(df[AGE], errors="coerce").to_numpy(np.float64)
                missing = np.isnan(age)
                z = np.where(missing, 0.0, (age - self.age_mean) / self.age_std)
                parts.append(np.stack([z, missing], axis=1).astype(np.float32))  # (N, 2)
            elif column == IMPLANT:
                implant = pd.to_numeric(df[IMPLANT], errors="coerce").fillna(0).to_numpy()
                parts.append((implant > 0).astype(np.float32)[:, None])  # (N,) -> (N, 1)
            else:
                parts.append(self._one_hot(df[column], self._vocabulary(column)))
        return np.concatenate(parts, axis=1)  # (N, n_features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "age_mean": self.age_mean,
            "age_std": self.age_std,
            "site_ids": list(self.site_ids),
            "machine_ids": list(self.machine_ids),
            "views": list(self.views),
            "lateralities": list(self.lateralities),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetadataEncoder:
        return cls(
            columns=tuple(data["columns"]),
            age_mean=float(data["age_mean"]),
            age_std=float(data["age_std"]),
            site_ids=tuple(int(v) for v in data["site_ids"]),
            machine_ids=tuple(int(v) for v in data["machine_ids"]),
            views=tuple(str(v) for v in data["views"]),
            lateralities=tuple(str(v) for v in data["lateralities"]),
        )

    def _vocabulary(self, column: str) -> tuple[int, ...] | tuple[str, ...]:
        vocabularies: dict[str, tuple[int, ...] | tuple[str, ...]] = {
            SITE_ID: self.site_ids,
            MACHINE_ID: self.machine_ids,
            VIEW: self.views,
            LATERALITY: self.lateralities,
        }
        return vocabularies[column]

    @staticmethod
    def _one_hot(
        values: pd.Series, vocabulary: tuple[int, ...] | tuple[str, ...]
    ) -> npt.NDArray[np.float32]:
        """(N,) values -> (N, len(vocabulary) + 1); the last column is "unknown"."""
        position = {str(v): i for i, v in enumerate(vocabulary)}
        keys = [_key(v) for v in values]
        index = np.array([position.get(k, len(vocabulary)) for k in keys], dtype=np.int64)
        out = np.zeros((len(keys), len(vocabulary) + 1), dtype=np.float32)
        out[np.arange(len(keys)), index] = 1.0
        return out


def _key(value: object) -> str:
    """Vocabulary key of a cell: integral numbers as "21" (not "21.0"), missing as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _int_vocabulary(df: pd.DataFrame, column: str) -> tuple[int, ...]:
    values = pd.to_numeric(df[column], errors="coerce").dropna()
    return tuple(sorted({int(v) for v in values}))


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FeatureError(f"metadata columns missing from the frame: {missing}")
