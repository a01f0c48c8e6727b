"""`mammo synth --layout` and `mammo catalog`, as a user runs them, on every dataset layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import LAYOUTS
from mammo import datasets
from mammo.datasets.synth import WRITERS, write_layout
from tasks.catalog import CATALOG_DIR, TABLES, CatalogError, catalog, describe
from tests.mammo.datasets.checks import images_are_the_planted_full_images

REPO = Path(__file__).resolve().parents[2]


def mammo(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "mammo"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_names_every_registered_layout_and_writer() -> None:
    assert sorted(LAYOUTS) == datasets.list_datasets() == sorted(WRITERS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_catalog_holds_what_each_layout_planted(layout: str, tmp_path: Path) -> None:
    planted = write_layout(layout, tmp_path / "raw", seed=1)
    summary = catalog(str(tmp_path / "raw"), str(tmp_path / "out"))
    assert summary.dataset == layout and summary.evidence not in ("", "named")
    where = tmp_path / "out" / CATALOG_DIR / layout
    assert summary.uri == str(where)
    read = datasets.get(layout).read(tmp_path / "raw")
    for name in TABLES:  # the adapter's own tables, through Parquet unchanged
        written = pd.read_parquet(where / f"{name}.parquet")
        pd.testing.assert_frame_equal(written, getattr(read, name))
    images_are_the_planted_full_images(read, planted)
    assert summary.images == len(planted.images) and summary.findings == len(planted.findings)
    assert sum(summary.quarantined.values()) == len(read.quarantine) >= len(planted.bad)
    assert sum(summary.cancer.values()) == sum(summary.sources.values()) == summary.images
    assert describe(summary).startswith(f"Layout {layout} (found ")


def test_synth_then_catalog_as_a_user_runs_them(tmp_path: Path) -> None:
    """docs/datasets.md's two commands, as written, in a fresh folder."""
    wrote = mammo("synth", "data/cbis", "--layout", "cbis-ddsm", cwd=tmp_path)
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stdout.startswith("Wrote a synthetic cbis-ddsm copy to data/cbis: 5 images, ")
    done = mammo("catalog", "--raw", "data/cbis", "--out", "data/catalog", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Layout cbis-ddsm (found calc_case_description_test_set.csv, ")
    where = tmp_path / "data" / "catalog" / CATALOG_DIR / "cbis-ddsm"
    assert lines[-1] == f"Wrote images.parquet, findings.parquet, quarantine.parquet to {where}"
    images = pd.read_parquet(where / "images.parquet")
    findings = pd.read_parquet(where / "findings.parquet")
    assert lines[1] == (
        f"{len(images)} images of {images['patient_id'].nunique()} patients, "
        f"{images['prediction_id'].nunique()} breasts; {len(findings)} findings"
    )
    assert set(findings["image_id"]) <= set(images["image_id"])


def _unreadable(case: str, tmp_path: Path) -> tuple[str, str | None]:
    """A RAW (and a --dataset) the catalog cannot read."""
    copy = tmp_path / "cbis"
    write_layout("cbis-ddsm", copy, seed=0)
    if case == "another-layout-named":
        return str(copy), "vindr"
    if case == "empty":
        (tmp_path / "empty").mkdir()
        return str(tmp_path / "empty"), None
    if case == "missing":
        return str(tmp_path / "missing"), None
    return "s3://archive/cbis", None


@pytest.mark.parametrize(
    "case, message",
    [
        ("another-layout-named", "read as vindr: no "),
        ("empty", "no known dataset layout in "),
        ("missing", " is not a folder"),
        ("s3", "s3://archive/cbis: the dataset layouts are read from a local copy"),
    ],
)
def test_a_folder_the_catalog_cannot_read_is_one_line(
    case: str, message: str, tmp_path: Path
) -> None:
    raw, dataset = _unreadable(case, tmp_path)
    with pytest.raises(CatalogError, match=re.escape(message)):
        catalog(raw, str(tmp_path / "out"), dataset)
    assert not (tmp_path / "out").exists()  # nothing written
    if case in ("another-layout-named", "empty"):  # the two a user meets most, as typed
        extra = ["--dataset", dataset] if dataset else []
        done = mammo("catalog", "--raw", raw, "--out", str(tmp_path / "out"), *extra)
        assert done.returncode == 1
        assert done.stderr.strip().startswith("mammo catalog failed: ")
        assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.integration
def test_ingest_of_another_layout_names_it_and_the_catalog_command(
    prefect_server: str, tmp_path: Path
) -> None:
    raw = tmp_path / "vindr"
    write_layout("vindr", raw, seed=0)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "PREFECT_API_URL": prefect_server,
        "MAMMO_HOME": str(tmp_path / "home"),
    }
    done = mammo("ingest", "--raw", str(raw), "--out", str(tmp_path / "out"), env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert f"no train.csv under {raw}: {raw} holds the vindr layout (" in done.stderr
    assert f"`mammo catalog --raw {raw} --out OUT`" in done.stderr
