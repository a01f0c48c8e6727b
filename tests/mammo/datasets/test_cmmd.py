"""CMMD: side and view from the headers, labels per (ID1, side), unknown breasts missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammo import datasets
from mammo.datasets.schema import DatasetTables
from mammo.datasets.synth import Planted, write_layout
from mammo.datasets.xlsx import read_first_sheet, write_workbook
from tests.mammo.datasets import checks


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted, DatasetTables]:
    root = tmp_path_factory.mktemp("cmmd")
    planted = write_layout("cmmd", root)
    return root, planted, datasets.get("cmmd").read(root)


def test_images_take_side_and_view_from_the_header(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.images_are_the_planted_full_images(tables, planted)
    images = tables.images
    assert set(images["view"]) == {"CC", "MLO"}
    assert images.groupby("patient_id").size().isin([2, 4]).all()
    assert set(images["manufacturer"]) == {"GE MEDICAL SYSTEMS", "SIEMENS"}
    assert images["age"].notna().all()


def test_two_rows_of_one_patient_do_not_duplicate_and_unknown_breasts_stay_missing(copy) -> None:  # type: ignore[no-untyped-def]
    _, _, tables = copy
    images = tables.images
    both = images[images["patient_id"] == "cmmd:D1-0002"].groupby("laterality")["cancer"].first()
    assert both.to_dict() == {"L": 0, "R": 1}
    assert len(images[images["patient_id"] == "cmmd:D1-0002"]) == 4
    unknown = images[images["prediction_id"] == "cmmd:D1-0001_R"]
    assert len(unknown) == 2 and unknown["cancer"].isna().all()
    assert (unknown["cancer_source"] == "").all()
    assert set(images.loc[images["cancer"].notna(), "cancer_source"]) == {"pathology"}
    row = images[images["prediction_id"] == "cmmd:D1-0002_R"].iloc[0]
    assert row["abnormality"] == "calcification+mass"
    assert tables.findings.empty


def test_bad_inputs_are_quarantined(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.every_bad_input_is_quarantined(tables, planted)


def test_the_workbook_round_trips_and_a_csv_export_reads_the_same(copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _, tables = copy
    rows = [["ID1", "Age"], ["D1-0001", 44], ["D1-0002", ""]]
    assert read_first_sheet(write_workbook(rows)) == [
        ["ID1", "Age"],
        ["D1-0001", "44"],
        ["D1-0002", ""],
    ]
    sheet = read_first_sheet((root / "CMMD_clinicaldata_revision.xlsx").read_bytes())
    csv_root = tmp_path / "cmmd"
    shutil.copytree(root / "CMMD", csv_root / "CMMD")
    text = "\n".join(",".join(cells) for cells in sheet) + "\n"
    (csv_root / "CMMD_clinicaldata_revision.csv").write_text(text)
    again = datasets.detect(csv_root).read(csv_root)
    pd.testing.assert_frame_equal(again.images, tables.images)
