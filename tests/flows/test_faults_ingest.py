"""Ingest under faults injected for real: a Ray worker and the whole driver SIGKILLed mid-run,
object-store faults from a proxy in front of the S3 endpoint, a file that crashes the codec.

Afterwards every test checks that every input is in exactly one of manifest or quarantine,
that nothing is duplicated, that no temporary file or partial object is visible, and, where
the run went on to the end, that the outputs are byte for byte those of an uninterrupted run.

Drivers that must own their Ray (a killed driver takes its local cluster with it; workers that
must see the proxy's endpoint) run as ``python -m flows.cli ingest`` subprocesses, each the
leader of a new session, against the session's Prefect server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.ingest import ingest
from mammo import contract as c
from mammo.png import decode_png
from tasks.storage import open_store, read_parquet
from tests.mammo.test_fuzz import dicomsdl_crash_file
from tests.support.data import add_fault_files, make_raw, tree_digest
from tests.support.s3_proxy import Fault, FaultRule, S3FaultProxy
from tests.support.servers import (
    SENTINEL_ACCESS_KEY,
    SENTINEL_SECRET_KEY,
    create_bucket,
    patched_environ,
    upload_tree,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZE = 2
PREPROCESS: dict[str, object] = {"out_rows": 256, "out_cols": 128}
OUTPUTS = (c.SHARDS_DIR, c.SHARD_QUARANTINE_DIR, c.PNG_DIR, c.MANIFEST_FILE, c.QUARANTINE_FILE)
DRIVER_TIMEOUT_S = 300


# --- inputs and the uninterrupted reference ----------------------------------------------


@pytest.fixture(scope="module")
def raw_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 patients of 1024 x 832 images (about 0.1 s each to decode) plus one file per entry
    of the fault table: long enough to interrupt, with inputs bound for both outputs."""
    raw = make_raw(
        tmp_path_factory.mktemp("faults") / "raw", patients=5, seed=31, image_size="1024x832"
    )
    add_fault_files(raw)
    return raw


@pytest.fixture
def stack(prefect_server: str, ray_cluster: dict[str, object]) -> None:
    """In-process flows run against the session's Prefect server and Ray cluster."""


def run_ingest(raw: str, out: str, shard_size: int = SHARD_SIZE) -> dict[str, Any]:
    return ingest(raw=raw, out=out, shard_size=shard_size, preprocess=PREPROCESS)


