"""VinDr-Mammo: the two CSVs as distributed, list-as-string categories, clipped boxes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo import datasets
from mammo.datasets.files import read_pixels
from mammo.datasets.schema import DatasetTables
from mammo.datasets.synth import Planted, write_layout
from tests.mammo.datasets import checks


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted, DatasetTables]:
    root = tmp_path_factory.mktemp("vindr")
    planted = write_layout("vindr", root)
    return root, planted, datasets.get("vindr").read(root)


def test_images_are_every_dicom_with_a_row(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.images_are_the_planted_full_images(tables, planted)
    images = tables.images
    assert (images["path"].str.endswith(".dicom")).all()
    assert (images["patient_id"] == images["study_id"]).all()
    assert set(images["split_official"]) == {"train", "test"}
    assert set(images["density"]) == {"A", "B", "C", "D"}
    assert images["density_raw"].str.startswith("DENSITY ").all()
    assert set(images["manufacturer"]) == {"IMS", "SIEMENS"}


def test_cancer_is_the_birads_proxy_per_breast(copy) -> None:  # type: ignore[no-untyped-def]
    _, _, tables = copy
    images = tables.images
    assert (images["cancer_source"] == "birads-proxy").all()
    assert (images["cancer"] == images["birads"].isin(["4", "5"]).astype(int)).all()
    assert images.groupby("prediction_id")["cancer"].nunique().eq(1).all()


def test_findings_clip_negative_corners_and_keep_two_categories(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.findings_are_where_planted(tables, planted)
    findings = tables.findings
    assert (findings["x0"] == 0.0).any()  # the -1.7 corner, clipped
    assert "Mass; Suspicious Calcification" in set(findings["category_raw"])
    lymph = findings[findings["category_raw"] == "Suspicious Lymph Node"]
    assert lymph["birads"].isna().all() and (lymph["category"] == "other").all()
    # a box's BI-RADS can differ from its breast's
    merged = findings.merge(tables.images, on="image_id", suffixes=("", "_breast"))
    assert (merged["birads"].notna() & (merged["birads"] != merged["birads_breast"])).any()


def test_monochrome1_images_are_read(copy) -> None:  # type: ignore[no-untyped-def]
    root, _, tables = copy
    import pydicom

    photometrics = {
        pydicom.dcmread(root / p, stop_before_pixels=True).PhotometricInterpretation
        for p in tables.images["path"]
    }
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert read_pixels(root / tables.images["path"].iloc[0]).shape == (96, 80)


def test_bad_inputs_are_quarantined(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.every_bad_input_is_quarantined(tables, planted)
