from __future__ import annotations

from pathlib import Path

import pytest

from mammo.datasets.synth import Planted, write_layout


@pytest.fixture(scope="session")
def rsna_planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Planted]:
    root = tmp_path_factory.mktemp("rsna") / "raw"
    return root, write_layout("rsna", root)


@pytest.fixture(scope="session")
def rsna_root(rsna_planted: tuple[Path, Planted]) -> Path:
    return rsna_planted[0]