@pytest.fixture(scope="module")
def reference(
    raw_set: Path,
    prefect_server: str,
    ray_cluster: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The same inputs through one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run_ingest(str(raw_set), str(out))
    return out


def outputs_digest(out: Path) -> dict[str, str]:
    """SHA-256 of every published output file, by path relative to OUT."""
    digest: dict[str, str] = {}
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            digest.update({f"{name}/{rel}": sha for rel, sha in tree_digest(path).items()})
        elif path.exists():
            digest.update(tree_digest(out, name))
    return digest


def assert_whole(out: Path, raw: Path) -> None:
    """Every CSV row in exactly one of manifest or quarantine, once; no temporary file; every
    shard and quarantine part readable with its schema; every PNG decodable and listed."""
    csv_ids = set(pd.read_csv(raw / c.csv_name(c.Subset.TRAIN))[c.IMAGE_ID])
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    quarantine = pd.read_parquet(out / c.QUARANTINE_FILE)
    quarantined = quarantine[c.IMAGE_ID].dropna()
    assert manifest[c.IMAGE_ID].is_unique and quarantined.is_unique
    assert not set(manifest[c.IMAGE_ID]) & set(quarantined)
    assert set(manifest[c.IMAGE_ID]) | set(quarantined) == csv_ids
    assert [p for p in out.rglob("*") if ".tmp-" in p.name] == []
    for part in (out / c.SHARDS_DIR).glob("*.parquet"):
        assert pq.read_table(part).schema.equals(c.SHARD_SCHEMA, check_metadata=False), part
    for part in (out / c.SHARD_QUARANTINE_DIR).glob("*.parquet"):
        assert pq.read_table(part).schema.equals(c.QUARANTINE_SCHEMA, check_metadata=False)
    pngs = {p.relative_to(out).as_posix(): p for p in (out / c.PNG_DIR).rglob("*.png")}
    assert set(pngs) == set(manifest[c.PNG_PATH])
    for path in pngs.values():
        assert decode_png(path.read_bytes()).shape == (256, 128)


# --- processes --------------------------------------------------------------------------


def session_members(sid: int) -> list[psutil.Process]:
    """Every live process of the session ``sid`` (started by a test as its leader)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def kill_session(leader: subprocess.Popen[bytes]) -> int:
    """SIGKILL the driver's process group and every other process of its session: Ray puts
    each worker in a process group of its own, but they all stay in the driver's session."""
    members = session_members(leader.pid)
    os.killpg(leader.pid, signal.SIGKILL)
    for proc in members:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    leader.wait(timeout=30)
    _, alive = psutil.wait_procs(members, timeout=30)
    assert alive == [] and session_members(leader.pid) == [], alive
    return len(members)


def driver_env(prefect_api: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess driver: its own local Ray (no RAY_ADDRESS), 2 CPUs,
    no dashboard; the session's Prefect server; the S3 variables of this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST")}
    env.update(
        PREFECT_API_URL=prefect_api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MAMMO_HOME=str(home),
        MAMMO_RAY_DASHBOARD="0",
        MAMMO_RAY_NUM_CPUS="2",
        MAMMO_RAY_OBJECT_STORE_MB="256",
        **extra,
    )
    return env


def start_driver(
    raw: str, out: str, env: dict[str, str], log: Path, shard_size: int = SHARD_SIZE
) -> subprocess.Popen[bytes]:
    """``python -m flows.cli ingest`` as the leader of a new session; output to ``log``."""
    command = [
        sys.executable, "-m", "flows.cli", "ingest", "--raw", raw, "--out", out,
        "--shard-size", str(shard_size),
        "--rows", str(PREPROCESS["out_rows"]), "--cols", str(PREPROCESS["out_cols"]),
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def finish_driver(driver: subprocess.Popen[bytes], log: Path) -> tuple[int, str]:
    """Wait for the driver; its exit status and output. Leaves none of its processes."""
    try:
        code = driver.wait(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_session(driver)
        pytest.fail(f"the driver ran over {DRIVER_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
    _, alive = psutil.wait_procs(session_members(driver.pid), timeout=30)
    assert alive == [], f"processes of the driver's session still running: {alive}"
    return code, log.read_text(errors="replace")


def shard_files(out: Path) -> dict[str, tuple[int, str]]:
    """shards/*.parquet -> (mtime in ns, SHA-256)."""
    digests = tree_digest(out / c.SHARDS_DIR, "*.parquet")
    return {
        name: ((out / c.SHARDS_DIR / name).stat().st_mtime_ns, sha) for name, sha in digests.items()
    }


def committed_with_images(out: Path, at_least: int) -> bool:
    """``at_least`` shards committed, and one of them with decoded images."""
    shards = list((out / c.SHARDS_DIR).glob("*.parquet"))
    return len(shards) >= at_least and any(pq.read_metadata(p).num_rows > 0 for p in shards)


# --- 1. a Ray worker killed in the middle of a shard ---------------------------------------


def kill_a_decoding_worker(timeout_s: float) -> str:
    """SIGKILL the first Ray worker of this process's cluster seen decoding a shard.

    Ray titles a worker ``ray::<task name>`` while it runs a task, and the ingest names its
    tasks ``decode part-<hash>``; the cluster's processes descend from this process.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline()).strip()  # Ray pads its titles
            except psutil.Error:
                continue
            if title.startswith("ray::decode part-") and "safe mode" not in title:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return title.removeprefix("ray::decode ")
        time.sleep(0.01)
    pytest.fail(f"no Ray worker was seen decoding a shard within {timeout_s} s")


def test_a_worker_killed_mid_shard_is_retried_and_the_outputs_are_whole(
    stack: None, raw_set: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result: dict[str, object] = {}

    def work() -> None:
        try:
            result["summary"] = run_ingest(str(raw_set), str(out))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            result["error"] = exc

    runner = threading.Thread(target=work)
    runner.start()
    killed_shard = kill_a_decoding_worker(timeout_s=120)
    runner.join(timeout=DRIVER_TIMEOUT_S)
    assert not runner.is_alive() and "error" not in result, result.get("error")

    summary = result["summary"]
    assert isinstance(summary, dict)
    expected = json.loads((reference / "ingest.json").read_text())
    assert summary["manifest_rows"] == expected["manifest_rows"]
    assert summary["decoded_this_run"] == expected["decoded_this_run"]  # all of it, once
    assert (out / c.SHARDS_DIR / f"{killed_shard}.parquet").is_file()
    assert_whole(out, raw_set)
    assert outputs_digest(out) == outputs_digest(reference)


# --- 2. the driver killed, then a re-run -------------------------------------------------


def test_a_killed_driver_is_resumed_by_a_rerun_without_redoing_finished_shards(
    stack: None, prefect_server: str, raw_set: Path, reference: Path, tmp_path: Path
) -> None:
    total = len(list((reference / c.SHARDS_DIR).glob("*.parquet")))
    out = tmp_path / "out"
    env = driver_env(prefect_server, tmp_path / "home")
    driver = start_driver(str(raw_set), str(out), env, tmp_path / "killed.log")
    deadline = time.monotonic() + DRIVER_TIMEOUT_S
    # Shards are submitted in the order of their names (content hashes), so the first ones
    # may hold fault files only (no manifest rows): wait for one that decoded images too.
    while not committed_with_images(out, at_least=2):
        assert driver.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard was committed in time"
        time.sleep(0.05)
    killed = kill_session(driver)

    assert killed >= 3  # the driver, and at least Ray's GCS and raylet
    finished = shard_files(out)
    assert 2 <= len(finished) < total
    done_items = sum(pq.read_metadata(out / c.SHARDS_DIR / n).num_rows for n in finished)
    done_items += sum(
        pq.read_metadata(part).num_rows
        for part in (out / c.SHARD_QUARANTINE_DIR).glob("*.parquet")
        if part.name in finished
    )

    summary = run_ingest(str(raw_set), str(out))  # the re-run, through the session's Ray
    expected = json.loads((reference / "ingest.json").read_text())
    candidates = expected["decoded_this_run"] + expected["quarantined_this_run"]
    assert summary["already_done"] == done_items > 0
    redone = summary["decoded_this_run"] + summary["quarantined_this_run"]
    assert redone == candidates - done_items
    assert summary["decoded_this_run"] < expected["decoded_this_run"]
    after = shard_files(out)
    assert {name: after[name] for name in finished} == finished  # not rewritten, not touched
    assert_whole(out, raw_set)
    assert outputs_digest(out) == outputs_digest(reference)


def test_temporary_files_of_writers_killed_mid_write_are_removed_by_the_next_run(
    stack: None, raw_set: Path, reference: Path, tmp_path: Path
) -> None:
    # What a writer killed between mkstemp and os.replace leaves (tasks.storage.LocalStore.
    # staged_write): a hidden temporary file beside its target, with part of its bytes. A
    # SIGKILL lands there too rarely to catch on purpose, so the files are made the same way.
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    targets = [
        sorted((out / c.SHARDS_DIR).glob("*.parquet"))[0],
        sorted((out / c.SHARD_QUARANTINE_DIR).glob("*.parquet"))[0],
        sorted((out / c.PNG_DIR).rglob("*.png"))[0],
        out / c.MANIFEST_FILE,
    ]
    for target in targets:
        fd, _ = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.write(fd, target.read_bytes()[: target.stat().st_size // 2])
        os.close(fd)
    assert len([p for p in out.rglob("*") if ".tmp-" in p.name]) == len(targets)

    summary = run_ingest(str(raw_set), str(out))

    assert summary["decoded_this_run"] == 0  # the leftovers were never taken for outputs
    assert_whole(out, raw_set)
    assert outputs_digest(out) == outputs_digest(reference)


# --- 3. object-store faults through a proxy ----------------------------------------------

S3_RAW, S3_OUT = "faults-raw", "faults-out"


@pytest.fixture(scope="module")
def s3_inputs(
    s3_endpoint: str,
    prefect_server: str,
    ray_cluster: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, bytes]:
    """A small set with the fault files in S3, and the objects of one uninterrupted run
    (through the session's cluster, straight to the endpoint) by key relative to OUT."""
    raw = make_raw(tmp_path_factory.mktemp("s3-faults") / "raw", patients=3, seed=32)
    add_fault_files(raw)
    create_bucket(S3_RAW)
    create_bucket(S3_OUT)
    upload_tree(str(raw), S3_RAW, "rsna")
    run_ingest(f"s3://{S3_RAW}/rsna", f"s3://{S3_OUT}/reference", shard_size=4)
    return s3_objects("reference")


def s3_objects(prefix: str) -> dict[str, bytes]:
    """Every object under s3://faults-out/<prefix>/, by key relative to the prefix."""
    s3 = boto3.client("s3")
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=S3_OUT, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=S3_OUT, Key=obj["Key"])["Body"].read()
            objects[obj["Key"].removeprefix(prefix + "/")] = body
    return objects


def published(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if k in OUTPUTS or k.split("/")[0] in OUTPUTS}


def assert_every_object_complete(objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        if key.endswith(".parquet"):
            pq.read_table(pa.BufferReader(body))  # raises on a partial object
        elif key.endswith(".png"):
            assert decode_png(body).shape == (256, 128), key


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[S3FaultProxy]:
    with S3FaultProxy(s3_endpoint) as running:
        yield running


def test_transient_object_store_faults_are_retried_and_change_nothing(
    s3_inputs: dict[str, bytes], proxy: S3FaultProxy, prefect_server: str, tmp_path: Path
) -> None:
    proxy.set_rules(
        [
            FaultRule(Fault.SLOW_DOWN, every=5, times=8),
            FaultRule(Fault.INTERNAL_ERROR, every=7, times=6),
            FaultRule(Fault.RESET, every=9, times=4),
            FaultRule(Fault.RESET_AFTER_FORWARD, method="PUT", every=4, times=4),
        ]
    )
    env = driver_env(prefect_server, tmp_path / "home", AWS_ENDPOINT_URL=proxy.url)
    env.pop("AWS_ENDPOINT_URL_S3", None)
    log = tmp_path / "flaky.log"
    driver = start_driver(f"s3://{S3_RAW}/rsna", f"s3://{S3_OUT}/flaky", env, log, shard_size=4)
    code, output = finish_driver(driver, log)

    assert code == 0, output[-3000:]
    injected = proxy.injected()
    assert set(injected) == set(Fault), injected  # every kind of fault was served
    faulted = {(i.client.split("/")[0].lower(), i.method) for i in proxy.injections}
    # boto3 reads and writes (DICOMs, PNGs, shards), pyarrow reads (the plan's Parquet files)
    assert {("boto3", "GET"), ("boto3", "PUT"), ("aws-sdk-cpp", "GET")} <= faulted, faulted
    objects = s3_objects("flaky")
    assert published(objects) == published(s3_inputs)
    assert_every_object_complete(objects)


def test_a_persistent_put_failure_fails_the_run_naming_the_object_and_leaves_nothing_corrupt(
    stack: None, s3_inputs: dict[str, bytes], proxy: S3FaultProxy, prefect_server: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    shards = sorted(k for k in s3_inputs if k.startswith(f"{c.SHARDS_DIR}/"))
    victim = shards[0]  # the same shard names: same inputs, same config
    victim_path = re.escape(f"/{S3_OUT}/broken/{victim}") + "$"
    proxy.set_rules([FaultRule(Fault.INTERNAL_ERROR, method="PUT", path=victim_path)])
    env = driver_env(
        prefect_server, tmp_path / "home", AWS_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="3"
    )
    env.pop("AWS_ENDPOINT_URL_S3", None)
    log = tmp_path / "broken.log"
    driver = start_driver(f"s3://{S3_RAW}/rsna", f"s3://{S3_OUT}/broken", env, log, shard_size=4)
    code, output = finish_driver(driver, log)

    assert code == 1, output[-3000:]
    assert "mammo ingest failed: 1 of" in output
    assert f"s3://{S3_OUT}/broken/{victim}" in output
    assert "InternalError" in output
    assert SENTINEL_ACCESS_KEY not in output and SENTINEL_SECRET_KEY not in output
    # 3 attempts per upload (AWS_MAX_ATTEMPTS), and Ray ran the shard 3 times (max_retries=2)
    assert len(proxy.injections) == 3 * 3
    objects = s3_objects("broken")
    assert victim not in objects
    assert sorted(k for k in objects if k.startswith(f"{c.SHARDS_DIR}/")) == shards[1:]
    assert_every_object_complete(objects)

    # the fault gone, a re-run decodes only the failed shard and publishes the same outputs
    summary = run_ingest(f"s3://{S3_RAW}/rsna", f"s3://{S3_OUT}/broken", shard_size=4)
    victim_rows = pq.read_metadata(pa.BufferReader(s3_inputs[victim])).num_rows
    assert summary["decoded_this_run"] == victim_rows
    assert published(s3_objects("broken")) == published(s3_inputs)


@pytest.mark.parametrize(
    "fault", [Fault.SLOW_DOWN, Fault.INTERNAL_ERROR], ids=["throttled", "server_error"]
)
def test_a_small_range_read_answered_with_an_error_is_retried(
    s3_inputs: dict[str, bytes], proxy: S3FaultProxy, fault: Fault
) -> None:
    # pyarrow reads the footer, then the column chunks. Those of an empty table take 23 bytes,
    # less than an S3 error body, and pyarrow's S3 client then fails at once instead of
    # retrying. The read is finalize's: the plan's quarantine, empty when the CSV and the
    # listing agree (as here, and in most real runs).
    (key,) = [k for k in s3_inputs if k.endswith("/plan-quarantine.parquet")]
    path = re.escape(f"/{S3_OUT}/reference/{key}") + "$"
    proxy.set_rules([FaultRule(fault, method="GET", path=path, every=2, times=1)])
    with patched_environ({"AWS_ENDPOINT_URL": proxy.url}):
        table = read_parquet(open_store(f"s3://{S3_OUT}/reference"), key)
    assert [(i.client.split("/")[0], i.method) for i in proxy.injections] == [
        ("aws-sdk-cpp", "GET")
    ]
    assert table.num_rows == 0
    assert table.equals(pq.read_table(pa.BufferReader(s3_inputs[key])))


# --- 4. a file that crashes the native codec ---------------------------------------------


def test_a_file_that_kills_its_worker_is_quarantined_by_safe_mode(
    stack: None, tmp_path: Path
) -> None:
    raw = make_raw(tmp_path / "raw", patients=3, seed=33)
    csv = pd.read_csv(raw / "train.csv")
    patient_id, image_id = 1, 2  # sorts first: the crash file shares the first shard
    assert csv[c.PATIENT_ID].min() > patient_id
    path = raw / c.image_relpath(c.Subset.TRAIN, patient_id, image_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(dicomsdl_crash_file())
    row = {**csv.iloc[0].to_dict(), c.PATIENT_ID: patient_id, c.IMAGE_ID: image_id}
    pd.concat([csv, pd.DataFrame([row])]).to_csv(raw / "train.csv", index=False)
    out = tmp_path / "out"

    summary = run_ingest(str(raw), str(out), shard_size=4)

    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    quarantine = pd.read_parquet(out / c.QUARANTINE_FILE)
    assert set(manifest[c.IMAGE_ID]) == set(csv[c.IMAGE_ID])  # every good file
    assert quarantine[[c.IMAGE_ID, "reason"]].values.tolist() == [
        [image_id, c.QuarantineReason.DECODE_FAILED.value]
    ]
    assert quarantine["detail"].iloc[0].startswith("pydicom: ")  # dicomsdl was not tried
    # the crash file's shard was decoded again with pydicom only; the others with dicomsdl
    (part,) = (out / c.SHARD_QUARANTINE_DIR).glob("*.parquet")
    in_crash_shard = manifest[c.SHARD] == f"{c.SHARDS_DIR}/{part.name}"
    assert in_crash_shard.sum() == 3
    assert set(manifest.loc[in_crash_shard, "decoder"]) == {"pydicom"}
    assert set(manifest.loc[~in_crash_shard, "decoder"]) == {"dicomsdl"}
    assert summary["manifest_rows"] == len(csv)
    assert_whole(out, raw)
