"""RSNA through the dataset layer: today's inventory, ids namespaced in decimal."""

from __future__ import annotations

from pathlib import Path

from mammo import datasets
from mammo.datasets.synth import Planted
from tests.mammo.datasets import checks


def test_rsna_rows_are_the_csv_joined_with_its_files(rsna_planted: tuple[Path, Planted]) -> None:
    root, planted = rsna_planted
    tables = datasets.get("rsna").read(root)
    checks.images_are_the_planted_full_images(tables, planted)
    checks.every_bad_input_is_quarantined(tables, planted)
    images = tables.images
    assert images["image_id"].str.fullmatch(r"rsna:[1-9][0-9]*").all()
    assert (images["split_official"] == "train").all()
    assert images["site_id"].notna().all() and images["machine_id"].notna().all()
    assert tables.findings.empty
