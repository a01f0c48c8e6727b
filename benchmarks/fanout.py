"""Fan-out: three ways to spread ingest's shards over Ray, on the same files and the same work.

Every strategy runs as a Prefect flow of the same shape: the product's ``plan-ingest`` task,
then the fan-out being measured, then the product's ``finalize-ingest`` task (manifest and
quarantine). Each shard does the same work in all three: the body of
``tasks.ingest.decode_shard`` (``mammo.shards.process_shard``, the PNG writes, the two
Parquet commits, a ProgressCounter actor told of every image).

- ``prefect_map``: the flow runs on prefect-ray's RayTaskRunner and maps a Prefect task over
  the shards: one Prefect task run per shard, each a Ray task.
- ``ray_core``: the product. One Prefect task (``tasks.ingest.decode_shards``) submits one Ray
  task per shard and waits with ``ray.wait``.
- ``ray_data``: one Prefect task runs ``ray.data.from_items(<one row per shard>)
  .map(<one shard>, num_cpus=1)`` and consumes the result; each shard's items travel through
  the object store, as Ray task arguments do.

Order, in one process and one Ray cluster (``--cpus``, default 2, unless RAY_ADDRESS is set):
the set is written once under the cache directory (the same set ``scale_count`` uses for that
N); every strategy runs once, untimed, on a tiny 64x64 set with one image per shard (Prefect
and Ray start there, and each strategy's code is loaded into the workers); then each round
runs every strategy into its own fresh OUT, the starting strategy rotating from round to
round. All strategies must put the same images in their manifests.

    fan-out s          = seconds from the start of the decode step to its last shard's result,
                         seen from the flow (Prefect's own cost for the step included)
    images/s           = images decoded / fan-out s
    overhead per shard = (fan-out s - decode work / cores) / shards
        decode work    = summed decode_and_preprocess seconds of every file
    task runs          = task runs of the flow run, read back from the Prefect API
                         (prefect_map: 2 + shards; ray_core and ray_data: 3)

    python -m benchmarks.fanout --images 2000
    python -m benchmarks.fanout --images 200 --image-size full
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import ray
import ray.data
from prefect import Flow, flow, task, unmapped
from prefect.cache_policies import NONE
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from benchmarks.common import (
    BenchmarkError,
    Result,
    base_parser,
    dicom_files,
    finish,
    prepare_environment,
    ray_cores,
    synth_set,
    usable_cores,
)
from benchmarks.scale_count import IMAGES_PER_PATIENT, MIB, MemorySampler, count_task_runs
from mammo import contract as c
from mammo.synth.generate import SynthConfig
from tasks.cluster import ensure_ray
from tasks.ingest import (
    SHARD_KEY,
    DecodeReport,
    IngestPlan,
    ProgressCounter,
    ShardSummary,
    decode_shards,
    finalize_ingest,
    plan_ingest,
    run_decode_shard,
)
from tasks.settings import Settings
from tasks.storage import open_store, read_parquet

NAME = "fanout"
PREFECT_MAP, RAY_CORE, RAY_DATA = "prefect_map", "ray_core", "ray_data"
STRATEGIES = (PREFECT_MAP, RAY_CORE, RAY_DATA)
DESCRIPTIONS = {
    PREFECT_MAP: "Prefect .map over shards on RayTaskRunner (a task run per shard)",
    RAY_CORE: "one Prefect task submits a Ray task per shard, ray.wait (the product)",
    RAY_DATA: "one Prefect task runs ray.data.from_items(shards).map(shard, num_cpus=1)",
}
FANOUT_S, SHARDS, IMAGES, QUARANTINED, DECODE_S = (
    "fanout_s",
    "shards",
    "images",
    "quarantined",
    "decode_work_s",
)


# --- the per-shard work, the same in every strategy ----------------------------------------


def run_shard(
    raw: str,
    out: str,
    name: str,
    items: pd.DataFrame,
    preprocess: dict[str, object],
    progress: Any,
) -> ShardSummary:
    """One shard in the calling process: ``run_decode_shard`` (decode, PNGs, then the
    quarantine and shard Parquet commits; ``progress`` is told of every image)."""
    return run_decode_shard(raw, out, name, items, preprocess, progress)


def shard_inputs(plan: IngestPlan) -> dict[str, pd.DataFrame]:
    """The plan's items by shard name, read back as ``decode_shards`` reads them."""
    items = read_parquet(open_store(plan.out), f"{plan.work}/pending.parquet").to_pandas()
    return {
        str(name): frame.drop(columns=[SHARD_KEY]).reset_index(drop=True)
        for name, frame in items.groupby(SHARD_KEY, sort=True)
    }


