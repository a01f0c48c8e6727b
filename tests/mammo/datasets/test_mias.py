"""mini-MIAS: Info.txt read as distributed, Y flipped, side from the pixels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mammo import datasets
from mammo.datasets.pgm import read_pgm
from mammo.datasets.schema import DatasetTables
from mammo.datasets.synth import Planted, write_layout
from tests.mammo.datasets import checks


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted, DatasetTables]:
    root = tmp_path_factory.mktemp("mias")
    planted = write_layout("mias", root)
    return root, planted, datasets.get("mias").read(root)


def test_images_are_the_full_films_with_side_from_the_pixels(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.images_are_the_planted_full_images(tables, planted)
    images = tables.images.set_index("image_id")
    assert images.loc["mias:mdb001", "patient_id"] == images.loc["mias:mdb002", "patient_id"]
    assert (images["format"] == "pgm").all() and (images["bit_depth"] == 8).all()
    assert images["density"].isna().all() and images["density_raw"].notna().all()


def test_cancer_is_severity_m_and_a_refnum_twice_is_one_image(copy) -> None:  # type: ignore[no-untyped-def]
    _, _, tables = copy
    images = tables.images.set_index("image_id")
    assert images.loc["mias:mdb007", "cancer"] == 1
    assert images.loc["mias:mdb007", "pathology"] == "MALIGNANT"
    assert images.loc["mias:mdb005", "cancer"] == 0  # benign
    assert images.loc["mias:mdb001", "cancer"] == 0  # NORM, trailing space
    assert pd.isna(images.loc["mias:mdb001", "abnormality"])
    assert (tables.images["cancer_source"] == "severity").all()


def test_findings_are_flipped_to_a_top_left_origin(copy) -> None:  # type: ignore[no-untyped-def]
    root, planted, tables = copy
    checks.findings_are_where_planted(tables, planted)
    diffuse = tables.findings[tables.findings["image_id"] == "mias:mdb009"]
    assert diffuse["x0"].isna().all() and (diffuse["category"] == "calcification").all()
    for finding in tables.findings.dropna(subset=["x0"]).itertuples():
        pixels = read_pgm((root / f"{finding.image_id.split(':')[1]}.pgm").read_bytes())
        box = (finding.x0, finding.y0, finding.x1, finding.y1)
        assert checks.lesion_is_brighter(pixels, box), finding.image_id


def test_bad_inputs_are_quarantined(copy) -> None:  # type: ignore[no-untyped-def]
    _, planted, tables = copy
    checks.every_bad_input_is_quarantined(tables, planted)
