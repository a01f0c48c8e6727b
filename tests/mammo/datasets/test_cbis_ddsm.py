"""CBIS-DDSM: paths matched by case and UIDs, masks found by content, images deduplicated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo import datasets
from mammo.datasets.cbis_ddsm import column_key, csv_path_key
from mammo.datasets.files import read_pixels
from mammo.datasets.schema import DatasetTables
from mammo.datasets.synth import Planted, write_layout
from tests.mammo.datasets import checks


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted, DatasetTables]:
    root = tmp_path_factory.mktemp("cbis")
    planted = write_layout("cbis-ddsm", root)
    return root, planted, datasets.get("cbis-ddsm").read(root)


def test_the_csv_paths_do_not_resolve_as_written(copy) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = copy
    text = (root / "mass_case_description_train_set.csv").read_text()
    assert '000000.dcm\n"' in text  # the embedded newline
    assert "breast_density" in text
    assert "breast density" in (root / "calc_case_description_train_set.csv").read_text()
    assert not (root / "CBIS-DDSM" / text.splitlines()[1].split(",")[11]).exists()


def test_images_are_the_full_mammograms_only_once_each(copy) -> None:  # type: ignore[no-untyped-def]
    root, planted, tables = copy
    checks.images_are_the_planted_full_images(tables, planted)
    images = tables.images
    assert images["path"].str.contains("full mammogram images").all()
    files = list((root / "CBIS-DDSM").rglob("*.dcm"))
    assert len(files) > 2 * len(images)  # masks and crops are not images
    assert images["image_id"].is_unique  # the two-abnormality image appears once


def test_labels_are_per_breast_over_mass_and_calc(copy) -> None:  # type: ignore[no-untyped-def]
    _, _, tables = copy
    images = tables.images.set_index("image_id")
    p1 = images[images["patient_id"] == "cbis-ddsm:P_00001"]
    assert p1.index.str.contains("Mass-").any() and p1.index.str.contains("Calc-").any()
    cc = images.loc["cbis-ddsm:Mass-Training_P_00001_LEFT_CC"]
    assert (cc["cancer"], cc["pathology"], cc["birads"]) == (1, "MALIGNANT", "4")
    assert images.loc["cbis-ddsm:Calc-Training_P_00001_RIGHT_CC", "cancer"] == 0
    assert images.loc["cbis-ddsm:Calc-Test_P_00004_LEFT_MLO", "cancer"] == 0  # without callback
    assert set(images["split_official"]) == {"train", "test"}
    assert images["density"].notna().all()  # both spellings of the column


def test_each_finding_points_at_the_binary_full_size_mask(copy) -> None:  # type: ignore[no-untyped-def]
    root, planted, tables = copy
    checks.findings_are_where_planted(tables, planted)
    paths = tables.images.set_index("image_id")["path"]
    for finding in tables.findings.itertuples():
        mask = read_pixels(root / finding.mask_path)
        full = read_pixels(root / paths[finding.image_id])
        assert mask.shape == full.shape and len(np.unique(mask)) == 2
        assert checks.lesion_is_brighter(full, (finding.x0, finding.y0, finding.x1, finding.y1))


def test_bad_inputs_are_quarantined(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.every_bad_input_is_quarantined(tables, planted)


def test_column_names_and_paths_normalise() -> None:
    assert column_key(" breast_density ") == column_key("breast density") == "breast density"
    assert csv_path_key("Mass-Training_P_1_LEFT_CC/1.2/3.4/000000.dcm\n") == (
        "Mass-Training_P_1_LEFT_CC",
        "3.4",
    )
    assert csv_path_key("just-a-name.dcm") is None