def decode_report(summaries: Sequence[ShardSummary], seconds: float) -> DecodeReport:
    """ShardSummaries -> the product's DecodeReport, as finalize-ingest expects it."""
    return DecodeReport(
        shards=len(summaries),
        images=sum(s.images for s in summaries),
        quarantined=sum(s.quarantined for s in summaries),
        decode_seconds=sum(s.decode_seconds for s in summaries),
        wall_seconds=seconds,
        dashboard_url=None,
    )


def step_record(report: DecodeReport, seconds: float) -> dict[str, Any]:
    """What a strategy's flow returns about its decode step."""
    return {
        FANOUT_S: seconds,
        SHARDS: report.shards,
        IMAGES: report.images,
        QUARANTINED: report.quarantined,
        DECODE_S: report.decode_seconds,
    }


# --- (a) Prefect .map over shards on RayTaskRunner -----------------------------------------


# No cache: the inputs hold a DataFrame and an actor handle, and a shard's outputs are
# already idempotent through the commit protocol.
@task(name="decode-shard", cache_policy=NONE)
def decode_shard_task(
    raw: str,
    out: str,
    name: str,
    items: pd.DataFrame,
    preprocess: dict[str, object],
    progress: Any,
) -> ShardSummary:
    """One shard as one Prefect task run (on a Ray worker, through RayTaskRunner)."""
    return run_shard(raw, out, name, items, preprocess, progress)


@flow(name="fanout-prefect-map", task_runner=RayTaskRunner())
def prefect_map(raw: str, out: str, shard_size: int) -> dict[str, Any]:
    """Plan, one mapped Prefect task run per shard on RayTaskRunner, finalize."""
    plan = plan_ingest(raw, out, shard_size=shard_size)
    started = time.perf_counter()
    shards = shard_inputs(plan)
    counter = ProgressCounter.remote()  # type: ignore[attr-defined]
    with remote_options(num_cpus=1):  # as decode_shard's @ray.remote(num_cpus=1)
        futures = decode_shard_task.map(
            unmapped(plan.raw),
            unmapped(plan.out),
            list(shards),
            list(shards.values()),
            unmapped(plan.preprocess),
            unmapped(counter),
        )
        summaries = futures.result()
    seconds = time.perf_counter() - started
    ray.kill(counter)
    report = decode_report(summaries, seconds)
    finalize_ingest(plan, report)
    return step_record(report, seconds)


# --- (b) one Prefect task submits Ray core tasks: the product ------------------------------


@flow(name="fanout-ray-core")
def ray_core(raw: str, out: str, shard_size: int) -> dict[str, Any]:
    """The ingest flow's three tasks (flows.ingest), with its decode step timed."""
    plan = plan_ingest(raw, out, shard_size=shard_size)
    started = time.perf_counter()
    report = decode_shards(plan, Settings.from_env())  # the product's task, as is
    seconds = time.perf_counter() - started
    finalize_ingest(plan, report)
    return step_record(report, seconds)


# --- (c) one Prefect task runs a Ray Data job ----------------------------------------------


def ray_data_shard(row: dict[str, Any], **shared: Any) -> dict[str, Any]:
    """Ray Data map function: one row names one shard; its items come from the object store."""
    name = str(row["shard"])
    items = ray.get(shared["items"][name])
    summary = run_shard(
        shared["raw"], shared["out"], name, items, shared["preprocess"], shared["progress"]
    )
    return asdict(summary)


@task(name="decode-shards-ray-data")
def decode_with_ray_data(plan: IngestPlan) -> DecodeReport:
    """``from_items`` with a block per shard, ``map(num_cpus=1)``, consumed by ``take_all``."""
    started = time.perf_counter()
    shards = shard_inputs(plan)
    counter = ProgressCounter.remote()  # type: ignore[attr-defined]
    shared = {
        "raw": plan.raw,
        "out": plan.out,
        "preprocess": plan.preprocess,
        "progress": counter,
        "items": {name: ray.put(items) for name, items in shards.items()},
    }
    rows = [{"shard": name} for name in shards]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    done = dataset.map(ray_data_shard, fn_kwargs=shared, num_cpus=1).take_all()
    ray.kill(counter)
    return decode_report([ShardSummary(**row) for row in done], time.perf_counter() - started)


@flow(name="fanout-ray-data")
def ray_data(raw: str, out: str, shard_size: int) -> dict[str, Any]:
    """Plan, one Prefect task running a Ray Data job over the shards, finalize."""
    plan = plan_ingest(raw, out, shard_size=shard_size)
    started = time.perf_counter()
    report = decode_with_ray_data(plan)
    seconds = time.perf_counter() - started
    finalize_ingest(plan, report)
    return step_record(report, seconds)


FLOWS: dict[str, Flow[..., dict[str, Any]]] = {
    PREFECT_MAP: prefect_map,
    RAY_CORE: ray_core,
    RAY_DATA: ray_data,
}


