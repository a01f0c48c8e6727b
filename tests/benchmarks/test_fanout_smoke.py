"""The fan-out comparison benchmark: its pure pieces, and a smoke run of all three strategies
through real Prefect and Ray (the session fixtures). Never a timing assertion."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import fanout
from benchmarks.common import BenchmarkError, dicom_files

# --- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("round_index", "order"),
    [
        pytest.param(0, ["prefect_map", "ray_core", "ray_data"], id="first-round-in-table-order"),
        pytest.param(1, ["ray_core", "ray_data", "prefect_map"], id="second-round-starts-one-on"),
        pytest.param(2, ["ray_data", "prefect_map", "ray_core"], id="third-round-starts-last"),
        pytest.param(3, ["prefect_map", "ray_core", "ray_data"], id="fourth-round-wraps-around"),
    ],
)
def test_round_order_rotates_the_first_strategy(round_index: int, order: list[str]) -> None:
    assert fanout.round_order(round_index) == order


@pytest.mark.parametrize(
    ("fanout_s", "decode_work_s", "cores", "shards", "expected"),
    [
        pytest.param(10.0, 16.0, 2, 4, 0.5, id="two-cores-two-seconds-over-four-shards"),
        pytest.param(8.0, 16.0, 2, 4, 0.0, id="perfect-scaling-no-overhead"),
        pytest.param(3.0, 2.0, 1, 1, 1.0, id="one-core-one-shard"),
        pytest.param(7.0, 16.0, 2, 2, -0.5, id="faster-than-work-over-cores-is-negative"),
    ],
)
def test_overhead_per_shard_is_wall_beyond_work_over_cores(
    fanout_s: float, decode_work_s: float, cores: int, shards: int, expected: float
) -> None:
    got = fanout.overhead_per_shard(fanout_s, decode_work_s, cores, shards)
    assert math.isclose(got, expected)


@pytest.mark.parametrize(
    ("cores", "shards"),
    [pytest.param(2, 0, id="no-shards"), pytest.param(0, 3, id="no-cores")],
)
def test_overhead_per_shard_refuses_empty_denominators(cores: int, shards: int) -> None:
    with pytest.raises(BenchmarkError, match="shards and cores"):
        fanout.overhead_per_shard(1.0, 1.0, cores, shards)


def _run(strategy: str, image_ids: tuple[int, ...], quarantined: int = 0) -> fanout.StrategyRun:
    return fanout.StrategyRun(
        strategy=strategy,
        step={fanout.QUARANTINED: quarantined},
        flow_s=1.0,
        flow_run_id="0",
        task_runs=3,
        driver_start_rss=0,
        driver_peak_rss=0,
        worker_peak_rss=0,
        image_ids=image_ids,
    )


@pytest.mark.parametrize(
    ("runs", "error"),
    [
        pytest.param([_run("a", (1, 2, 3)), _run("b", (1, 2, 3))], None, id="same-manifests"),
        pytest.param(
            [_run("a", (1, 2, 3)), _run("b", (1, 2, 4))], "different manifests", id="other-ids"
        ),
        pytest.param([_run("a", (1, 2, 3)), _run("b", (1, 2))], "2 of 3 files", id="file-missing"),
        pytest.param([_run("a", (1, 2, 3), quarantined=1)], "1 quarantined", id="quarantined"),
    ],
)
def test_check_same_outputs(runs: list[fanout.StrategyRun], error: str | None) -> None:
    if error is None:
        fanout.check_same_outputs(runs, files=3)
    else:
        with pytest.raises(BenchmarkError, match=error):
            fanout.check_same_outputs(runs, files=3)


# --- through real Prefect and Ray (tests/conftest.py) --------------------------------------


@pytest.fixture
def stack(prefect_server: str, ray_cluster: dict[str, object]) -> None:
    """Ray and Prefect are started by the session fixtures, never by the benchmark."""


@pytest.mark.integration
def test_fanout_smoke_runs_three_strategies_on_the_same_files(stack: None, tmp_path: Path) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    cache.mkdir()
    argv = ["--smoke", "--cache-dir", str(cache), "--results-dir", str(results)]
    result = fanout.main([*argv, "--images", "20", "--shard-size", "4"])

    saved: dict[str, Any] = json.loads((results / "fanout.json").read_text())
    assert saved["name"] == "fanout" and saved["smoke"] is True
    assert saved["table"] == json.loads(json.dumps(result.table, default=str))
    assert saved["machine"]["usable_cores"] >= 1

    files = len(dicom_files(Path(result.params["raw"])))
    shards = math.ceil(files / 4)
    assert result.params["files"] == files >= 16 and result.params["cores"] == 2
    rows = {row["strategy"]: row for row in result.table}
    assert list(rows) == list(fanout.STRATEGIES)
    # one task run per shard, plus plan and finalize, only when Prefect maps over shards
    expected_runs = {"prefect_map": 2 + shards, "ray_core": 3, "ray_data": 3}
    assert {s: row["prefect_task_runs"] for s, row in rows.items()} == expected_runs
    for strategy, row in rows.items():
        assert row["shards"] == shards and row["images"] == files, strategy
        for key in ("fanout_s", "decode_work_s", "flow_s", "driver_peak_rss_mib"):
            assert math.isfinite(row[key]) and row[key] > 0, (strategy, key)
        assert row["worker_peak_rss_mib"] > 0, strategy
        assert row["flow_s"] > row["fanout_s"], strategy  # plan and finalize come on top
        assert math.isclose(row["images_per_s"], files / row["fanout_s"])
        overhead = (row["fanout_s"] - row["decode_work_s"] / 2) / shards * 1e3
        assert math.isclose(row["overhead_ms_per_shard"], overhead)
    assert result.summary["fanout_s_vs_product"]["ray_core"] == 1.0
    assert result.summary["fastest"] in fanout.STRATEGIES
    assert set(result.summary["startup_s"]) == set(fanout.STRATEGIES)
