"""Smoke tests of the benchmarks: each runs on tiny inputs and must produce a well-formed
result with the right counts. Never a timing assertion: these figures mean nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from benchmarks import (
    decode_ceiling,
    drift_false_alarms,
    fast_decode,
    incremental,
    ingest_vs_ceiling,
    model_quality,
    peer_baseline,
    scale_count,
    train_input,
)
from benchmarks.common import REPO, Result, dicom_files, synth_set
from mammo.decoders import FAST_LOSSLESS_DECODER
from mammo.synth.generate import SynthConfig
from mammo.window import apply_voi


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


def _cli(cache: Path, results: Path, *extra: str) -> list[str]:
    return ["--smoke", "--cache-dir", str(cache), "--results-dir", str(results), *extra]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _check_written(result: Result, results: Path) -> dict[str, Any]:
    """The JSON on disk is the result, with the machine description."""
    saved: dict[str, Any] = json.loads((results / f"{result.name}.json").read_text())
    assert saved["name"] == result.name and saved["smoke"] is True
    assert saved["summary"] == json.loads(json.dumps(result.summary, default=str))
    assert saved["machine"]["usable_cores"] >= 1 and saved["machine"]["cpu_model"]
    assert saved["machine"]["packages"]["dicomsdl"] != "not installed"
    assert f"### {result.name}" in result.markdown()
    return saved


# --- pure pieces ---------------------------------------------------------------------------


def test_result_markdown_has_one_column_per_key_and_json_round_trips(tmp_path: Path) -> None:
    result = Result(
        name="demo",
        smoke=False,
        params={"n": 2},
        table=[{"a": 1.23456, "b": "x"}, {"a": 2.0, "c": 3}],
        summary={"rate": 12.5},
        formulas={"rate": "n / s"},
    )
    text = result.markdown()
    assert "| a | b | c |" in text and "| 1.235 | x |  |" in text and "| 2 |  | 3 |" in text
    assert "- **rate**: 12.5" in text and "- rate = n / s" in text
    assert Result(**json.loads(result.write(tmp_path).read_text())) == result


@pytest.mark.parametrize(
    ("syntax", "size", "machine_id"),
    [
        pytest.param("jpeg2000-lossless", "2776x2082", 49, id="j2k-2776-most-common-machine"),
        pytest.param("jpeg-lossless-sv1", "2776x2082", 197, id="sv1-2776-only-sv1-of-that-size"),
        pytest.param("jpeg2000-lossless", "3328x2560", 190, id="j2k-3328-first-of-a-tie"),
        pytest.param("jpeg-lossless-sv1", "3328x2560", 21, id="sv1-3328-largest-share"),
        pytest.param("jpeg2000-lossless", "64x64", 49, id="j2k-no-size-match-largest-share"),
    ],
)
def test_case_machine_matches_syntax_then_detector_size(
    syntax: str, size: str, machine_id: int
) -> None:
    rows, cols = (int(v) for v in size.split("x"))
    machine = decode_ceiling.case_machine(decode_ceiling.SYNTAXES[syntax], rows, cols)
    assert machine.machine_id == machine_id
    assert machine.transfer_syntax == decode_ceiling.SYNTAXES[syntax]


@pytest.mark.parametrize(
    ("function", "photometric", "center", "width"),
    [
        pytest.param("LINEAR", "MONOCHROME2", 2000.0, 1500.0, id="linear-mono2"),
        pytest.param("LINEAR", "MONOCHROME1", 2000.0, 1500.0, id="linear-mono1-inverted"),
        pytest.param("SIGMOID", "MONOCHROME2", 2100.0, 1600.0, id="sigmoid-mono2"),
        pytest.param(None, "MONOCHROME2", 1800.0, 3000.0, id="absent-function-is-linear"),
    ],
)
def test_peer_window_follows_the_dicom_formulas(
    function: str | None, photometric: str, center: float, width: float
) -> None:
    stored = np.arange(0, 4096, 7, dtype=np.uint16).reshape(1, -1)  # (1, 586) ramp
    header = SimpleNamespace(
        RescaleSlope=1.0,
        RescaleIntercept=0.0,
        WindowCenter=[center, center + 100],  # only the first pair is used
        WindowWidth=[width, width * 1.3],
        VOILUTFunction=function,
        PhotometricInterpretation=photometric,
    )
    expected = apply_voi(stored, center, width, function or "LINEAR")
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    got = peer_baseline.window(stored, header)
    assert got.dtype == np.uint8 and got.shape == stored.shape
    assert np.abs(got.astype(float) - expected * 255).max() <= 1.0  # float32 and truncation


# --- decode-only benchmarks ----------------------------------------------------------------


def test_decode_ceiling_smoke_times_every_decoder_on_every_case(
    cache: Path, tmp_path: Path
) -> None:
    result = decode_ceiling.main(_cli(cache, tmp_path))
    _check_written(result, tmp_path)
    cases = [(s, z) for z in decode_ceiling.SMOKE_SIZES for s in decode_ceiling.SYNTAXES]
    decoders = decode_ceiling.decoder_names()
    assert len(result.table) == len(cases) * len(decoders)
    for row in result.table:
        if row["decoder"] == decode_ceiling.GDCM and row["status"] == "not installed":
            continue
        if row["decoder"] == FAST_LOSSLESS_DECODER and row["syntax"] != "jpeg-lossless-sv1":
            assert row["status"] == "not this syntax", row
            continue
        assert row["status"] == "ok", row  # decoders agree pixel for pixel
        assert _positive(row["median_ms"]) and row["min_ms"] <= row["median_ms"]
        assert row["repeats"] == 1
    for syntax, size in cases:
        ceiling = result.summary[f"ceiling {syntax} {size}"]
        assert ceiling["best_decoder"] in decoders
        assert _positive(ceiling["images_per_s"])
        cores = result.summary["cores"]
        assert math.isclose(ceiling["images_per_s"], cores / (ceiling["ms_per_image"] / 1e3))


def test_fast_decode_smoke_compares_both_modes_on_every_case(cache: Path, tmp_path: Path) -> None:
    result = fast_decode.main(_cli(cache, tmp_path))
    _check_written(result, tmp_path)
    assert len(result.table) == len(fast_decode.SMOKE_SIZES) * len(fast_decode.SMOKE_OUTPUTS)
    for row in result.table:
        assert row["reduction"] >= 1  # 1024 x 832 for 256 x 128: the fast path was taken
        assert _positive(row["exact_ms"]) and _positive(row["fast_ms"])
        assert math.isclose(row["speedup"], row["exact_ms"] / row["fast_ms"])
        assert row["psnr_db"] > 0 and 0 <= row["within_3"] <= 1
    (case,) = result.summary.values()
    assert isinstance(case["meets_bound"], bool)


def test_fast_decode_fidelity_against_brute_force() -> None:
    exact = np.array([[0, 10, 20], [30, 0, 250]], dtype=np.uint8)
    fast = np.array([[5, 13, 20], [20, 0, 255]], dtype=np.uint8)
    measured = fast_decode.fidelity(fast, exact)
    squares = [25, 9, 0, 100, 0, 25]
    assert math.isclose(measured["psnr_db"], 10 * math.log10(255**2 / (sum(squares) / 6)))
    assert measured["within_3"] == 2 / 4  # in-breast: 10, 20, 30, 250; within 3: 10, 20
    assert measured["max_diff"] == 10
    assert fast_decode.fidelity(exact, exact)["psnr_db"] == math.inf


def test_peer_baseline_writes_one_8_bit_1024x512_png_per_file(cache: Path, tmp_path: Path) -> None:
    raw = synth_set(cache, "realistic", SynthConfig(patients=2, seed=0, image_size="small"))
    files = dicom_files(raw)
    stats = peer_baseline.run(files, tmp_path / "png", processes=2)
    assert stats["images"] == stats["files"] == len(files) and stats["failed"] == 0
    pngs = sorted((tmp_path / "png").glob("*/*.png"))
    assert [(p.parent.name, p.stem) for p in pngs] == [(f.parent.name, f.stem) for f in files]
    image = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert image is not None
    assert image.shape == (1024, 512) and image.dtype == np.uint8 and image.max() > 0
    assert _positive(stats["images_per_s"])

    result = peer_baseline.main(_cli(cache, tmp_path / "results"))
    _check_written(result, tmp_path / "results")
    assert result.table[0]["images"] == len(files) and _positive(result.summary["images_per_s"])


def test_run_all_smoke_runs_the_chosen_benchmarks_and_gathers_them(
    cache: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "benchmarks.run_all", "--smoke", "--only", "decode_ceiling"]
    command += ["--results-dir", str(tmp_path), "--cache-dir", str(cache)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "decode_ceiling.json").is_file()
    gathered = (tmp_path / "results.md").read_text()
    assert "### decode_ceiling (smoke run" in gathered and "| dicomsdl |" in gathered


# --- through the real flows (Prefect server and Ray cluster from tests/conftest.py) --------


@pytest.fixture
def stack(prefect_server: str, ray_cluster: dict[str, object]) -> None:
    """Ray and Prefect are started by the session fixtures, never by the benchmarks."""


@pytest.mark.integration
def test_ingest_vs_ceiling_smoke(stack: None, cache: Path, tmp_path: Path) -> None:
    result = ingest_vs_ceiling.main(_cli(cache, tmp_path))
    _check_written(result, tmp_path)
    s, files = result.summary, result.params["files"]
    for key in (
        "ingest_images_per_s",
        "ceiling_images_per_s",
        "fraction_of_ceiling",
        "parallel_decode_images_per_s",
        "ingest_vs_parallel_decode",
    ):
        assert _positive(s[key]), key
    assert _positive(s["peer_images_per_s"]) and _positive(s["ingest_vs_peer"])
    assert _positive(s["startup_s"]) and _positive(s["decode_work_s"])
    assert math.isclose(
        s["fraction_of_ceiling"], s["ingest_images_per_s"] / s["ceiling_images_per_s"]
    )
    assert sum(s["syntax_mix"].values()) == files == sum(s["fastest_decoder_counts"].values())
    # ingest flow, its Ray decode task, the ceiling, decode only in parallel, the peer
    assert [row["images"] for row in result.table] == [files] * 5
    assert result.params["cores"] == 2  # the ray_cluster fixture's CPUs


@pytest.mark.integration
def test_scale_count_smoke(stack: None, cache: Path, tmp_path: Path) -> None:
    result = scale_count.main(_cli(cache, tmp_path, "--images", "20"))
    _check_written(result, tmp_path)
    s = result.summary
    raw = Path(result.params["raw"])
    assert s["files"] == s["manifest_rows"] == len(dicom_files(raw))
    assert s["prefect_task_runs"] == 3  # plan, decode, finalize: never one per file
    assert s["cores"] == 2 and s["shards"] == 1
    for key in ("wall_s", "decode_work_s", "overhead_ms_per_file", "driver_peak_rss_mib"):
        assert _positive(s[key]), key
    assert _positive(s["worker_peak_rss_mib_max"]) and s["worker_processes_sampled"] >= 1
    assert result.table[0]["role"] == "driver" and s["memory_samples"] >= 2


@pytest.mark.integration
def test_incremental_smoke(stack: None, cache: Path, tmp_path: Path) -> None:
    result = incremental.main(_cli(cache, tmp_path))
    _check_written(result, tmp_path)
    s = result.summary
    full, new, same = result.table
    assert full["decoded"] == s["full_run_files"] > 0 and full["already_done"] == 0
    assert new["decoded"] == s["new_files"] > 0 and new["already_done"] == full["decoded"]
    assert same["decoded"] == s["third_run_decoded"] == 0
    assert same["manifest_rows"] == full["decoded"] + new["decoded"]
    assert _positive(s["second_run_fraction"]) and _positive(s["third_run_s"])


@pytest.mark.integration
def test_train_input_smoke(stack: None, cache: Path, tmp_path: Path) -> None:
    result = train_input.main(_cli(cache, tmp_path, "--epochs", "2", "--max-steps", "2"))
    _check_written(result, tmp_path)
    s = result.summary
    assert [row["epoch"] for row in result.table] == [1, 2]
    # balanced batches of at most 4 (the smoke batch size), 2 steps per epoch
    assert all(row["steps"] == 2 and 2 <= row["images"] <= 8 for row in result.table)
    for key in (
        "real_first_epoch_images_per_s",
        "real_steady_images_per_s",
        "in_memory_images_per_s",
    ):
        assert _positive(s[key]), key
    for key in ("data_stall_first_epoch", "data_stall_steady"):
        assert math.isfinite(s[key]) and s[key] < 1, key
    assert _positive(s["build_dataset_s"]) and result.params["worker_cpus"] == 1


def test_drift_false_alarms_smoke_counts_every_night(tmp_path: Path) -> None:
    result = drift_false_alarms.main(["--smoke", "--results-dir", str(tmp_path)])
    saved = json.loads((tmp_path / f"{result.name}.json").read_text())
    assert saved["summary"]["nights"] == 5
    assert 0 <= saved["summary"]["nights_with_a_finding"] <= 5
    assert saved["summary"]["false_alarm_rate"] == saved["summary"]["nights_with_a_finding"] / 5


def _bright_square_part(patients: int, seed: int) -> model_quality.Part:
    """Two views per breast, two breasts per patient; a positive breast's views carry a
    bright square a small CNN finds in one epoch; the oracle is the square's mean."""
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for patient in range(patients):
        for side, positive in (("L", patient % 2), ("R", 0)):
            for _ in range(2):
                image = rng.integers(0, 60, size=(64, 32), dtype=np.uint8)
                if positive:
                    image[20:36, 8:24] = 220
                images.append(image)
                rows.append(
                    (
                        len(rows) + 1,
                        seed * 1000 + patient,
                        side,
                        positive,
                        float(image[20:36, 8:24].mean()),
                    )
                )
    frame = pd.DataFrame(rows, columns=["image_id", "patient_id", "laterality", "cancer", "oracle"])
    # what the aux recipe learns beside the label: BIRADS 2 on positives, a density, a gap
    frame["BIRADS"] = np.where(frame["cancer"] == 1, 2.0, np.where(frame.index % 3, 1.0, np.nan))
    frame["density"] = "B"
    frame["difficult_negative_case"] = False
    return model_quality.Part(np.stack(images), frame)