# --- running and measuring ------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyRun:
    """One timed flow run of one strategy."""

    strategy: str
    step: dict[str, Any]  # step_record(): fan-out seconds, shards, images, quarantined, decode work
    flow_s: float  # the whole flow call: plan, fan-out, finalize
    flow_run_id: str
    task_runs: int
    driver_start_rss: int
    driver_peak_rss: int
    worker_peak_rss: int
    image_ids: tuple[int, ...]  # the manifest's, sorted


def run_strategy(
    strategy: str, raw: Path, out: Path, shard_size: int, interval: float
) -> StrategyRun:
    """One flow run of ``strategy`` from ``raw`` into a fresh ``out``, with memory sampled."""
    strategy_flow = FLOWS[strategy]
    driver_start = psutil.Process().memory_info().rss
    started = time.perf_counter()
    with MemorySampler(interval) as memory:
        state: Any = strategy_flow(
            raw=str(raw), out=str(out), shard_size=shard_size, return_state=True
        )
    flow_s = time.perf_counter() - started
    if not state.is_completed():
        raise BenchmarkError(f"{strategy} on {raw} ended {state.name}: {state.message}")
    flow_run_id = str(state.state_details.flow_run_id)
    manifest = pd.read_parquet(out / c.MANIFEST_FILE, columns=[c.IMAGE_ID])
    return StrategyRun(
        strategy=strategy,
        step=state.result(),
        flow_s=flow_s,
        flow_run_id=flow_run_id,
        task_runs=count_task_runs(flow_run_id),
        driver_start_rss=driver_start,
        driver_peak_rss=memory.driver_peak,
        worker_peak_rss=memory.worker_peak,
        image_ids=tuple(sorted(int(i) for i in manifest[c.IMAGE_ID])),
    )


def round_order(round_index: int) -> list[str]:
    """The strategies of one round, starting one further along each round."""
    k = round_index % len(STRATEGIES)
    return list(STRATEGIES[k:] + STRATEGIES[:k])


def overhead_per_shard(fanout_s: float, decode_work_s: float, cores: int, shards: int) -> float:
    """(fan-out s - decode work / cores) / shards, in seconds."""
    if shards < 1 or cores < 1:
        raise BenchmarkError(f"overhead needs shards and cores >= 1, got {shards}, {cores}")
    return (fanout_s - decode_work_s / cores) / shards


