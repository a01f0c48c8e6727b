"""Drift as a user meets it: tonight's new patients ingested into the pipeline's OUT, then
`mammo drift` as a subprocess against the pipeline's champion; the findings read back as
events from the session's real Prefect server.

- a night with a new machine id and a window change on machine 49's new images raises
  those data findings and nothing else (the champion's scores may move on machine 49, and
  only there), and the command still succeeds (drift warns);
- a night drawn from the reference's own distribution raises nothing;
- the same night with half its negative breasts relabelled as cancers (missed by the
  champion) raises the sensitivity CUSUM, and only it;
- `mammo monitor` prints a completed night and one stopped at the metadata gate side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
import pytest
from pydicom.multival import MultiValue

from flows.demo import PREPROCESS
from mammo import contract as c
from tasks.monitor import EVENT_PREFIX, dataset_resource, latest_report, unresolved_drift
from tasks.validate import DataValidationError
from tests.flows.conftest import Pipeline, run_nightly
from tests.support.data import make_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
NEW_MACHINE = 251  # a machine of the synthetic table never used for train images
# The reference has about 17 patients on machine 49: the shift tests need fewer than the
# default 30 per side on this small set (the [monitor] section of a configuration file).
CONFIG = "[monitor]\nmin_samples = 8\n"


def tonight(pipeline: Pipeline, root: Path, seed: int, patients: int = 30) -> Path:
    """RAW as it stands tonight: the pipeline's patients and ``patients`` new ones, kept to
    the machines and views the reference knows (a draw from its distribution)."""
    raw = root / "raw"
    shutil.copytree(pipeline.raw, raw)
    new = make_raw(root / "new", patients=patients, seed=seed)
    known = pd.read_csv(pipeline.raw / "train.csv")
    rows = pd.read_csv(new / "train.csv")
    rows = rows[rows[c.MACHINE_ID].isin(known[c.MACHINE_ID]) & rows[c.VIEW].isin(known[c.VIEW])]
    for patient in rows[c.PATIENT_ID].unique():
        shutil.copytree(new / "train_images" / str(patient), raw / "train_images" / str(patient))
    pd.concat([known, rows]).to_csv(raw / "train.csv", index=False)
    return raw


def ingest(raw: Path, out: Path) -> None:
    from flows.ingest import ingest as ingest_flow

    ingest_flow(raw=str(raw), out=str(out), shard_size=64, preprocess=PREPROCESS)


def ingested(pipeline: Pipeline, raw: Path, root: Path) -> Path:
    """A copy of the pipeline's OUT with tonight's ``raw`` ingested into it."""
    out = root / "out"
    shutil.copytree(pipeline.out, out)
    ingest(raw, out)
    return out


def mammo(pipeline: Pipeline, prefect_server: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A `mammo` command against the pipeline's registry and the session's Prefect server."""
    env = {**os.environ, "MAMMO_HOME": str(pipeline.home), "PREFECT_API_URL": prefect_server}
    return subprocess.run(
        [str(BIN / "mammo"), *args],
        env={**env, "MLFLOW_TRACKING_URI": pipeline.tracking_uri},
        capture_output=True,
        text=True,
        timeout=600,
    )


def drift(
    pipeline: Pipeline, prefect_server: str, out: Path, config: Path
) -> subprocess.CompletedProcess[str]:
    return mammo(pipeline, prefect_server, "drift", "--data", str(out), "--config", str(config))


