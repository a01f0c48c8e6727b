"""The metadata report: files written, figures equal to hand-computed values, graceful skips."""

from __future__ import annotations

import io
from collections.abc import Callable
from itertools import product
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from mammo.contract import (
    AGE,
    CANCER,
    DENSITY,
    IMAGE_ID,
    LATERALITY,
    MACHINE_ID,
    PATIENT_ID,
    SITE_ID,
    VIEW,
)
from mammo.eda import MARKDOWN_FILE, metadata_report, positive_rate_by

SITE_1_PATIENTS = 30  # patients 0..29 at site 1 (120 images), 30..49 at site 2 (80 images)
POSITIVE_BREASTS = {(0, "L"), (1, "L"), (2, "R"), (30, "L"), (31, "R"), (32, "L"), (33, "L")}
RATE_PLOTS = {f"positive_rate_by_{c}.png" for c in (SITE_ID, MACHINE_ID, VIEW, DENSITY)}
ALL_PLOTS = {"age_by_cancer.png", "images_per_patient.png", *RATE_PLOTS}


def train_frame() -> pd.DataFrame:
    """200 images: 50 patients x (L, R) x (CC, MLO); 6 of 120 positive at site 1, 8 of 80 at 2."""
    rows: list[dict[str, object]] = []
    for p in range(50):
        site = 1 if p < SITE_1_PATIENTS else 2
        for side, view in product("LR", ("CC", "MLO")):
            rows.append({
                SITE_ID: site, PATIENT_ID: 1000 + p, IMAGE_ID: 10 * (1000 + p) + len(rows) % 4,
                LATERALITY: side, VIEW: view, AGE: None if p == 7 else 40.0 + p % 40,
                CANCER: int((p, side) in POSITIVE_BREASTS),
                MACHINE_ID: 49 if site == 1 else (21, 29)[p % 2],
                DENSITY: None if p % 10 == 9 else "ABCD"[p % 4],
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_report_writes_every_plot_and_the_page(tmp_path: Path) -> None:
    report = metadata_report(train_frame(), tmp_path)
    assert {p.name for p in report.plots} == ALL_PLOTS
    assert report.notes == ()
    assert report.markdown == tmp_path / MARKDOWN_FILE
    page = report.markdown.read_text()
    for path in report.plots:
        assert path.parent == tmp_path
        assert f"]({path.name})" in page  # embedded
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            assert image.format == "PNG"
            assert image.width > 100 and image.height > 100
            image.verify()
    assert "| density | images | positives | positive_rate |" in page
    assert "| missing | 20 | " in page  # density missing for patients 9, 19, ..., 49


def test_figures_match_hand_computed_values(tmp_path: Path) -> None:
    figures = metadata_report(train_frame(), tmp_path).figures
    assert figures["images"] == 200
    assert figures["patients"] == 50
    assert figures["breasts"] == 100
    assert figures["positive_breasts"] == len(POSITIVE_BREASTS)
    assert figures["positive_images"] == 14
    assert figures["positive_rate"] == pytest.approx(14 / 200)
    assert figures["positive_rate.site_id.1"] == pytest.approx(6 / 120)
    assert figures["positive_rate.site_id.2"] == pytest.approx(8 / 80)
    assert figures["images.site_id.1"] == 120
    assert figures["images.machine_id.49"] == 120
    # machine 21: the 10 even patients of site 2; positive: one breast (2 images) of 30 and 32
    assert figures["positive_rate.machine_id.21"] == pytest.approx(4 / 40)
    assert figures["positive_rate.view.CC"] == pytest.approx(7 / 100)
    assert figures["images.density.missing"] == 20
    assert figures["missing.age"] == 4
    assert figures["missing.density"] == 20
    assert (figures["images_per_patient.min"], figures["images_per_patient.max"]) == (4, 4)


def test_figures_do_not_depend_on_how_the_csv_was_read(tmp_path: Path) -> None:
    csv = train_frame().to_csv(index=False)
    as_text = pd.read_csv(io.StringIO(csv), dtype=str)
    inferred = pd.read_csv(io.StringIO(csv))
    text_figures = metadata_report(as_text, tmp_path / "text").figures
    assert text_figures == metadata_report(inferred, tmp_path / "inferred").figures
    assert text_figures["positive_rate.site_id.2"] == pytest.approx(0.1)
    assert list(positive_rate_by(inferred, DENSITY).index) == ["A", "B", "C", "D", "missing"]


@pytest.mark.parametrize(
    ("breaks", "skipped", "note"),
    [
        pytest.param(lambda df: df.drop(columns=[DENSITY]), {f"positive_rate_by_{DENSITY}.png"},
                     "column density missing", id="column-missing"),
        pytest.param(lambda df: df.assign(**{MACHINE_ID: None}),
                     {f"positive_rate_by_{MACHINE_ID}.png"}, "column machine_id has no values",
                     id="column-all-null"),
        pytest.param(lambda df: df.drop(columns=[CANCER]), {"age_by_cancer.png", *RATE_PLOTS},
                     "column cancer missing", id="no-labels-like-test-csv"),
        pytest.param(lambda df: df.drop(columns=[PATIENT_ID]), {"images_per_patient.png"},
                     "column patient_id missing", id="no-patient-ids"),
        pytest.param(lambda df: df.iloc[:0], ALL_PLOTS, "column age has no values",
                     id="no-rows"),
    ],
)  # fmt: skip
def test_missing_columns_skip_their_plots_with_a_note(
    tmp_path: Path,
    breaks: Callable[[pd.DataFrame], pd.DataFrame],
    skipped: set[str],
    note: str,
) -> None:
    report = metadata_report(breaks(train_frame()), tmp_path)
    assert {p.name for p in report.plots} == ALL_PLOTS - skipped
    assert not any((tmp_path / name).exists() for name in skipped)
    assert report.markdown.exists()
    assert any(note in n for n in report.notes)
    assert note in report.markdown.read_text()
