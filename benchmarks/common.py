"""What every benchmark shares: the machine description, the Result record and its outputs,
cached synthetic sets, and timed runs of the real ingest flow.

A Result is printed as a markdown table and written as JSON to
``benchmarks/results/<name>.json`` (smoke runs: ``.mammo/bench/smoke-results/``), always
with the machine it ran on, the parameters and the formula of every derived figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from mammo.contract import Subset, images_dir
from mammo.synth.generate import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
CACHE_DIR = REPO / ".mammo" / "bench"  # .mammo/ is git-ignored
SMOKE_RESULTS_DIR = CACHE_DIR / "smoke-results"
COMPLETE_MARKER = ".complete"
KEY_PACKAGES = (
    "numpy",
    "opencv-python-headless",
    "pydicom",
    "dicomsdl",
    "pylibjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-libjpeg",
    "imagecodecs",
    "pyarrow",
    "pandas",
    "ray",
    "prefect",
    "torch",
)


class BenchmarkError(RuntimeError):
    """A benchmark could not produce a trustworthy figure; the message says why."""


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """CPUs this process may run on (affinity), which can be fewer than the machine has."""
    return len(os.sched_getaffinity(0))


def _cgroup_cpu_limit() -> str | None:
    """The container's CPU quota from cgroup v2 ``cpu.max`` ("max" when unlimited)."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return quota if quota == "max" else f"{int(quota) / int(period):g} CPUs"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, Python, key package versions, commit and date of a run."""
    versions = {}
    for package in KEY_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cgroup_cpu_limit": _cgroup_cpu_limit(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git": _git_commit(),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Result:
    """One benchmark run: its table (one dict per row), headline figures and formulas."""

    name: str
    smoke: bool
    params: dict[str, Any]
    table: list[dict[str, Any]]
    summary: dict[str, Any]
    formulas: dict[str, str]
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine_info)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The table, then the summary, formulas and notes, as markdown."""
        m = self.machine
        lines = [
            f"### {self.name}"
            + (" (smoke run: sizes too small to mean anything)" if self.smoke else ""),
            "",
            f"{m['cpu_model']}, {m['usable_cores']} usable cores, {m['ram_gib']} GiB RAM, "
            f"Python {m['python']}, {m['date_utc']}, commit {m['git']}",
            "",
        ]
        if self.table:
            columns = list(dict.fromkeys(key for row in self.table for key in row))
            lines.append("| " + " | ".join(columns) + " |")
            lines.append("|" + "---|" * len(columns))
            for row in self.table:
                lines.append("| " + " | ".join(_cell(row.get(col, "")) for col in columns) + " |")
            lines.append("")
        lines += [f"- **{key}**: {_cell(value)}" for key, value in self.summary.items()]
        if self.formulas:
            lines += ["", "Formulas:"] + [f"- {k} = {v}" for k, v in self.formulas.items()]
        if self.notes:
            lines += ["", "Notes:"] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, results_dir: Path) -> Path:
        """Write ``<results_dir>/<name>.json`` (replacing a previous one) and return its path."""
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        os.replace(tmp, path)
        return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: --smoke, --results-dir, --cache-dir."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that it runs, measures nothing"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where <name>.json goes (default {RESULTS_DIR.relative_to(REPO)}, "
        f"smoke runs {SMOKE_RESULTS_DIR.relative_to(REPO)})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=CACHE_DIR,
        help=f"synthetic sets, generated once and reused (default {CACHE_DIR.relative_to(REPO)})",
    )
    return parser


def finish(result: Result, results_dir: Path | None) -> Result:
    """Print the markdown table and write the JSON; returns ``result``."""
    target = results_dir or (SMOKE_RESULTS_DIR if result.smoke else RESULTS_DIR)
    path = result.write(target)
    print(result.markdown())
    print(f"wrote {path}")
    return result


def prepare_environment() -> None:
    """Defaults for a benchmark process (the caller's environment wins)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def synth_set(cache_dir: Path, label: str, cfg: SynthConfig) -> Path:
    """An RSNA-layout synthetic set for ``cfg`` under ``cache_dir/sets``, generated once.

    A set is reused when its completion marker exists; a half-written one (interrupted
    generation) is deleted and generated again.
    """
    root = cache_dir / "sets" / f"{label}-p{cfg.patients}-s{cfg.seed}-{cfg.image_size}"
    marker = root / COMPLETE_MARKER
    if marker.is_file():
        return root
    if root.exists():
        shutil.rmtree(root)
    summary = generate(root, cfg)
    marker.write_text(
        json.dumps({"images": summary.images, "by_transfer_syntax": summary.by_transfer_syntax})
    )
    return root


def add_realistic_set_arguments(parser: argparse.ArgumentParser) -> None:
    """--patients, --image-size, --seed of the realistic set that the peer baseline and
    the ingest-vs-ceiling benchmark both read (the same defaults, so the same files)."""
    parser.add_argument("--patients", type=int, default=None, help="default 20 (smoke: 2)")
    parser.add_argument("--image-size", default=None, help='default "full" (smoke: "small")')
    parser.add_argument("--seed", type=int, default=0)


def realistic_set(args: argparse.Namespace) -> Path:
    """The realistic set of :func:`add_realistic_set_arguments`' arguments: the generator's
    mix of machines, each with its syntax and detector size, generated once into the cache."""
    cfg = SynthConfig(
        patients=args.patients or (2 if args.smoke else 20),
        seed=args.seed,
        image_size=args.image_size or ("small" if args.smoke else "full"),
    )
    return synth_set(args.cache_dir, "realistic", cfg)


def dicom_files(raw: Path, subset: Subset = Subset.TRAIN) -> list[Path]:
    """Every ``{subset}_images/*/*.dcm`` under ``raw``, sorted."""
    return sorted((raw / images_dir(subset)).glob("*/*.dcm"))


@dataclass(frozen=True)
class IngestRun:
    """One call of the ingest flow: its summary dict, wall time and Prefect flow run id."""

    summary: dict[str, Any]
    seconds: float
    flow_run_id: str


def run_ingest(raw: Path, out: Path, shard_size: int) -> IngestRun:
    """Call the real ingest flow (Prefect + Ray) once and time it, start to return."""
    from flows.ingest import ingest

    started = time.perf_counter()
    state = ingest(raw=str(raw), out=str(out), shard_size=shard_size, return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise BenchmarkError(f"ingest of {raw} ended {state.name}: {state.message}")
    summary: dict[str, Any] = state.result()
    return IngestRun(summary, seconds, str(state.state_details.flow_run_id))


def warm_up_ingest(cache_dir: Path, work_dir: Path) -> float:
    """Ingest a tiny 64x64 set, one image per shard and at least one shard per core, so that
    Prefect (a temporary server when no PREFECT_API_URL is set), Ray and a warm Ray worker
    per core start now; returns those start-up seconds."""
    patients = usable_cores() // 4 + 1  # at least 4 images each
    cfg = SynthConfig(patients=patients, seed=7, image_size="64x64", workers=1)
    raw = synth_set(cache_dir, "warm-up", cfg)
    return run_ingest(raw, work_dir / "warm-up-out", shard_size=1).seconds


def ray_cores() -> int:
    """CPUs of the connected Ray cluster: the ``cores`` of every ceiling and overhead formula."""
    import ray

    if not ray.is_initialized():
        raise BenchmarkError("Ray is not initialized: run the ingest flow first")
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return int(resources.get("CPU", 0))