def test_model_quality_harness_learns_a_visible_lesion_and_scores_it_against_the_oracle(
    tmp_path: Path,
) -> None:
    from mammo.splits import Split

    parts = {
        Split.TRAIN: _bright_square_part(24, 1),
        Split.VAL: _bright_square_part(8, 2),
        Split.HOLDOUT: _bright_square_part(10, 3),
    }
    base = model_quality.TrainConfig(
        image_rows=64, image_cols=32, epochs=3, batch_size=8, amp=False
    )
    recipes = [r for r in model_quality.RECIPES if r.name in ("baseline", "no_augment", "aux")]
    result = model_quality.measure(parts, recipes, base, 0.9, {}, smoke=True)
    assert result.summary["oracle_auc"] == 1.0 and result.summary["test_breasts"] == 20
    assert len(result.table) == 3 * len(model_quality.SCORINGS)
    by = {(row["recipe"], row["scoring"]): row for row in result.table}
    learned = by[("no_augment", "mean")]
    assert learned["test_auc"] > 0.9, learned  # a visible square is found
    assert learned["ratio_to_oracle"] == learned["test_auc"]  # the oracle is perfect here
    assert by[("baseline", "mean")]["delta_vs_baseline"] == 0.0
    for row in result.table:
        assert 1 <= row["best_epoch"] <= row["epochs"] <= 3
        assert 0 <= row["pf1"] <= 1 and 0 <= row["f1_at_val_thr"] <= 1
        assert _positive(row["train_images_per_s"]) and _positive(row["s_per_epoch"])


