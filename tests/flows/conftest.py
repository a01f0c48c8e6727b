"""One real nightly pipeline run, shared by the tests that need a trained, registered model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.demo import PREPROCESS, SPLIT, TRAIN, VALIDATION
from tests.support.data import make_raw
from tests.support.protocols import protocol_file


@dataclass(frozen=True)
class Pipeline:
    raw: Path
    out: Path
    home: Path
    tracking_uri: str
    result: dict[str, Any]
    protocol: str  # the small-holdout protocol it was promoted under


def run_nightly(raw: Path, out: Path, protocol: str | None = None) -> dict[str, Any]:
    """The nightly flow with the demo's settings (flows/demo.py)."""
    from flows.nightly import nightly

    return nightly(
        raw=str(raw),
        out=str(out),
        shard_size=64,
        preprocess=PREPROCESS,
        train_config=TRAIN,
        split=SPLIT,
        validation=VALIDATION,
        protocol=protocol,
    )


@pytest.fixture(scope="session")
def pipeline(
    prefect_server: str, ray_cluster: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """40 synthetic patients (25 % positive breasts, with a test set) through the nightly flow,
    promoted under the small-holdout test protocol (tests/support/protocols.py).

    MAMMO_HOME and MLFLOW_TRACKING_URI point at this session's own store while it lasts
    (mlflow.set_tracking_uri writes the variable; monkeypatch restores it afterwards).
    """
    root = tmp_path_factory.mktemp("pipeline")
    raw = make_raw(root / "raw", patients=40, seed=7, positive_rate=0.25, with_test=True)
    home = root / "home"
    uri = f"sqlite:///{home}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAMMO_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        protocol = protocol_file(root / "protocols")
        result = run_nightly(raw, root / "out", protocol)
        yield Pipeline(raw, root / "out", home, uri, result, protocol)
