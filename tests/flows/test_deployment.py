"""The deployments exactly as a user runs them: `prefect deploy --all`, a process worker,
`prefect deployment run 'nightly/nightly'`, on a Prefect server (SQLite) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.flows.conftest import PREPROCESS, SPLIT, VALIDATION
from tests.support.data import make_raw
from tests.support.protocols import protocol_file
from tests.support.servers import free_port
from tests.support.toml import write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FAST_TRAIN = {"image_rows": 128, "image_cols": 64, "epochs": 3, "batch_size": 8, "num_workers": 2}


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        env=env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _prefect(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("deploy")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MAMMO_HOME": str(root / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/home/mlflow.db",
        "MAMMO_RAY_DASHBOARD": "0",
        "MAMMO_RAY_NUM_CPUS": "2",
    }
    process = _spawn(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        root / "server.log",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail((root / "server.log").read_text()[-3000:])
                time.sleep(1)
        yield {**env, "ROOT": str(root)}
    finally:
        _stop(process)


def test_deploy_all_then_a_worker_runs_the_nightly_deployment_to_completion(
    server: dict[str, str],
) -> None:
    root = Path(server["ROOT"])
    raw = make_raw(root / "raw", patients=24, seed=3, positive_rate=0.25)
    # MAMMO_OUT empty at deploy time: every deployment's default is then $MAMMO_HOME/data
    env = {**server, "MAMMO_RAW": str(raw), "MAMMO_OUT": ""}
    _prefect(
        [
            "work-pool",
            "create",
            "mammo-process",
            "--type",
            "process",
            "--base-job-template",
            str(ROOT / "infra/prefect/process-work-pool.json"),
        ],
        env,
    )
    deployed = _prefect(["--no-prompt", "deploy", "--all"], env)
    for name in (
        "nightly/nightly",
        "ingest/ingest",
        "validate/validate",
        "train/train",
        "promote/promote",
        "predict/predict",
    ):
        assert name in deployed, deployed
    inspect = _prefect(["deployment", "inspect", "nightly/nightly"], env)
    assert "'cron': '0 2 * * *'" in inspect

    worker = _spawn(
        [str(BIN / "prefect"), "worker", "start", "--pool", "mammo-process"],
        env,
        root / "worker.log",
    )
    try:
        params = {
            "out": str(root / "out"),
            "shard_size": 32,
            "preprocess": PREPROCESS,
            "train_config": FAST_TRAIN,
            "split": SPLIT,
            "validation": VALIDATION,
        }
        args = ["deployment", "run", "nightly/nightly"]
        for key, value in params.items():
            args += ["--param", f"{key}={json.dumps(value)}"]
        started = _prefect(args, env)
        run_id = next(line.split()[-1] for line in started.splitlines() if "UUID" in line)
        state = _wait_for_terminal(run_id, env, timeout=900)
        assert state == "COMPLETED", (root / "worker.log").read_text()[-5000:]

        client = MlflowClient(env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
        version = client.get_model_version_by_alias("mammo-cancer", "challenger")
        run = client.get_run(version.run_id)
        assert run.data.tags["mammo.prefect_flow_run_id"] != ""
        assert version.tags["mammo.validation"] == "passed"
        assert (root / "out" / "manifest.parquet").is_file()
        # 24 patients: the shipped protocol has too little evidence to decide
        assert (
            "mammo.promotion.decision"
            in client.get_model_version("mammo-cancer", version.version).tags
        )
        assert _alias(client, "champion") is None

        _four_deployments_one_after_another_promote(root, raw, env, client)
    finally:
        _stop(worker)


def _alias(client: MlflowClient, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias("mammo-cancer", alias).version)
    except Exception:  # noqa: BLE001 - MLflow's error for a missing alias varies by store
        return None


def _four_deployments_one_after_another_promote(
    root: Path, raw: Path, env: dict[str, str], client: MlflowClient
) -> None:
    """ingest, validate, train, promote as four deployment runs, given no OUT: each defaults
    to $MAMMO_HOME/data (MAMMO_OUT was empty at deploy time); the version train registers
    finds the validation that validate recorded, and promote decides."""
    out = str(Path(env["MAMMO_HOME"]) / "data")
    # the tests' 24-patient holdout (about 10 breasts): minimums it clears; the model's
    # quality is not this test's subject (3 epochs), so no floor
    protocol = protocol_file(
        root / "protocols",
        evidence={"min_breasts": 4, "min_positive_breasts": 1},
        first_model={"auc": 0.0},
    )
    config = write_config(  # the deployments' `config` parameter: one file for all four
        root / "nightly.toml",
        {
            "ingest": {"shard_size": 32},
            "preprocess": PREPROCESS,
            "validation": VALIDATION,
            "train": FAST_TRAIN,
            "split": SPLIT,
            "promotion": {"protocol": protocol},
        },
    )
    steps = [
        (f"{step}/{step}", {"config": config})
        for step in ("ingest", "validate", "train", "promote")
    ]
    for name, params in steps:
        args = ["deployment", "run", name]
        for key, value in params.items():
            args += ["--param", f"{key}={json.dumps(value)}"]
        started = _prefect(args, env)
        run_id = next(line.split()[-1] for line in started.splitlines() if "UUID" in line)
        state = _wait_for_terminal(run_id, env, timeout=600)
        assert state == "COMPLETED", (name, (root / "worker.log").read_text()[-5000:])
    champion = _alias(client, "champion")
    assert champion is not None
    version = client.get_model_version("mammo-cancer", champion)
    assert version.tags["mammo.data"] == out and version.tags["mammo.validation"] == "passed"
    assert (Path(out) / "manifest.parquet").is_file()
    assert version.tags["mammo.promotion.decision"] == "promoted"
    assert version.tags["mammo.promotion.protocol"] == "tests-small-holdout"
    params = client.get_run(version.run_id).data.params  # the file's [train] reached training
    assert params["train.epochs"] == str(FAST_TRAIN["epochs"])
    assert params["preprocess.out_rows"] == str(PREPROCESS["out_rows"])


def _wait_for_terminal(run_id: str, env: dict[str, str], timeout: float) -> str:
    url = f"{env['PREFECT_API_URL']}/flow_runs/{run_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            state = json.load(response)["state_type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return str(state)
        time.sleep(3)
    return "TIMED OUT"
