"""Security: no PHI and no S3 secret leaves the pipeline; the embedded defaults listen on
loopback only.

One nightly run in a subprocess reads RAW from S3 (moto server, sentinel credentials) with
the fault files added, so the error paths run too, and writes OUT to S3; it uses the
session's Prefect server and starts its own local Ray. Beside it, ``mammo ingest`` from a
bucket that does not exist; after it, ``mammo validate`` with the strict default limits,
which the fault files and the enriched positives break. Every output of the three is read
back and scanned for the planted PHI and for the sentinel credentials: the OUT bucket (every
object; Parquet values and PNG text chunks decoded), MAMMO_HOME (MLflow's SQLite store and
artifacts, Ray Train's storage), the subprocesses' PREFECT_HOME, Ray's session directory,
their stdout and stderr, and the Prefect API's flow runs, task runs, logs and artifacts.

A last test starts a small ingest with nothing configured (Prefect's temporary server, a
local Ray with its dashboard) and lists every listening socket of its process tree.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import boto3
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from mammo import contract as c
from mammo.png import encode_png
from tests.support.data import add_fault_files, make_raw, planted_phi
from tests.support.servers import (
    SENTINEL_ACCESS_KEY,
    SENTINEL_SECRET_KEY,
    create_bucket,
    free_port,
    upload_tree,
)

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
SECRETS = frozenset({SENTINEL_ACCESS_KEY, SENTINEL_SECRET_KEY})
RAW_BUCKET, OUT_BUCKET, MISSING_BUCKET = "sec-raw", "sec-out", "sec-no-such-bucket"
RAW_URI, OUT_URI = f"s3://{RAW_BUCKET}/rsna", f"s3://{OUT_BUCKET}/decoded"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Small and fast; the validation limits are widened because the fault files are 14 of ~70.
NIGHTLY_ARGS = {
    "raw": RAW_URI,
    "out": OUT_URI,
    "shard_size": 16,
    "preprocess": {"out_rows": 256, "out_cols": 128},
    "train_config": {
        "image_rows": 128,
        "image_cols": 64,
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 2,
    },
    "split": {"holdout_fraction": 0.2, "val_fraction": 0.25},
    "validation": {"positive_rate_band": (0.0, 0.6), "max_quarantine_rate": 0.5},
}
NIGHTLY_SCRIPT = (
    "import json, sys\n"
    "from flows.nightly import nightly\n"
    "print(json.dumps(nightly(**json.loads(sys.argv[1])), default=str))\n"
)


# -- the scanner -----------------------------------------------------------------------------


def png_texts(data: bytes) -> list[bytes]:
    """The texts of a PNG's tEXt, zTXt, iTXt and eXIf chunks, decompressed (PNG 11.3.4)."""
    texts, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length  # length, type, data, CRC
        keyword, _, rest = body.partition(b"\0")
        if kind in (b"tEXt", b"eXIf"):
            texts.append(body)
        elif kind == b"zTXt":  # keyword \0 method compressed-text
            texts.append(keyword + b" " + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":  # keyword \0 flag method language \0 translated \0 text
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")
            translated, _, text = rest.partition(b"\0")
            texts.append(
                b" ".join((keyword, translated, zlib.decompress(text) if compressed else text))
            )
    return texts


def readable(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data`` with its name, and every text hidden inside it in compressed form.

    zstd entropy-codes the literals of large Parquet pages, so a value in a shard can be
    invisible to a byte scan: tables are decoded (binary cells recursively), PNG text chunks
    inflated, zip members (torch checkpoints, MLflow models) and gzip streams opened.
    """
    yield name, name.encode() + b"\n" + data
    if data.startswith(b"PAR1"):
        table = pq.read_table(pa.BufferReader(data))
        yield f"{name} (schema)", str(table.schema.metadata).encode()
        for column in table.column_names:
            values = table.column(column).to_pylist()
            kind = table.schema.field(column).type
            if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
                for row, value in enumerate(values):
                    if value:
                        yield from readable(f"{name}[{column}][{row}]", value)
            else:
                yield f"{name}[{column}]", json.dumps(values, default=str).encode()
    elif data.startswith(PNG_SIGNATURE):
        yield f"{name} (text chunks)", b"\n".join(png_texts(data))
    elif data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                yield from readable(f"{name}!{member}", archive.read(member))
    elif data.startswith(b"\x1f\x8b"):
        yield from readable(f"{name} (gunzip)", gzip.decompress(data))


def variants(value: str) -> set[str]:
    """The forms a leaked value may take: DICOM PN with spaces, an ISO date, URL-encoded."""
    forms = {value, value.replace("^", " ").strip(), quote(value, safe="")}
    if re.fullmatch(r"[0-9]{8}", value):
        forms.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return forms


@dataclass(frozen=True)
class Needles:
    """The values that must not leak, in every form they may take."""

    forms: dict[bytes, str]  # lower-cased form -> the value it leaks

    @classmethod
    def of(cls, values: Iterable[str]) -> Needles:
        return cls({form.lower().encode(): value for value in values for form in variants(value)})

    def hits(self, sources: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
        """(where, value) for every value found in any source or in what it contains.

        Case-insensitive; all-digit forms (birth dates) count only as whole numbers, since
        image ids are long digit strings.
        """
        found: set[tuple[str, str]] = set()
        for name, data in sources:
            for part, blob in readable(name, data):
                lowered = blob.lower()
                found |= {(part, v) for form, v in self.forms.items() if _occurs(form, lowered)}
        return sorted(found)


def _occurs(form: bytes, blob: bytes) -> bool:
    """``form`` in ``blob``; an all-digit form only where no digit touches it."""
    start = blob.find(form)
    while start >= 0:
        end = start + len(form)
        touching = blob[max(start - 1, 0) : start] + blob[end : end + 1]
        if not form.isdigit() or not any(byte in b"0123456789" for byte in touching):
            return True
        start = blob.find(form, start + 1)
    return False


# -- where outputs live ----------------------------------------------------------------------


def files_under(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield str(path), path.read_bytes()


def bucket_objects(bucket: str) -> Iterator[tuple[str, bytes]]:
    """Every object of ``bucket`` (listed, then fetched)."""
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            yield f"s3://{bucket}/{obj['Key']}", body


@dataclass(frozen=True)
class PrefectRecords:
    flow_runs: list[dict[str, object]]
    task_runs: list[dict[str, object]]
    logs: list[dict[str, object]]
    artifacts: list[dict[str, object]]

    def sources(self) -> Iterator[tuple[str, bytes]]:
        for kind in ("flow_runs", "task_runs", "logs", "artifacts"):
            yield f"prefect:{kind}", json.dumps(getattr(self, kind), default=str).encode()


def prefect_records(since: datetime) -> PrefectRecords:
    """Flow runs started after ``since``, with their task runs, logs and artifacts (API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    def dump(items: Iterable[BaseModel]) -> list[dict[str, object]]:
        return [item.model_dump(mode="json") for item in items]

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=since)  # type: ignore[arg-type]
            )
        )
        ids = [run.id for run in runs]
        logs, offset = [], 0
        while page := client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
        ):
            logs += page
            offset += len(page)
        return PrefectRecords(
            flow_runs=dump(runs),
            task_runs=dump(
                client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            ),
            logs=dump(logs),
            artifacts=dump(
                client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
                )
            ),
        )


