"""Scale in file count: ingest N small synthetic DICOMs end to end and measure what the
orchestration costs per file, how many Prefect task runs it creates and how much memory
the driver and the Ray workers reach.

The set has round(N / 4.6) patients (4.6 images per patient, as in the RSNA train.csv), so
``--images 54706`` gives an RSNA-sized CSV; it is generated once into the cache directory.
A start-up run on a tiny set comes first (Prefect and Ray start there, reported apart).
During the timed run a background thread samples, every ``--interval`` seconds, the RSS of
this process (the driver) and of its descendants whose command line holds "ray::" or
"default_worker.py" (the Ray workers of a cluster this process started; a cluster reached
through RAY_ADDRESS is not sampled).

    overhead per file = (wall - decode work / cores) / N
        wall        = seconds of the flow call
        decode work = summed decode_and_preprocess seconds of every file (decode.decode_seconds)
        cores       = CPUs of the Ray cluster
    Prefect task runs = task runs of the flow run, read back from the Prefect API (expect 3)

    python -m benchmarks.scale_count --images 5000
    python -m benchmarks.scale_count --images 54706
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

import psutil

from benchmarks.common import (
    BenchmarkError,
    Result,
    base_parser,
    finish,
    prepare_environment,
    ray_cores,
    run_ingest,
    synth_set,
    warm_up_ingest,
)
from mammo.synth.generate import SynthConfig

NAME = "scale_count"
IMAGES_PER_PATIENT = 4.6  # 54,706 images / 11,913 patients in the RSNA train.csv
WORKER_MARKERS = ("ray::", "default_worker.py")
RAY_DAEMONS = ("raylet", "gcs_server")
AGENT_SUFFIX = "Agent"  # ray::DashboardAgent, ray::RuntimeEnvAgent: per-node daemons
MIB = 2**20


class MemorySampler:
    """Peak RSS of this process and of each Ray worker process below it, sampled in a thread."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples = 0
        self.driver_peak = 0
        self.workers: dict[int, tuple[str, int]] = {}  # pid -> (title at its peak, peak RSS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # one last look after the run

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        me = psutil.Process()
        self.driver_peak = max(self.driver_peak, me.memory_info().rss)
        for child in me.children(recursive=True):
            try:
                if child.name() in RAY_DAEMONS:
                    continue  # the raylet's own command line names default_worker.py
                title = " ".join(child.cmdline()).strip()
                if not any(marker in title for marker in WORKER_MARKERS):
                    continue
                rss = child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if rss > self.workers.get(child.pid, ("", 0))[1]:
                self.workers[child.pid] = (title[:60].strip(), rss)
        self.samples += 1

    @property
    def worker_peak(self) -> int:
        """The largest peak over worker processes (the node's agents excluded)."""
        return max((rss for title, rss in self.workers.values() if not is_agent(title)), default=0)


def is_agent(title: str) -> bool:
    return title.startswith("ray::") and title.endswith(AGENT_SUFFIX)


def count_task_runs(flow_run_id: str, timeout: float = 60.0) -> int:
    """Task runs of one flow run, read back from the Prefect API.

    The server records task runs from the events the flow emits, shortly after they happen:
    poll until every task run is in a final state and two reads agree.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    deadline = time.monotonic() + timeout
    previous = -1
    with get_client(sync_client=True) as client:
        while True:
            runs: list[Any] = []
            while True:  # page through: a regression could create one task run per file
                page = client.read_task_runs(
                    flow_run_filter=flow_filter, limit=200, offset=len(runs)
                )
                runs += page
                if len(page) < 200:
                    break
            final = all(run.state is not None and run.state.is_final() for run in runs)
            if runs and final and len(runs) == previous:
                return len(runs)
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"flow run {flow_run_id}: {len(runs)} task runs, "
                    f"not all final after {timeout} s"
                )
            previous = len(runs)
            time.sleep(0.5)


def measure(raw: Path, cache_dir: Path, shard_size: int, interval: float, smoke: bool) -> Result:
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        startup = warm_up_ingest(cache_dir, work)
        with MemorySampler(interval) as memory:
            run = run_ingest(raw, work / "out", shard_size)
        task_runs = count_task_runs(run.flow_run_id)
    cores = ray_cores()
    decode: dict[str, Any] = run.summary["decode"]
    files = int(decode["images"]) + int(decode["quarantined"])
    if files == 0:
        raise BenchmarkError(f"the ingest of {raw} decoded nothing")
    overhead = (run.seconds - decode["decode_seconds"] / cores) / files
    table = [
        {
            "role": "driver",
            "process": "this process",
            "pid": psutil.Process().pid,
            "peak_rss_mib": memory.driver_peak / MIB,
        }
    ]
    table += [
        {
            "role": "node agent" if is_agent(title) else "worker",
            "process": title,
            "pid": pid,
            "peak_rss_mib": rss / MIB,
        }
        for pid, (title, rss) in sorted(memory.workers.items())
    ]
    return Result(
        name=NAME,
        smoke=smoke,
        params={"raw": str(raw), "shard_size": shard_size, "sample_interval_s": interval},
        table=table,
        summary={
            "files": files,
            "manifest_rows": run.summary["manifest_rows"],
            "shards": run.summary["shards"],
            "cores": cores,
            "wall_s": run.seconds,
            "decode_work_s": decode["decode_seconds"],
            "decode_task_wall_s": decode["wall_seconds"],
            "overhead_ms_per_file": overhead * 1e3,
            "prefect_task_runs": task_runs,
            "driver_peak_rss_mib": memory.driver_peak / MIB,
            "worker_peak_rss_mib_max": memory.worker_peak / MIB,
            "worker_processes_sampled": sum(not is_agent(t) for t, _ in memory.workers.values()),
            "memory_samples": memory.samples,
            "startup_s": startup,
        },
        formulas={
            "overhead_ms_per_file": "(wall_s - decode_work_s / cores) / files * 1000 "
            "(target <= 2 ms)",
            "decode_work_s": "sum over files of decode_and_preprocess seconds "
            "(decode.decode_seconds)",
            "prefect_task_runs": "task runs of this flow run read from the Prefect API (expect 3)",
            "peak_rss": f"max RSS over samples every {interval} s; workers = descendants whose "
            f"command line holds {' or '.join(WORKER_MARKERS)}, except the raylet and the "
            "node's agents (ray::*Agent, listed but not in the worker maximum)",
        },
        notes=["Memory is flat when the peaks at 5,000 and 54,706 files are about equal."],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Orchestration overhead, task runs and memory at N files.")
    parser.add_argument("--images", type=int, default=None, help="N (default 5000; smoke 20)")
    parser.add_argument("--image-size", default="small", help='"small" (256x208) or "RxC"')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=256, help="the flow's default")
    parser.add_argument("--interval", type=float, default=0.2, help="memory sampling, seconds")
    args = parser.parse_args(argv)
    prepare_environment()
    images = args.images or (20 if args.smoke else 5000)
    patients = max(1, round(images / IMAGES_PER_PATIENT))
    cfg = SynthConfig(patients=patients, seed=args.seed, image_size=args.image_size)
    raw = synth_set(args.cache_dir, "scale", cfg)
    result = measure(raw, args.cache_dir, args.shard_size, args.interval, args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
