"""The fusion metadata vector: fixed vocabularies, unknown buckets, no train-only inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mammo.contract import (
    AGE,
    BIRADS,
    CANCER,
    DENSITY,
    IMAGE_ID,
    IMPLANT,
    LATERALITY,
    MACHINE_ID,
    SITE_ID,
    VIEW,
)
from mammo.features import FeatureError, ForbiddenFeatureError, MetadataEncoder


def _train_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            IMAGE_ID: [1, 2, 3, 4],
            SITE_ID: [1, 1, 2, 2],
            MACHINE_ID: [49, 49, 21, 93],
            VIEW: ["CC", "MLO", "CC", "MLO"],
            LATERALITY: ["L", "L", "R", "R"],
            AGE: [50.0, 60.0, 70.0, math.nan],
            IMPLANT: [0, 1, 0, 0],
            CANCER: [0, 1, 0, 0],
            DENSITY: ["A", "B", None, "D"],
        }
    )


def test_fit_learns_age_statistics_and_vocabularies() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    assert enc.age_mean == pytest.approx(60.0)
    assert enc.age_std == pytest.approx(np.std([50.0, 60.0, 70.0]))
    assert enc.site_ids == (1, 2)
    assert enc.machine_ids == (21, 49, 93)
    # 2 age + 1 implant + (2+1) site + (3+1) machine + (6+1) view + (2+1) laterality
    assert enc.n_features == 2 + 1 + 3 + 4 + 7 + 3
    assert len(enc.feature_names) == enc.n_features


def test_transform_encodes_one_row_by_hand() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    row = pd.DataFrame(
        {
            SITE_ID: [2],
            MACHINE_ID: [21],
            VIEW: ["MLO"],
            LATERALITY: ["R"],
            AGE: [70.0],
            IMPLANT: [1],
        }
    )
    vector = dict(zip(enc.feature_names, enc.transform(row)[0], strict=True))
    assert vector["age_z"] == pytest.approx(10.0 / np.std([50.0, 60.0, 70.0]))
    assert vector["age_missing"] == 0.0
    assert vector["implant"] == 1.0
    hot = sorted(k for k, v in vector.items() if v == 1.0 and "=" in k)
    assert hot == ["laterality=R", "machine_id=21", "site_id=2", "view=MLO"]


@pytest.mark.parametrize(
    ("column", "value", "hot"),
    [
        pytest.param(MACHINE_ID, 170, "machine_id=unknown", id="machine-unseen-in-training"),
        pytest.param(MACHINE_ID, math.nan, "machine_id=unknown", id="machine-missing"),
        pytest.param(SITE_ID, 3, "site_id=unknown", id="site-unseen"),
        pytest.param(VIEW, "XCC", "view=unknown", id="view-outside-the-contract"),
        pytest.param(VIEW, "AT", "view=AT", id="rare-view-is-in-the-vocabulary"),
        pytest.param(MACHINE_ID, 49.0, "machine_id=49", id="machine-as-float-still-matches"),
    ],
)
def test_values_outside_the_vocabulary_land_in_unknown(
    column: str, value: object, hot: str
) -> None:
    enc = MetadataEncoder.fit(_train_frame())
    frame = _train_frame().iloc[:1].copy()
    frame[column] = pd.Series([value], dtype=object)
    vector = dict(zip(enc.feature_names, enc.transform(frame)[0], strict=True))
    prefix = hot.split("=")[0] + "="
    assert [k for k, v in vector.items() if k.startswith(prefix) and v == 1.0] == [hot]


def test_missing_age_is_zero_with_an_indicator() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    out = enc.transform(_train_frame())
    assert out.dtype == np.float32 and out.shape == (4, enc.n_features)
    assert out[3, 0] == 0.0 and out[3, 1] == 1.0
    assert out[:3, 1].tolist() == [0.0, 0.0, 0.0]


def test_transform_ignores_train_only_columns() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    with_labels = enc.transform(_train_frame())
    without = enc.transform(_train_frame().drop(columns=[CANCER, DENSITY]))
    np.testing.assert_array_equal(with_labels, without)


@pytest.mark.parametrize(
    "columns",
    [
        pytest.param((AGE, DENSITY), id="density"),
        pytest.param((BIRADS,), id="birads"),
        pytest.param((CANCER, VIEW), id="the-label-itself"),
        pytest.param(("biopsy",), id="biopsy"),
        pytest.param(("invasive",), id="invasive"),
        pytest.param((IMAGE_ID,), id="not-a-prediction-time-column"),
    ],
)
def test_train_only_columns_can_never_be_inputs(columns: tuple[str, ...]) -> None:
    with pytest.raises(ForbiddenFeatureError):
        MetadataEncoder.fit(_train_frame(), columns=columns)
    with pytest.raises(ForbiddenFeatureError):
        MetadataEncoder(columns=columns)
    saved = MetadataEncoder.fit(_train_frame()).to_dict()
    with pytest.raises(ForbiddenFeatureError):
        MetadataEncoder.from_dict({**saved, "columns": list(columns)})


def test_round_trip_through_json_gives_the_same_vectors() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    restored = MetadataEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert restored == enc
    np.testing.assert_array_equal(restored.transform(_train_frame()), enc.transform(_train_frame()))


def test_a_subset_of_columns_and_missing_columns() -> None:
    enc = MetadataEncoder.fit(_train_frame(), columns=(AGE, LATERALITY))
    assert enc.feature_names == [
        "age_z",
        "age_missing",
        "laterality=L",
        "laterality=R",
        "laterality=unknown",
    ]
    with pytest.raises(FeatureError, match="laterality"):
        enc.transform(_train_frame().drop(columns=[LATERALITY]))


def test_empty_frame_gives_an_empty_matrix() -> None:
    enc = MetadataEncoder.fit(_train_frame())
    assert enc.transform(_train_frame().iloc[:0]).shape == (0, enc.n_features)
