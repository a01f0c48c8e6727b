"""The flows unchanged against an existing Ray cluster: a head and a second node started with
`ray start` on this machine, joined only through RAY_ADDRESS (and Ray's token). The night's
EDA step fails on the way (its folder is taken by a file) and the night trains regardless;
batch prediction then decodes into S3, where every node can write."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest

from tests.support.data import make_raw
from tests.support.servers import create_bucket, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def two_node_cluster(s3_endpoint: str) -> Iterator[dict[str, str]]:
    """Head + worker node, 1 CPU each, token auth, every socket on 127.0.0.1; both nodes
    reach the session's S3 endpoint (its variables are in their environment)."""
    temp = Path(tempfile.mkdtemp(prefix="mn", dir="/tmp"))  # short: Ray's socket paths
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        # Ray allows several nodes on 127.0.0.1 (one machine) only with this set to 1.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    }
    common = [
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        f"--temp-dir={temp / 'ray'}",
        "--disable-usage-stats",
    ]
    nodes = []
    try:
        nodes.append(
            _spawn(
                [
                    str(BIN / "ray"),
                    "start",
                    "--head",
                    f"--port={port}",
                    "--include-dashboard=false",
                    *common,
                ],
                env,
                temp / "head.log",
            )
        )
        _wait_for_nodes(f"127.0.0.1:{port}", 1, env)
        nodes.append(
            _spawn(
                [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", *common],
                env,
                temp / "worker.log",
            )
        )
        _wait_for_nodes(f"127.0.0.1:{port}", 2, env)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "TEMP": str(temp)}
    finally:
        for node in reversed(nodes):
            _stop(node)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """`ray start --block` keeps every process of its node in its session: stop the group."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            time.sleep(1)
        except subprocess.TimeoutExpired:
            continue


def _wait_for_nodes(address: str, count: int, env: dict[str, str], timeout: float = 90) -> None:
    probe = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [sys.executable, "-c", probe, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(2)
    pytest.fail(f"the Ray cluster at {address} never had {count} nodes: {done.stderr[-2000:]}")


def test_the_nightly_pipeline_runs_unchanged_on_a_two_node_cluster(
    two_node_cluster: dict[str, str], prefect_server: str, tmp_path: Path
) -> None:
    raw = make_raw(tmp_path / "raw", patients=10, seed=5, with_test=True)  # real positive rate
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "eda").write_text("")  # a file where the EDA report's folder goes
    env = {
        **two_node_cluster,
        "PREFECT_API_URL": prefect_server,
        "MAMMO_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/home/mlflow.db",
    }
    argv = [
        str(BIN / "mammo"),
        "run",
        "--raw",
        str(raw),
        "--out",
        str(tmp_path / "out"),
        "--shard-size",
        "4",
        "--rows",
        "256",
        "--cols",
        "128",
        "--image-rows",
        "128",
        "--image-cols",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--workers",
        "2",
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    summary = json.loads((tmp_path / "out" / "ingest.json").read_text())
    assert summary["decode"]["nodes"] == 2, summary["decode"]  # both nodes decoded shards
    assert summary["manifest_rows"] == summary["csv_rows"]
    assert "Ray Train: 2 worker(s)" in output
    assert "eda-report failed; the night goes on" in output  # informative, never blocking

    # batch prediction on the same cluster, its decode work where every node can reach it
    create_bucket("multinode")
    work, submission = "s3://multinode/predict-work", "s3://multinode/submission.csv"
    model = "models:/mammo-cancer@challenger"
    predict = [str(BIN / "mammo"), "predict", "--raw", str(raw), "--model", model]
    done = subprocess.run(
        [*predict, "--work", work, "--out", submission],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket="multinode", Prefix="predict-work/")
    keys = {item["Key"] for item in listed.get("Contents", [])}
    assert "predict-work/manifest.parquet" in keys, keys
    assert any(k.startswith("predict-work/shards/") for k in keys), keys
    assert not (tmp_path / "home" / "predict").exists()  # nothing on the driver's own disk
    body = s3.get_object(Bucket="multinode", Key="submission.csv")["Body"].read().decode()
    test_csv = pd.read_csv(raw / "test.csv")
    assert len(body.strip().splitlines()) == 1 + test_csv["prediction_id"].nunique()
