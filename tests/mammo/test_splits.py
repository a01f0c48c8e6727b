"""Patient splits: disjoint, a holdout stable as data grows, stratified train/val."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo.contract import CANCER, PATIENT_ID
from mammo.splits import SplitConfig, SplitError, assign_splits, holdout_score, is_holdout


def _images(n_patients: int, positive_every: int = 10, first_id: int = 10_000) -> pd.DataFrame:
    """4 images per patient (2 breasts x CC/MLO); every ``positive_every``-th patient has one
    positive breast (2 positive images)."""
    rows = []
    for k in range(n_patients):
        patient = first_id + 7 * k
        positive = k % positive_every == 0
        for image in range(4):
            rows.append({PATIENT_ID: patient, CANCER: int(positive and image < 2)})
    return pd.DataFrame(rows)


def test_every_patient_is_in_exactly_one_split() -> None:
    df = _images(2000)
    split = assign_splits(df, SplitConfig(), CANCER)
    assert split.index.equals(df.index)
    per_patient = split.groupby(df[PATIENT_ID]).nunique()
    assert (per_patient == 1).all()
    assert set(split) == {"train", "val", "holdout"}


def test_fractions_are_close_to_the_config() -> None:
    df = _images(4000)
    split = assign_splits(df, SplitConfig(holdout_fraction=0.15, val_fraction=0.2), CANCER)
    patients = split.groupby(df[PATIENT_ID]).first()
    share = patients.value_counts(normalize=True)
    assert share["holdout"] == pytest.approx(0.15, abs=0.02)  # hash-based: approximate
    assert share["val"] / (share["val"] + share["train"]) == pytest.approx(0.2, abs=0.002)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("add", id="new-patients-arrive"),
        pytest.param("remove", id="patients-leave"),
        pytest.param("shuffle", id="rows-reordered"),
    ],
)
def test_holdout_membership_does_not_depend_on_other_patients(change: str) -> None:
    cfg = SplitConfig()
    base = _images(1000)
    before = assign_splits(base, cfg, CANCER).groupby(base[PATIENT_ID]).first()
    if change == "add":
        other = pd.concat([base, _images(1500, first_id=900_001)], ignore_index=True)
    elif change == "remove":
        other = base[base[PATIENT_ID] % 3 != 0]
    else:
        other = base.sample(frac=1.0, random_state=1)
    after = assign_splits(other, cfg, CANCER).groupby(other[PATIENT_ID]).first()
    common = before.index.intersection(after.index)
    assert len(common) > 500
    assert ((before[common] == "holdout") == (after[common] == "holdout")).all()


def test_holdout_score_is_a_fixed_function_of_salt_and_id() -> None:
    # Pinned: blake2b(b"mammo-holdout-v1:10006", digest_size=8) = 0x093e669b7e4239ab.
    # A change here means every night's holdout silently changed.
    assert holdout_score(10006, "mammo-holdout-v1") == 0x093E669B7E4239AB / 2.0**64
    assert holdout_score(10006, "mammo-holdout-v1") == pytest.approx(0.0361084108)
    assert holdout_score(10006, "mammo-holdout-v2") != holdout_score(10006, "mammo-holdout-v1")
    assert is_holdout(10006, SplitConfig(holdout_fraction=0.04))
    assert not is_holdout(10006, SplitConfig(holdout_fraction=0.03))
    members = [p for p in range(1000) if is_holdout(p, SplitConfig(holdout_fraction=0.5))]
    assert 450 < len(members) < 550


def test_train_and_val_are_stratified_on_the_patient_label() -> None:
    df = _images(3000, positive_every=10)  # 10% of patients positive
    split = assign_splits(df, SplitConfig(val_fraction=0.25), CANCER)
    patients = (
        pd.DataFrame({"split": split, "positive": df[CANCER] > 0, PATIENT_ID: df[PATIENT_ID]})
        .groupby(PATIENT_ID)
        .agg({"split": "first", "positive": "any"})
    )
    rate = patients.groupby("split")["positive"].mean()
    counts = patients.groupby(["split", "positive"]).size()
    assert rate["train"] == pytest.approx(rate["val"], abs=0.005)
    for positive in (False, True):  # exact share per stratum (rounded half up)
        n = counts["train", positive] + counts["val", positive]
        assert counts["val", positive] == int(0.25 * n + 0.5)


def test_same_config_same_splits_and_seed_changes_val() -> None:
    df = _images(800)
    a = assign_splits(df, SplitConfig(seed=3), CANCER)
    b = assign_splits(df, SplitConfig(seed=3), CANCER)
    c = assign_splits(df, SplitConfig(seed=4), CANCER)
    pd.testing.assert_series_equal(a, b)
    assert (a == "holdout").equals(c == "holdout")  # the seed never moves the holdout
    assert not a.equals(c)


def test_config_round_trips() -> None:
    cfg = SplitConfig(holdout_fraction=0.1, val_fraction=0.2, seed=7, holdout_salt="x")
    assert SplitConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("frame", "cfg"),
    [
        pytest.param(pd.DataFrame({PATIENT_ID: [1]}), SplitConfig(), id="no-label-column"),
        pytest.param(
            pd.DataFrame({PATIENT_ID: [1, 2], CANCER: [0, np.nan]}),
            SplitConfig(),
            id="missing-label",
        ),
    ],
)
def test_unusable_frames_raise(frame: pd.DataFrame, cfg: SplitConfig) -> None:
    with pytest.raises(SplitError):
        assign_splits(frame, cfg, CANCER)


@pytest.mark.parametrize("fraction", [-0.1, 1.0], ids=["negative", "everything"])
def test_bad_fractions_raise(fraction: float) -> None:
    with pytest.raises(SplitError):
        SplitConfig(holdout_fraction=fraction)
    with pytest.raises(SplitError):
        SplitConfig(val_fraction=fraction)