def drift_events(out: Path, expected: int, wait_s: float = 30.0) -> list[Any]:
    """The drift events about ``out`` (or its model) on the Prefect server, once ``expected``
    have arrived (the server stores events a moment after they are sent)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )

    dataset = dataset_resource(str(out))["prefect.resource.id"]
    name = EventNameFilter(prefix=[EVENT_PREFIX])
    filters = [
        EventFilter(event=name, resource=EventResourceFilter(id=[dataset])),
        EventFilter(event=name, related=EventRelatedFilter(id=[dataset])),
    ]
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            events = [e for f in filters for e in client.read_events(f, limit=50).events]
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(1)


def shift_window(raw: Path, patients: list[int], fraction: float) -> int:
    """Move the window centres of these patients' DICOMs by ``fraction`` of the first width,
    as a changed acquisition software would; returns the images changed."""
    changed = 0
    for patient in patients:
        for path in (raw / "train_images" / str(patient)).glob("*.dcm"):
            ds = pydicom.dcmread(path)
            centers, widths = (
                [float(v) for v in (value if isinstance(value, MultiValue) else [value])]
                for value in (ds.WindowCenter, ds.WindowWidth)
            )
            moved = [center + fraction * widths[0] for center in centers]
            ds.WindowCenter = moved if len(moved) > 1 else moved[0]
            ds.save_as(path)
            changed += 1
    return changed


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("monitor") / "nightly.toml"
    path.write_text(CONFIG)
    return path


def test_a_new_machine_and_a_pixel_shift_raise_exactly_those_findings_as_events(
    pipeline: Pipeline, prefect_server: str, config: Path, tmp_path: Path
) -> None:
    raw = tonight(pipeline, tmp_path, seed=8)
    new = pd.read_csv(raw / "train.csv").iloc[len(pd.read_csv(pipeline.raw / "train.csv")) :]
    on_49 = sorted(new.loc[new[c.MACHINE_ID] == 49, c.PATIENT_ID].unique())
    others = sorted(set(new[c.PATIENT_ID]) - set(on_49))
    assert len(on_49) >= 8 and len(others) >= 2, "seed 8 no longer draws enough patients"
    assert shift_window(raw, on_49, fraction=0.35) > 0
    csv = pd.read_csv(raw / "train.csv")
    moved = csv[c.PATIENT_ID].isin(others[:2])
    csv.loc[moved, c.MACHINE_ID] = NEW_MACHINE
    csv.to_csv(raw / "train.csv", index=False)
    out = ingested(pipeline, raw, tmp_path)

    done = drift(pipeline, prefect_server, out, config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    report = latest_report(str(out))
    found = {(f["kind"], f["column"], f["group"]) for f in report["findings"]}
    new_machine = ("new-value", c.MACHINE_ID, f"{c.MACHINE_ID}={NEW_MACHINE}")
    pixels = {("numeric-shift", col, "machine_id=49") for col in (c.PIXEL_MEAN, c.PIXEL_STD)}
    # The champion sees the darker images too: its scores, and so its misses, may move.
    on_model = ("score-shift", "performance-shift")
    data = {f for f in found if f[0] not in on_model}
    assert new_machine in data and data & pixels, report
    assert data <= {new_machine, *pixels}, f"unexpected findings: {data - {new_machine, *pixels}}"
    assert {g for kind, _, g in found if kind == "score-shift"} <= {"machine_id=49", "site_id=1"}
    assert report["version"] and report["current_images"] == len(new)
    assert f"machine_id {NEW_MACHINE}, never seen in the reference" in done.stdout

    events = drift_events(out, expected=len(found))
    by_kind = {(e.event, e.payload["column"], e.payload["group"]) for e in events}
    assert by_kind == {(f"{EVENT_PREFIX}{k}", col, g) for k, col, g in found}
    related = {r.id for e in events for r in e.related}
    assert f"mammo.model.mammo-cancer.v{report['version']}" in related

    # A protocol blocking on critical drift waits until someone resolves each finding.
    critical = unresolved_drift(str(out))
    allowed = ("numeric-shift:", "performance-shift:")
    assert critical and all(key.startswith(allowed) or "49" in key for key in critical)
    why = ["--reason", "new detector firmware on machine 49, checked by physics"]
    for key in critical:
        done = mammo(pipeline, prefect_server, "drift", "--data", str(out), "--resolve", key, *why)
        assert done.returncode == 0 and f"Resolved {key}" in done.stdout, done.stderr[-2000:]
    assert unresolved_drift(str(out)) == []
    wrong = mammo(pipeline, prefect_server, "drift", "--data", str(out), "--resolve", "x:y")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "'x:y' is not a finding of the latest drift report" in wrong.stderr

    # The decoded-set gate warns on the new machine too, and passes.
    band = ["--positive-rate-band", "0", "0.5"]
    gate = mammo(pipeline, prefect_server, "validate", "--raw", str(raw), "--data", str(out), *band)
    assert gate.returncode == 0, gate.stdout[-3000:] + gate.stderr[-3000:]
    decoded = json.loads((out / "validation" / "decoded_set.json").read_text())
    warned = [r for r in decoded["results"] if not r["success"]]
    assert [(r["columns"], r["severity"], r["examples"]) for r in warned] == [
        ([c.MACHINE_ID], "warning", [str(NEW_MACHINE)])
    ]


def test_a_night_from_the_reference_distribution_raises_nothing(
    pipeline: Pipeline, prefect_server: str, config: Path, tmp_path: Path
) -> None:
    raw = tonight(pipeline, tmp_path, seed=9)
    out = ingested(pipeline, raw, tmp_path)

    done = drift(pipeline, prefect_server, out, config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = latest_report(str(out))
    assert report["current_images"] > 50 and report["findings"] == [], report
    assert "no drift found" in done.stdout
    assert drift_events(out, expected=1, wait_s=5) == []


def test_cancers_the_champion_misses_raise_its_sensitivity_cusum_and_nothing_else(
    pipeline: Pipeline, prefect_server: str, config: Path, tmp_path: Path
) -> None:
    """Labels arrive for new breasts, and many of tonight's cancers are ones the champion
    scores as negative (relabelled negatives): its sensitivity chart signals, the others
    stay quiet, and the chart is in the report, the markdown and the events."""
    raw = tonight(pipeline, tmp_path, seed=9)
    csv = pd.read_csv(raw / "train.csv")
    new = csv.index >= len(pd.read_csv(pipeline.raw / "train.csv"))
    breasts = csv[new & (csv[c.CANCER] == 0)][[c.PATIENT_ID, c.LATERALITY]].drop_duplicates()
    missed = breasts.iloc[: len(breasts) // 2]
    keys = pd.MultiIndex.from_frame(csv[[c.PATIENT_ID, c.LATERALITY]])
    csv.loc[keys.isin(pd.MultiIndex.from_frame(missed)), c.CANCER] = 1
    csv.to_csv(raw / "train.csv", index=False)
    out = ingested(pipeline, raw, tmp_path)

    done = drift(pipeline, prefect_server, out, config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = latest_report(str(out))
    found = {(f["kind"], f["column"]) for f in report["findings"]}
    # seed 9 is the night the test above finds nothing in: the labels are all that changed
    assert found == {("performance-shift", "sensitivity")}, report
    charts = {chart["name"]: chart for chart in report["charts"]}
    assert charts["sensitivity"]["signal_night"] and not charts["specificity"]["signal_night"]
    assert sum(charts["sensitivity"]["cases"]) >= len(missed)
    markdown = sorted((out / c.DRIFT_REPORTS_DIR).glob("*.md"))[-1].read_text()
    assert "**sensitivity CUSUM**" in markdown and "**signal**" in markdown
    figures = report["figures"]
    assert sorted(name.rsplit("-", 1)[1] for name in figures) == ["cusum.png", "scores.png"]
    for name in figures:
        assert (out / c.DRIFT_REPORTS_DIR / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in markdown
    events = drift_events(out, expected=len(report["findings"]))
    performance = [e for e in events if e.event == f"{EVENT_PREFIX}performance-shift"]
    assert [e.resource.id for e in performance] == [
        f"mammo.model.mammo-cancer.v{report['version']}"
    ]
    # The same breasts are not charted twice: a second report adds no case.
    again = drift(pipeline, prefect_server, out, config)
    assert again.returncode == 0
    second = latest_report(str(out))
    assert [chart["nights"] for chart in second["charts"]] == [
        chart["nights"] for chart in report["charts"]
    ]


def test_mammo_monitor_prints_a_completed_and_a_stopped_night_side_by_side(
    pipeline: Pipeline, prefect_server: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(pipeline.out, out)  # holds the pipeline's own night, promoted
    broken = tmp_path / "raw"
    shutil.copytree(pipeline.raw, broken)
    csv = pd.read_csv(broken / "train.csv")
    csv.loc[csv.index[:3], c.AGE] = 150  # out of [18, 100]: the metadata gate fails
    csv.to_csv(broken / "train.csv", index=False)
    with pytest.raises(DataValidationError):
        run_nightly(broken, out)

    first, second = (json.loads(p.read_text()) for p in sorted((out / c.NIGHTS_DIR).glob("*.json")))
    assert first["status"] == "completed" and first["stage"] == "promote"
    assert (first["rows"], first["new_files"], first["validation"]) == (175, 175, "passed")
    assert (first["challenger"], first["champion"], first["decision"]) == ("1", "1", "promoted")
    assert (first["drift_warnings"], first["drift_critical"]) == (0, 0)  # nothing to compare
    assert second["status"] == "failed" and second["stage"] == "metadata gate"
    assert second["validation"] == "failed" and second["error"].startswith("DataValidationError")
    assert second["rows"] is None and second["decision"] == ""

    env = {**os.environ, "MAMMO_HOME": str(pipeline.home), "PREFECT_API_URL": prefect_server}
    done = subprocess.run(
        [str(BIN / "mammo"), "monitor", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = {line.split("  ")[0]: line.split() for line in done.stdout.splitlines() if line}
    assert lines["status"][1:] == ["completed", "failed"]
    assert lines["validation"][1:] == ["passed", "failed"]
    assert lines["decision"][1:] == ["promoted", "-"]
    assert "Latest drift report:" in done.stdout
    docs = done.stdout.split("Latest Great Expectations Data Docs: ")[1].split()[0]
    assert docs == first["data_docs"] and Path(docs.replace(str(pipeline.out), str(out))).is_file()

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        history = client.read_latest_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["nightly-history"]))
        )
    assert history, "the nightly-history table artifact is missing"
