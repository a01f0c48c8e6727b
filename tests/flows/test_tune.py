"""`mammo tune` as a user runs it: two trials on the pipeline's ingested set, against this
test's own MLflow store, on the session's Ray cluster (joined through RAY_ADDRESS, so the
trials' actors do not share the command's environment: what they need travels with them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.demo import SPLIT
from mammo import tags as t
from tasks.config import load_config
from tests.flows.conftest import Pipeline
from tests.support.toml import write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
TRAIN = {"image_rows": 64, "image_cols": 32, "epochs": 1, "batch_size": 8, "num_workers": 1}


def test_two_trials_nest_under_one_parent_run_and_the_best_config_is_a_nightly_config(
    pipeline: Pipeline, prefect_server: str, ray_cluster: dict[str, object], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    uri = f"sqlite:///{home}/mlflow.db"
    config = write_config(tmp_path / "nightly.toml", {"split": SPLIT, "train": TRAIN})
    with open(config, "a") as file:  # the space as a user writes it: inline tables
        file.write("[tune]\nseed = 1\n[tune.space]\nlr = { loguniform = [0.0005, 0.005] }\n")
        file.write("dropout = { uniform = [0.0, 0.4] }\n")
    best_toml = tmp_path / "tuned" / "best.toml"
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MAMMO_", "PYTEST"))
        },
        "MLFLOW_TRACKING_URI": uri,
        "MAMMO_HOME": str(home),
        "MAMMO_RAY_DASHBOARD": "0",
        "PREFECT_API_URL": prefect_server,
        "RAY_ADDRESS": str(ray_cluster["address"]),
    }
    command = [str(BIN / "mammo"), "tune", "--data", str(pipeline.out), "--trials", "2"]
    command += ["--config", config, "--out-config", str(best_toml)]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"mammo tune, 2 trials: {elapsed:.0f} s")

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mammo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if t.TUNE_EXPERIMENT in r.data.tags]
    children = [r for r in runs if r.data.tags.get(t.PARENT_RUN_ID) == parent.info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert {r.info.status for r in (parent, *children)} == {"FINISHED"}
    assert len({r.data.tags[t.TUNE_TRIAL] for r in children}) == 2
    best = max(children, key=lambda r: r.data.metrics["val_auc"])
    assert parent.data.metrics["best_val_auc"] == pytest.approx(best.data.metrics["val_auc"])
    assert parent.data.tags[t.TUNE_BEST_RUN] == best.info.run_id

    table = done.stdout[done.stdout.index("Trials (val_auc") :].splitlines()
    assert table[1].split()[:3] == ["trial", "lr", "dropout"]
    assert table[1].split()[-3:] == ["val_auc", "epochs", "run"]
    rows = [line.split() for line in table[2:4]]
    assert [row[0] for row in rows] == ["1", "2"] and sum(row[1] == "*" for row in rows) == 1
    assert {row[-1] for row in rows} == {r.info.run_id[:12] for r in children}
    assert all(row[-2] == "1" for row in rows)  # epochs
    assert f"best config          {best_toml}" in done.stdout

    night = load_config(str(best_toml))
    assert set(night.sections) == {"split", "train", "tune"}
    assert night.section("split") == SPLIT
    train = night.section("train")
    assert train.keys() == {*TRAIN, "lr", "dropout"}
    assert {k: str(v) for k, v in train.items()} == {
        k: best.data.params[f"train.{k}"] for k in train
    }
    artifact = client.download_artifacts(parent.info.run_id, t.TUNED_CONFIG, str(tmp_path))
    assert Path(artifact).read_text() == best_toml.read_text()
