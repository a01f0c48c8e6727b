"""What every dataset test checks against the truth its synthetic writer planted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mammo.datasets.schema import FINDING_COLUMNS, IMAGE_COLUMNS, QUARANTINE_COLUMNS, DatasetTables
from mammo.datasets.synth import Planted


def images_are_the_planted_full_images(tables: DatasetTables, planted: Planted) -> None:
    images = tables.images
    assert tuple(images.columns) == IMAGE_COLUMNS
    assert tuple(tables.findings.columns) == FINDING_COLUMNS
    assert tuple(tables.quarantine.columns) == QUARANTINE_COLUMNS
    assert images["image_id"].is_unique
    assert sorted(images["image_id"]) == sorted(p.image_id for p in planted.images)
    assert (images["dataset"] == planted.dataset).all()
    assert images["image_id"].str.startswith(f"{planted.dataset}:").all()
    assert images["patient_id"].str.startswith(f"{planted.dataset}:").all()
    by_id = images.set_index("image_id")
    for p in planted.images:
        row = by_id.loc[p.image_id]
        got = (row["patient_id"], row["laterality"], row["view"], row["path"], row["cancer_source"])
        assert got == (p.patient_id, p.laterality, p.view, p.path, p.cancer_source), p.image_id
        cancer = None if pd.isna(row["cancer"]) else int(row["cancer"])
        assert cancer == p.cancer, p.image_id
    for key, side in zip(images["prediction_id"], images["laterality"], strict=True):
        assert key.endswith(f"_{side}")


def findings_are_where_planted(tables: DatasetTables, planted: Planted, tol: float = 0.01) -> None:
    findings = tables.findings
    assert len(findings) == len(planted.findings)
    remaining = findings.copy()
    for p in planted.findings:
        mine = remaining[
            (remaining["image_id"] == p.image_id) & (remaining["category"] == p.category)
        ]
        assert len(mine), f"no {p.category} finding on {p.image_id}"
        if p.box is None:
            hit = mine[mine["x0"].isna()]
        else:
            boxes = mine[["x0", "y0", "x1", "y1"]].to_numpy(float)
            close = np.all(np.abs(boxes - np.array(p.box)) <= tol, axis=1)
            hit = mine[close]
        assert len(hit) == 1, (
            f"{p.image_id}: {p.box} not in {mine[['x0', 'y0', 'x1', 'y1']].values}"
        )
        assert hit["mask_path"].iloc[0] == p.mask_path
        remaining = remaining.drop(hit.index)
    assert set(findings["image_id"]) <= set(tables.images["image_id"])
    placed = findings.dropna(subset=["x0"])
    assert ((placed["x0"] <= placed["x1"]) & (placed["y0"] <= placed["y1"])).all()
    assert (placed[["x0", "y0"]] >= 0).all().all()


def every_bad_input_is_quarantined(tables: DatasetTables, planted: Planted) -> None:
    quarantine = tables.quarantine
    assert quarantine["reason"].str.len().gt(0).all()
    assert quarantine["detail"].str.len().gt(0).all()
    for source, reason in planted.bad.items():
        rows = quarantine[quarantine["source"] == source]
        assert len(rows), f"{source} is not in the quarantine: {quarantine.values.tolist()}"
        if reason:
            assert reason in set(rows["reason"]), (source, rows["reason"].tolist())
    assert not set(tables.images["path"]) & set(quarantine["source"])


def lesion_is_brighter(pixels: np.ndarray, box: tuple[float, ...]) -> bool:  # type: ignore[type-arg]
    """The planted lesion makes its box brighter than the rest of the breast."""
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = pixels[y0 : y1 + 1, x0 : x1 + 1].astype(float)
    breast = pixels[pixels > np.percentile(pixels, 40)].astype(float)
    return bool(inside.mean() > breast.mean()) and not math.isnan(inside.mean())
