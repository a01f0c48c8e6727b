"""The ingest flow end to end: a real Prefect server, a local Ray cluster, moto's S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydicom.uid import JPEGLosslessSV1

from flows.ingest import ingest
from mammo import contract as c
from mammo import inventory as inv
from mammo.png import decode_png
from tests.support.data import (
    add_fault_files,
    copy_raw,
    make_raw,
    phi_hits,
    planted_phi,
    tree_digest,
)
from tests.support.servers import create_bucket, upload_tree

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw-source") / "raw", patients=6, seed=11)


@pytest.fixture
def stack(prefect_server: str, ray_cluster: dict[str, object]) -> None:
    """Every test here runs its flows against the real Prefect server and Ray cluster."""


def run_ingest(raw: str, out: str, **kw: object) -> dict[str, object]:
    return ingest(raw=raw, out=out, shard_size=8, **kw)  # type: ignore[arg-type]


def test_ingest_writes_shards_pngs_manifest_and_config(
    stack: None, raw_source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = run_ingest(str(raw_source), str(out))

    csv = pd.read_csv(raw_source / "train.csv")
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    assert summary["manifest_rows"] == len(csv) == len(manifest)
    assert summary["quarantined"] == 0
    assert sorted(manifest[c.IMAGE_ID]) == sorted(csv[c.IMAGE_ID])
    assert (out / c.PREPROCESS_CONFIG_FILE).is_file()

    shard_files = sorted((out / c.SHARDS_DIR).glob("part-*.parquet"))
    assert len(shard_files) == -(-len(csv) // 8)
    shard = pq.read_table(shard_files[0])
    assert shard.schema.equals(c.SHARD_SCHEMA, check_metadata=False)
    row = shard.slice(0, 1).to_pylist()[0]
    image = decode_png(row[c.PNG])
    assert image.shape == (1024, 512) and image.dtype.name == "uint8"
    assert (out / row[c.PNG_PATH]).read_bytes() == row[c.PNG]
    assert row[c.PREDICTION_ID] == f"{row[c.PATIENT_ID]}_{row[c.LATERALITY]}"
    # every image landed on disk and no temporary file was left behind
    assert len(list((out / c.PNG_DIR).rglob("*.png"))) == len(csv)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_rerun_without_change_decodes_nothing_and_new_files_only_are_decoded(
    stack: None, raw_source: Path, tmp_path: Path
) -> None:
    raw = copy_raw(raw_source, tmp_path / "raw")
    out = tmp_path / "out"
    first = run_ingest(str(raw), str(out))
    shards_before = tree_digest(out / c.SHARDS_DIR)

    again = run_ingest(str(raw), str(out))
    assert again["decoded_this_run"] == 0 and again["already_done"] == first["manifest_rows"]
    assert tree_digest(out / c.SHARDS_DIR) == shards_before

    # a label correction and a new age: joined at manifest time, nothing decoded again
    csv = pd.read_csv(raw / "train.csv")
    target = int(csv.loc[0, c.IMAGE_ID])
    csv.loc[0, c.CANCER] = 1 - int(csv.loc[0, c.CANCER])
    csv.loc[0, c.AGE] = 77.0
    csv.to_csv(raw / "train.csv", index=False)
    corrected = run_ingest(str(raw), str(out))
    assert corrected["decoded_this_run"] == 0
    assert tree_digest(out / c.SHARDS_DIR) == shards_before
    row = pd.read_parquet(out / c.MANIFEST_FILE).set_index(c.IMAGE_ID).loc[target]
    assert (row[c.CANCER], row[c.AGE]) == (csv.loc[0, c.CANCER], 77.0)

    extra = make_raw(tmp_path / "extra", patients=2, seed=12)
    csv = pd.read_csv(raw / "train.csv")
    new_rows = pd.read_csv(extra / "train.csv")
    pd.concat([csv, new_rows]).to_csv(raw / "train.csv", index=False)
    for patient_dir in (extra / "train_images").iterdir():
        copy_raw(patient_dir, raw / "train_images" / patient_dir.name)

    third = run_ingest(str(raw), str(out))
    assert third["decoded_this_run"] == len(new_rows)
    assert third["already_done"] == first["manifest_rows"]
    assert third["manifest_rows"] == len(csv) + len(new_rows)
    # the shards of the first run were not rewritten
    after = tree_digest(out / c.SHARDS_DIR)
    assert all(after[name] == digest for name, digest in shards_before.items())


def test_without_a_shard_size_every_cpu_gets_shards_and_a_rerun_finishes_the_same_plan(
    stack: None, raw_source: Path, tmp_path: Path
) -> None:
    """A small ingest is not one shard on one core; the costliest shards go first; a rerun of
    a plan that lost shards rebuilds exactly those, not a new cut of what is left."""
    out = tmp_path / "out"
    summary = ingest(raw=str(raw_source), out=str(out))
    images = int(summary["manifest_rows"])
    shard_files = sorted((out / c.SHARDS_DIR).glob("part-*.parquet"))
    size = inv.auto_shard_size(images, cores=2)  # the session's Ray cluster has 2 CPUs
    assert size < images and len(shard_files) == -(-images // size) >= 4
    before = tree_digest(out / c.SHARDS_DIR)
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)

    lost = shard_files[:2]  # as if the run had died before committing them
    lost_rows = sum(pq.read_metadata(shard).num_rows for shard in lost)
    for shard in lost:
        shard.unlink()
    again = ingest(raw=str(raw_source), out=str(out))
    assert again["decoded_this_run"] == lost_rows
    assert tree_digest(out / c.SHARDS_DIR) == before
    assert pd.read_parquet(out / c.MANIFEST_FILE).equals(manifest)


def test_every_bad_input_gets_its_quarantine_reason_and_good_ones_survive(
    stack: None, raw_source: Path, tmp_path: Path
) -> None:
    raw = copy_raw(raw_source, tmp_path / "raw")
    expected = add_fault_files(raw)
    csv = pd.read_csv(raw / "train.csv")
    # a CSV row whose file is missing, and a file without a CSV row
    missing_row = {**csv.iloc[0].to_dict(), c.PATIENT_ID: 123, c.IMAGE_ID: 456}
    pd.concat([csv, pd.DataFrame([missing_row])]).to_csv(raw / "train.csv", index=False)
    stray = raw / c.image_relpath(c.Subset.TRAIN, 777, 888)
    stray.parent.mkdir(parents=True)
    stray.write_bytes((raw / csv.iloc[0:1].pipe(_first_path)).read_bytes())
    out = tmp_path / "out"

    summary = run_ingest(str(raw), str(out))

    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    quarantine = pd.read_parquet(out / c.QUARANTINE_FILE)
    reasons = dict(zip(quarantine[c.IMAGE_ID], quarantine["reason"], strict=True))
    for image_id, reason in expected.items():
        if reason is None:
            assert image_id in set(manifest[c.IMAGE_ID]), f"{image_id} should have decoded"
        else:
            assert reasons.get(image_id) == reason, f"image {image_id}: {reasons.get(image_id)}"
    assert reasons[456] == c.QuarantineReason.MISSING_FILE.value
    assert reasons[888] == c.QuarantineReason.NO_CSV_ROW.value
    # nothing valid is lost: every synthetic image is in the manifest
    original = pd.read_csv(raw_source / "train.csv")
    assert set(original[c.IMAGE_ID]) <= set(manifest[c.IMAGE_ID])
    # every CSV row is in exactly one of manifest or quarantine
    quarantined_ids = set(quarantine[c.IMAGE_ID].dropna())
    assert not quarantined_ids & set(manifest[c.IMAGE_ID])
    assert set(pd.read_csv(raw / "train.csv")[c.IMAGE_ID]) == quarantined_ids - {888} | set(
        manifest[c.IMAGE_ID]
    )
    assert summary["quarantined"] == len(quarantine)
    assert all(quarantine["detail"].str.len() > 0)


def _first_path(frame: pd.DataFrame) -> str:
    row = frame.iloc[0]
    return c.image_relpath(c.Subset.TRAIN, row[c.PATIENT_ID], row[c.IMAGE_ID])


def test_no_phi_value_reaches_any_output(stack: None, raw_source: Path, tmp_path: Path) -> None:
    raw = copy_raw(raw_source, tmp_path / "raw")
    add_fault_files(raw)
    out = tmp_path / "out"
    run_ingest(str(raw), str(out))
    values = planted_phi(raw)
    assert len(values) > 10  # the generator did plant PHI, and the scan looks for it
    assert phi_hits(raw, values), "the scanner must find PHI in the raw DICOMs"
    assert phi_hits(out, values) == []


def test_ingest_from_s3_to_s3(stack: None, s3_endpoint: str, raw_source: Path) -> None:
    create_bucket("mammo-raw")
    create_bucket("mammo-out")
    uploaded = upload_tree(str(raw_source), "mammo-raw", "rsna")
    # every DICOM, train.csv and the generator's synthetic.json and synthetic_oracle.csv
    assert uploaded == len(pd.read_csv(raw_source / "train.csv")) + 3

    summary = run_ingest("s3://mammo-raw/rsna", "s3://mammo-out/decoded")

    s3 = boto3.client("s3")
    keys = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mammo-out")
        for obj in page.get("Contents", [])
    }
    n_images = len(pd.read_csv(raw_source / "train.csv"))
    assert summary["manifest_rows"] == n_images
    assert "decoded/manifest.parquet" in keys and "decoded/preprocess.json" in keys
    assert sum(k.startswith("decoded/png/") for k in keys) == n_images
    assert sum(k.startswith("decoded/shards/part-") for k in keys) == -(-n_images // 8)
    body = s3.get_object(Bucket="mammo-out", Key="decoded/manifest.parquet")["Body"].read()
    manifest = pq.read_table(pa_buffer(body)).to_pandas()
    assert len(manifest) == n_images

    again = run_ingest("s3://mammo-raw/rsna", "s3://mammo-out/decoded")
    assert again["decoded_this_run"] == 0


def pa_buffer(data: bytes):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.BufferReader(data)


def test_mammo_ingest_decode_fast_reads_jpeg2000_at_the_resolution_the_output_needs(
    prefect_server: str, ray_cluster: dict[str, object], tmp_path: Path
) -> None:
    """The documented command (docs/decoding.md) as a subprocess: each manifest row names its
    decoder and reduction, the mode is saved with OUT and kept by a rerun that does not name
    it, and asking for the other mode on the same OUT is one line, not a traceback."""
    # 4 JPEG 2000 and 13 JPEG Lossless SV1 files
    raw = make_raw(tmp_path / "raw", patients=3, seed=5, image_size="1024x832")
    out = tmp_path / "out"
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
        "PREFECT_API_URL": prefect_server,
        "RAY_ADDRESS": str(ray_cluster["address"]),
        "MAMMO_HOME": str(tmp_path / "home"),
    }

    def mammo(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flows.cli", "ingest", "--raw", str(raw)]
        command += ["--out", str(out), "--rows", "256", "--cols", "128", *extra]
        return subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    first = mammo("--decode", "fast")
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = pd.read_parquet(out / c.MANIFEST_FILE)
    assert len(manifest) == len(pd.read_csv(raw / "train.csv"))
    sv1 = manifest["transfer_syntax"] == str(JPEGLosslessSV1)
    assert 0 < sv1.sum() < len(manifest)
    assert set(manifest.loc[sv1, "decoder"]) == {"imagecodecs"}  # in full, bit-exact
    assert (manifest.loc[sv1, c.REDUCTION] == 0).all()
    manifest_j2k = manifest[~sv1]
    assert set(manifest_j2k["decoder"]) == {"pillow-openjpeg"}
    scale = 2 ** manifest_j2k[c.REDUCTION]
    assert (scale >= 2).all()  # 1024 x 832 at 1/2 still fills 256 x 128
    rows = (manifest_j2k["crop_y1"] - manifest_j2k["crop_y0"]) // scale
    cols = (manifest_j2k["crop_x1"] - manifest_j2k["crop_x0"]) // scale
    assert ((rows >= 256) | (cols >= 128)).all()  # never upsampled
    assert json.loads((out / c.PREPROCESS_CONFIG_FILE).read_text())["decode"] == "fast"

    again = mammo()  # the size flags alone: the saved mode is kept, nothing is decoded again
    assert again.returncode == 0, again.stdout + again.stderr
    assert pd.read_parquet(out / c.MANIFEST_FILE).equals(manifest)

    other = mammo("--decode", "exact")
    assert other.returncode == 1
    assert "another preprocessing config" in other.stderr
    assert "Traceback" not in other.stdout + other.stderr
