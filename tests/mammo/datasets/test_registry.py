"""The registry: every layout detected by its markers, one clear error for anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo import datasets
from mammo.datasets import DatasetError, registry
from mammo.datasets.registry import Adapter, register_dataset
from mammo.datasets.synth import LayoutError, write_layout

LAYOUTS = ("rsna", "cbis-ddsm", "vindr", "mias", "inbreast", "cmmd")


def test_every_layout_is_registered() -> None:
    assert datasets.list_datasets() == sorted(LAYOUTS)
    for name in LAYOUTS:
        assert datasets.get(name).name == name
        assert datasets.get(name).markers


@pytest.mark.parametrize("name", [n for n in LAYOUTS if n != "rsna"])
def test_detect_picks_the_layout_written_and_says_why(name: str, tmp_path: Path) -> None:
    write_layout(name, tmp_path / name)
    assert datasets.detect(tmp_path / name).name == name
    assert datasets.detection_message(tmp_path / name).startswith(f"{name}: ")


def test_detect_picks_rsna(rsna_root: Path) -> None:
    assert datasets.detect(rsna_root).name == "rsna"


def test_a_folder_of_something_else_is_one_line_listing_every_marker(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("holiday photos")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError) as caught:
        datasets.detect(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    for name in LAYOUTS:
        assert f"{name}: {datasets.get(name).markers}" in message
    for marker in ("train.csv", "Info.txt", "INbreast.csv", "breast-level_annotations.csv"):
        assert marker in message


def test_a_folder_matching_two_layouts_asks_for_a_name(tmp_path: Path) -> None:
    write_layout("mias", tmp_path)
    (tmp_path / "INbreast.csv").write_text("x\n")
    (tmp_path / "AllDICOMs").mkdir()
    with pytest.raises(DatasetError, match="several layouts"):
        datasets.detect(tmp_path)


def test_unknown_names_and_missing_folders_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'ddsm'.*cbis-ddsm"):
        datasets.get("ddsm")
    with pytest.raises(DatasetError, match="not a folder"):
        datasets.detect(tmp_path / "absent")
    with pytest.raises(LayoutError):
        write_layout("ddsm", tmp_path)


def test_a_name_registers_once() -> None:
    with pytest.raises(DatasetError, match="already registered"):

        @register_dataset("mias")
        class Again(Adapter):  # pragma: no cover - never instantiated twice
            def found(self, root: Path) -> str | None:
                return None

            def read(self, root: Path) -> datasets.DatasetTables:
                raise NotImplementedError

    assert type(registry.get("mias")).__name__ == "MiasAdapter"