# -- running the pipeline as a user would ----------------------------------------------------


@dataclass(frozen=True)
class Command:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def sources(self) -> Iterator[tuple[str, bytes]]:
        name = " ".join(self.argv[:4])
        yield f"stdout of {name}", self.stdout.encode()
        yield f"stderr of {name}", self.stderr.encode()


def subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment (the sentinel AWS variables included) with nothing of the
    other tests' MLflow, Ray or MAMMO settings, and every local state directory in ``home``."""
    (home / "prefect").mkdir(parents=True, exist_ok=True)  # Prefect makes no parent directory
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAMMO_", "MLFLOW_", "RAY_", "PREFECT_"))
    }
    return {
        **env,
        "MAMMO_HOME": str(home / "mammo"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mammo/mlflow.db",
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "MAMMO_RAY_NUM_CPUS": "2",
        "MAMMO_RAY_OBJECT_STORE_MB": "300",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_command(argv: list[str], env: dict[str, str], timeout: float = 480) -> Command:
    done = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    return Command(argv, done.returncode, done.stdout, done.stderr)


def mammo(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


@dataclass(frozen=True)
class SecureRun:
    raw: Path
    phi: frozenset[str]
    home: Path
    ray_tmp: Path
    nightly: Command
    validate: Command
    missing_bucket: Command
    out_after_nightly: list[tuple[str, bytes]]
    out_after_validate: list[tuple[str, bytes]]
    prefect: PrefectRecords

    def outputs(self) -> Iterator[tuple[str, bytes]]:
        """Everything the three commands left behind, wherever it is."""
        yield from self.out_after_nightly
        yield from self.out_after_validate
        yield from files_under(self.home)  # MLflow store + artifacts, Ray Train, PREFECT_HOME
        yield from files_under(self.ray_tmp)  # Ray's session logs (workers, raylet, GCS)
        for command in (self.nightly, self.validate, self.missing_bucket):
            yield from command.sources()
        yield from self.prefect.sources()


@pytest.fixture(scope="module")
def secure_run(
    s3_endpoint: str, prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureRun]:
    root = tmp_path_factory.mktemp("security")
    raw = make_raw(root / "raw", patients=12, seed=5, positive_rate=0.3)
    add_fault_files(raw)
    for bucket in (RAW_BUCKET, OUT_BUCKET):
        create_bucket(bucket)
    upload_tree(str(raw), RAW_BUCKET, "rsna")
    ray_tmp = Path(tempfile.mkdtemp(prefix="msec-", dir="/tmp"))  # Ray's socket paths are short
    env = subprocess_env(
        root / "home",
        PREFECT_API_URL=prefect_server,
        RAY_TMPDIR=str(ray_tmp),
        MAMMO_RAY_DASHBOARD="0",
    )
    since = datetime.now(UTC)
    missing_out = str(root / "home" / "missing-out")  # under home: scanned with the rest
    missing_argv = mammo("ingest", "--raw", f"s3://{MISSING_BUCKET}/rsna", "--out", missing_out)
    try:
        with ThreadPoolExecutor(1) as pool:  # the failing ingest mostly waits: run it alongside
            missing = pool.submit(run_command, missing_argv, env)
            nightly = run_command(
                [sys.executable, "-c", NIGHTLY_SCRIPT, json.dumps(NIGHTLY_ARGS)], env
            )
            out_after_nightly = list(bucket_objects(OUT_BUCKET))
            validate = run_command(mammo("validate", "--raw", RAW_URI, "--data", OUT_URI), env)
            out_after_validate = [
                item for item in bucket_objects(OUT_BUCKET) if f"/{c.VALIDATION_DIR}/" in item[0]
            ]
        yield SecureRun(
            raw=raw,
            # a header cut inside Patient's Name leaves 'Faul', which matches 'default'
            phi=frozenset(v for v in planted_phi(raw) if len(v) >= 6),
            home=root / "home",
            ray_tmp=ray_tmp,
            nightly=nightly,
            validate=validate,
            missing_bucket=missing.result(),
            out_after_nightly=out_after_nightly,
            out_after_validate=out_after_validate,
            prefect=prefect_records(since),
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


# -- the scanner can find what it looks for ---------------------------------------------------

NAME, BIRTH = "Faultline^Philippa^Q", "19470312"


def _parquet_bytes(values: Mapping[str, Sequence[object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(values), sink, compression="zstd")
    return sink.getvalue()


def _details_column(secret: str) -> dict[str, list[str]]:
    """3,000 quarantine-like details, one with ``secret``: zstd entropy-codes the literals."""
    rng = np.random.default_rng(0)
    words = np.array(["truncated", "pixel", "data", "ends", "at", "byte", "header", "missing"])
    details = [" ".join(rng.choice(words, 8)) + f" {rng.integers(10**9)}" for _ in range(3000)]
    details[1500] = f"header unreadable: {secret}"  # neither min nor max: not in the footer
    return {"detail": details}


def _png_with_text(chunk: bytes, body: bytes) -> bytes:
    png = encode_png(np.zeros((4, 4), dtype=np.uint8), compression=1)
    crc = zlib.crc32(chunk + body).to_bytes(4, "big")
    return png[:33] + len(body).to_bytes(4, "big") + chunk + body + crc + png[33:]  # after IHDR


def _zip_of(name: str, data: bytes) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return sink.getvalue()


COMPRESSED = {  # outputs whose bytes do not show the value they hold
    "zstd-parquet-column": (_parquet_bytes(_details_column(NAME)), NAME),
    "ztxt-png-chunk-in-a-parquet-cell": (
        _parquet_bytes(
            {"png": [_png_with_text(b"zTXt", b"Author\0\0" + zlib.compress(NAME.lower().encode()))]}
        ),
        NAME,
    ),
    "deflated-zip-member": (_zip_of("data.pkl", BIRTH.encode()), BIRTH),
    "gzip-stream": (gzip.compress(b"x" * 100 + BIRTH.encode()), BIRTH),
}


@pytest.mark.parametrize(
    ("blob", "found"),
    [
        pytest.param(b"detail: Faultline Philippa Q", {NAME}, id="pn-with-spaces-in-a-log"),
        pytest.param(b"name=FAULTLINE%5EPHILIPPA%5EQ", {NAME}, id="url-encoded-upper-case"),
        pytest.param(b"born 1947-03-12.", {BIRTH}, id="iso-birth-date"),
        pytest.param(b"image_id 7194703121", set(), id="digits-inside-an-id-are-no-date"),
        *(pytest.param(blob, {value}, id=case) for case, (blob, value) in COMPRESSED.items()),
    ],
)
def test_the_scanner_finds_every_form_a_leak_may_take(blob: bytes, found: set[str]) -> None:
    hits = Needles.of({NAME, BIRTH}).hits([("blob", blob)])
    assert {value for _, value in hits} == found, hits


@pytest.mark.parametrize("case", list(COMPRESSED))
def test_a_byte_scan_alone_would_miss_the_compressed_cases(case: str) -> None:
    blob, value = COMPRESSED[case]
    assert value.lower().encode() not in blob.lower()


# -- one nightly run and two failures, every output scanned ------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_the_run_went_through_every_path_that_is_scanned(secure_run: SecureRun) -> None:
    run = secure_run
    assert run.nightly.returncode == 0, run.nightly.stderr[-3000:]
    result = json.loads(run.nightly.stdout.strip().splitlines()[-1])
    assert result["registered"]["version"] == "1"
    keys = {name for name, _ in run.out_after_nightly}
    assert f"{OUT_URI}/{c.MANIFEST_FILE}" in keys and f"{OUT_URI}/{c.QUARANTINE_FILE}" in keys
    assert any(f"/{c.PNG_DIR}/" in key for key in keys) and any("/eda/" in key for key in keys)
    quarantine = pq.read_table(
        pa.BufferReader(dict(run.out_after_nightly)[f"{OUT_URI}/{c.QUARANTINE_FILE}"])
    )
    assert len(set(quarantine.column("reason").to_pylist())) >= 8  # the error paths ran
    assert (run.home / "mammo" / "mlflow.db").is_file()
    assert list((run.home / "mammo" / "mlartifacts").rglob("*.png"))
    assert list((run.home / "mammo" / "ray_results").rglob("*.pt"))
    assert list(run.ray_tmp.rglob("*.log"))
    # nightly with its ingest, train and promote subflows; validate; the failed ingest
    names = sorted(str(r["name"]) for r in run.prefect.flow_runs)
    assert len(names) >= 6, names
    assert {r["state_type"] for r in run.prefect.flow_runs} == {"COMPLETED", "FAILED"}
    assert len(run.prefect.logs) >= 10 and run.prefect.artifacts


@pytest.mark.integration
@pytest.mark.slow
def test_no_planted_phi_reaches_any_output(secure_run: SecureRun) -> None:
    needles = Needles.of(secure_run.phi)
    assert len(secure_run.phi) > 20  # 12 patients' values and the fault files'
    assert needles.hits(bucket_objects(RAW_BUCKET)), "the scan must find the PHI in RAW"
    # MLflow models carry a copy of mammo/, whose synthetic generator holds the fake values
    own_code = {
        hashlib.sha256(path.read_bytes()).digest()
        for package in ("mammo", "tasks", "flows")
        for path in (REPO / package).rglob("*.py")
    }
    outputs = [
        (n, d) for n, d in secure_run.outputs() if hashlib.sha256(d).digest() not in own_code
    ]
    assert needles.hits(outputs) == []


@pytest.mark.integration
@pytest.mark.slow
def test_no_s3_credential_reaches_any_output(secure_run: SecureRun) -> None:
    needles = Needles.of(SECRETS)
    assert needles.hits([("environment", json.dumps(dict(os.environ)).encode())])  # in play
    assert needles.hits([*secure_run.outputs(), *bucket_objects(RAW_BUCKET)]) == []


@pytest.mark.integration
@pytest.mark.slow
def test_failed_validation_names_the_failed_expectations_and_nothing_private(
    secure_run: SecureRun,
) -> None:
    validate = secure_run.validate
    assert validate.returncode == 1, validate.stderr[-3000:]
    assert "mammo validate failed:" in validate.stderr
    assert "quarantine_rate (<= 0.05)" in validate.stderr
    reports = {name for name, _ in secure_run.out_after_validate}
    assert f"{OUT_URI}/{c.VALIDATION_DIR}/decoded_set.json" in reports
    needles = Needles.of(secure_run.phi | SECRETS)
    assert needles.hits([*validate.sources(), *secure_run.out_after_validate]) == []


@pytest.mark.integration
@pytest.mark.slow
def test_an_s3_error_names_bucket_and_key_but_no_credential(secure_run: SecureRun) -> None:
    failed = secure_run.missing_bucket
    assert failed.returncode == 1, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert message.startswith("mammo ingest failed: S3 read failed for ")
    assert f"s3://{MISSING_BUCKET}/rsna/{c.csv_name(c.Subset.TRAIN)}" in message
    assert "NoSuchBucket" in message
    failed_runs = [r for r in secure_run.prefect.flow_runs if r["state_type"] == "FAILED"]
    assert any(MISSING_BUCKET in json.dumps(r["state"]) for r in failed_runs)
    assert Needles.of(SECRETS).hits([*failed.sources(), *secure_run.prefect.sources()]) == []


# -- network exposure of the embedded defaults -----------------------------------------------


@dataclass(frozen=True)
class Listener:
    process: str
    command: str
    ip: str
    port: int


def listeners(root: psutil.Process) -> set[Listener]:
    """Every listening TCP socket of ``root`` and its descendants."""
    found: set[Listener] = set()
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in tree:
        try:
            name, command = proc.name(), " ".join(proc.cmdline())
            sockets = proc.net_connections("inet")
        except psutil.Error:
            continue
        found |= {
            Listener(name, command, s.laddr.ip, s.laddr.port)
            for s in sockets
            if s.status == "LISTEN"
        }
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_embedded_prefect_and_ray_listen_on_loopback_only(tmp_path: Path) -> None:
    """No PREFECT_API_URL, no RAY_ADDRESS: Prefect's temporary server and a local Ray with
    its dashboard start inside the flow's process tree; sampled until the command exits."""
    raw = make_raw(tmp_path / "raw", patients=3, seed=3)
    dashboard, metrics = free_port(), free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="mnet-", dir="/tmp"))
    env = subprocess_env(
        tmp_path / "home",
        RAY_TMPDIR=str(ray_tmp),
        MAMMO_RAY_DASHBOARD="1",
        MAMMO_RAY_DASHBOARD_PORT=str(dashboard),
        MAMMO_RAY_METRICS_PORT=str(metrics),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",  # a new database: migrations
    )
    argv = mammo("ingest", "--raw", str(raw), "--out", str(tmp_path / "out"), "--shard-size", "2")
    seen: set[Listener] = set()
    log = tmp_path / "output.log"
    try:
        with (
            log.open("wb") as sink,
            subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
            ) as proc,
        ):
            root, deadline = psutil.Process(proc.pid), time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                seen |= listeners(root)
                time.sleep(0.2)
            if proc.poll() is None:  # past the deadline: end this command's own tree
                for member in [*root.children(recursive=True), root]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        member.kill()
            proc.wait(timeout=60)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    table = "\n".join(
        f"{s.ip}:{s.port:<6} {s.process:<20} {s.command[:90]}" for s in sorted(seen, key=str)
    )
    print(table)
    assert {s.ip for s in seen} <= LOOPBACK, table
    names = {s.process for s in seen}
    assert {"gcs_server", "raylet"} <= names, table
    assert {dashboard, metrics} <= {s.port for s in seen}, table
    assert any("uvicorn" in s.command for s in seen), table  # Prefect's temporary server
