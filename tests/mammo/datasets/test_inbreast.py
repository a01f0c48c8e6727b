"""INbreast: the semicolon CSV, patient from the file name, XML polygons to boxes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mammo import datasets
from mammo.datasets.inbreast import roi_boxes
from mammo.datasets.schema import DatasetTables
from mammo.datasets.synth import Planted, write_layout
from tests.mammo.datasets import checks


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted, DatasetTables]:
    root = tmp_path_factory.mktemp("inbreast")
    planted = write_layout("inbreast", root)
    return root, planted, datasets.get("inbreast").read(root)


def test_images_take_the_patient_from_the_name_and_mlo_for_ml(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.images_are_the_planted_full_images(tables, planted)
    images = tables.images
    assert set(images["view"]) == {"CC", "MLO"}
    assert images["age"].isna().all()  # "removed"
    assert (images["bit_depth"] == 14).all()
    first = images[images["patient_id"] == planted.images[0].patient_id]
    assert first["study_id"].nunique() == 2  # two exams of one patient
    for row in images.itertuples():
        assert row.prediction_id == f"{row.study_id}_{row.laterality}"


def test_labels_mark_biopsy_and_proxies_and_blank_acr(copy) -> None:  # type: ignore[no-untyped-def]
    _, _, tables = copy
    images = tables.images
    assert set(images.loc[images["birads"] == "6", "cancer_source"]) == {"biopsy"}
    assert set(images.loc[images["birads"] != "6", "cancer_source"]) == {"birads-proxy"}
    assert (images["cancer"] == images["birads"].isin(["4a", "4b", "4c", "5", "6"])).all()
    blank = images[images["density_raw"].isna()]
    assert len(blank) and blank["density"].isna().all()
    assert set(images["density"].dropna()) <= {"A", "B", "C", "D"}


def test_findings_are_the_polygons_boxes_and_a_missing_xml_is_none(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.findings_are_where_planted(tables, planted)
    malignant = tables.images[tables.images["cancer"] == 1]["image_id"]
    assert not set(malignant) <= set(tables.findings["image_id"])  # one has no XML
    point = tables.findings[tables.findings["category"] == "calcification"]
    assert (point["x0"] == point["x1"]).all()


def test_a_malformed_plist_raises_value_error() -> None:
    with pytest.raises(ValueError, match="property list"):
        roi_boxes(b"<plist><dict>")
    assert roi_boxes(b'<plist version="1.0"><dict><key>Images</key><array/></dict></plist>') == []


def test_bad_inputs_are_quarantined(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.every_bad_input_is_quarantined(tables, planted)
    assert pd.notna(tables.quarantine["detail"]).all()