@pytest.mark.integration
def test_model_quality_smoke(stack: None, cache: Path, tmp_path: Path) -> None:
    from mammo.oracle import oracle_auc
    from mammo.splits import SplitConfig, assign_splits

    result = model_quality.main(_cli(cache, tmp_path, "--recipes", "baseline", "oversample"))
    saved = _check_written(result, tmp_path)
    assert [row["recipe"] for row in result.table] == ["baseline"] * 4 + ["oversample"] * 4
    assert {row["scoring"] for row in result.table} == {"mean", "max", "tta", "ema"}
    # the ceiling, recomputed from the generator's oracle file and the same patient split
    raw = next((cache / "sets").glob("quality-realistic-*"))
    oracle = pd.read_csv(raw / "synthetic_oracle.csv")
    oracle = oracle[oracle["subset"] == "train"].reset_index(drop=True)
    split = SplitConfig(**saved["params"]["split"])
    test = oracle[assign_splits(oracle, split, "cancer") == "holdout"]
    expected = oracle_auc(test, "mean")
    assert result.summary["oracle_auc"] == pytest.approx(expected.auc)
    assert result.summary["test_breasts"] == expected.breasts
    images = saved["params"]
    assert images["train_images"] + images["val_images"] + images["test_images"] == len(oracle)