def _row(runs: list[StrategyRun], cores: int) -> dict[str, Any]:
    """One table row: the median run by fan-out seconds (the lower middle one for an even
    count) of a strategy, and every run's fan-out seconds."""
    times = [run.step[FANOUT_S] for run in runs]
    median = sorted(runs, key=lambda run: run.step[FANOUT_S])[(len(runs) - 1) // 2]
    step = median.step
    return {
        "strategy": median.strategy,
        "prefect_task_runs": median.task_runs,
        SHARDS: step[SHARDS],
        IMAGES: step[IMAGES],
        FANOUT_S: step[FANOUT_S],
        "images_per_s": step[IMAGES] / step[FANOUT_S],
        DECODE_S: step[DECODE_S],
        "overhead_ms_per_shard": 1e3
        * overhead_per_shard(step[FANOUT_S], step[DECODE_S], cores, step[SHARDS]),
        "flow_s": median.flow_s,
        "driver_peak_rss_mib": median.driver_peak_rss / MIB,
        "driver_rss_growth_mib": (median.driver_peak_rss - median.driver_start_rss) / MIB,
        "worker_peak_rss_mib": median.worker_peak_rss / MIB,
        "fanout_s_every_run": [round(t, 3) for t in times],
    }


def check_same_outputs(runs: list[StrategyRun], files: int) -> None:
    """Every run put every file, and the same images, in its manifest; nothing quarantined."""
    for run in runs:
        if run.step[QUARANTINED] or len(run.image_ids) != files:
            raise BenchmarkError(
                f"{run.strategy}: {len(run.image_ids)} of {files} files in the manifest, "
                f"{run.step[QUARANTINED]} quarantined"
            )
        if run.image_ids != runs[0].image_ids:
            raise BenchmarkError(f"{run.strategy} and {runs[0].strategy} made different manifests")


def warm_up(cache_dir: Path, work: Path, interval: float) -> dict[str, float]:
    """Each strategy once on a tiny 64x64 set, a shard per image, at least one per core;
    returns each one's seconds (start-up, never in the figures)."""
    cfg = SynthConfig(patients=usable_cores() // 4 + 1, seed=7, image_size="64x64", workers=1)
    raw = synth_set(cache_dir, "warm-up", cfg)
    seconds = {}
    for strategy in STRATEGIES:
        run = run_strategy(strategy, raw, work / f"warm-up-{strategy}", 1, interval)
        seconds[strategy] = run.flow_s
    return seconds


def measure(
    raw: Path, cache_dir: Path, shard_size: int, repeats: int, interval: float, smoke: bool
) -> Result:
    files = len(dicom_files(raw))
    runs: dict[str, list[StrategyRun]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        startup = warm_up(cache_dir, work, interval)
        for round_index in range(repeats):
            for strategy in round_order(round_index):
                out = work / f"{strategy}-{round_index}"
                runs[strategy].append(run_strategy(strategy, raw, out, shard_size, interval))
                shutil.rmtree(out)  # full-size PNGs add up; the manifest is already read
            check_same_outputs([r[-1] for r in runs.values()], files)
    cores = ray_cores()
    table = [_row(runs[s], cores) for s in STRATEGIES]
    by_strategy = {row["strategy"]: row for row in table}
    fastest = min(table, key=lambda row: row[FANOUT_S])["strategy"]
    return Result(
        name=NAME,
        smoke=smoke,
        params={
            "raw": str(raw),
            "files": files,
            "shard_size": shard_size,
            "repeats": repeats,
            "cores": cores,
            "sample_interval_s": interval,
            "strategies": DESCRIPTIONS,
        },
        table=table,
        summary={
            "fastest": fastest,
            "fanout_s_vs_product": {
                s: by_strategy[s][FANOUT_S] / by_strategy[RAY_CORE][FANOUT_S] for s in STRATEGIES
            },
            "startup_s": startup,
        },
        formulas={
            FANOUT_S: "seconds from the start of the decode step to its last shard's result, "
            "timed in the flow around the step (Prefect's cost for the step included); "
            "the median run over repeats (the lower middle one for an even count)",
            "images_per_s": f"{IMAGES} / {FANOUT_S}",
            "overhead_ms_per_shard": f"({FANOUT_S} - {DECODE_S} / cores) / {SHARDS} * 1000",
            DECODE_S: "sum over files of decode_and_preprocess seconds, the same work in "
            "every strategy",
            "prefect_task_runs": "task runs of the flow run read from the Prefect API "
            f"(expect 2 + shards for {PREFECT_MAP}, 3 otherwise)",
            "driver_rss_growth_mib": "peak RSS of this process during the flow run minus its "
            f"RSS at the start of the run (samples every {interval} s)",
            "fanout_s_vs_product": f"{FANOUT_S} / {FANOUT_S} of {RAY_CORE}",
        },
        notes=[
            "Same files, shard size, Ray cluster and per-shard work (the body of "
            "tasks.ingest.decode_shard) in every strategy; each writes its own OUT.",
            "driver_peak_rss_mib also holds what earlier runs in this process left; compare "
            "driver_rss_growth_mib between strategies.",
        ],
    )


@contextmanager
def prefect_api() -> Iterator[None]:
    """A Prefect API for this process and for the Ray workers that run prefect_map's tasks.

    Prefect's own ephemeral mode would start a private server in each Ray worker; with no
    PREFECT_API_URL, start one temporary server here and point the settings at it (the
    RayTaskRunner passes the settings on to its tasks).
    """
    if PREFECT_API_URL.value():
        yield
        return
    server = SubprocessASGIServer()
    server.start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        server.stop()


def start_ray(cpus: int) -> bool:
    """Join RAY_ADDRESS or start a local cluster of ``cpus`` CPUs (the other settings as the
    flows' own); a Ray already connected in this process is kept. True if this call
    connected."""
    if ray.is_initialized():
        return False
    ensure_ray(replace(Settings.from_env(), ray_num_cpus=cpus))
    return True


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Prefect map on RayTaskRunner vs one task driving Ray core or Data.")
    parser.add_argument("--images", type=int, default=None, help="N (default 2000; smoke 20)")
    parser.add_argument("--image-size", default="small", help='"small" (256x208), "full" or "RxC"')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--shard-size", type=int, default=None, help="default 256 (the flow's); smoke 4"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds (median reported)")
    parser.add_argument(
        "--cpus",
        type=int,
        default=2,
        help="CPUs of the local Ray cluster (unused with RAY_ADDRESS)",
    )
    parser.add_argument("--interval", type=float, default=0.2, help="memory sampling, seconds")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    prepare_environment()
    images = args.images or (20 if args.smoke else 2000)
    shard_size = args.shard_size or (4 if args.smoke else 256)
    patients = max(1, round(images / IMAGES_PER_PATIENT))
    cfg = SynthConfig(patients=patients, seed=args.seed, image_size=args.image_size)
    raw = synth_set(args.cache_dir, "scale", cfg)
    with prefect_api():
        connected = start_ray(args.cpus)
        try:
            result = measure(
                raw, args.cache_dir, shard_size, args.repeats, args.interval, args.smoke
            )
        finally:
            if connected:
                ray.shutdown()  # before a temporary Prefect server stops: workers log to it
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
