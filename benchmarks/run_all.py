"""Run every benchmark with its documented defaults, each in a fresh Python process (so that
one's memory, threads or Ray cluster never shows in another's figures), then gather their
markdown into ``results.md`` beside the JSON files.

    python -m benchmarks.run_all                 # the real figures: run on a quiet machine
    python -m benchmarks.run_all --smoke         # seconds-long versions, measures nothing
    python -m benchmarks.run_all --only decode_ceiling peer_baseline
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import CACHE_DIR, REPO, RESULTS_DIR, SMOKE_RESULTS_DIR, Result

# Decode-only figures first, on a machine where nothing of the pipeline runs yet.
BENCHMARKS = (
    "decode_ceiling",
    "fast_decode",
    "peer_baseline",
    "ingest_vs_ceiling",
    "scale_count",
    "incremental",
    "train_input",
    "fanout",
    "drift_false_alarms",
    "model_quality",
)
SUMMARY_FILE = "results.md"


def run_one(name: str, smoke: bool, results_dir: Path, cache_dir: Path) -> int:
    """``python -m benchmarks.<name>`` in a child process; returns its exit status."""
    command = [sys.executable, "-m", f"benchmarks.{name}", "--results-dir", str(results_dir)]
    command += ["--cache-dir", str(cache_dir)] + (["--smoke"] if smoke else [])
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, cwd=REPO, check=False).returncode
    print(f"== {name}: exit {status} after {time.perf_counter() - started:.0f} s", flush=True)
    return status


def gather(names: Sequence[str], results_dir: Path, since: float) -> Path:
    """Concatenate the markdown of each benchmark's JSON result written after ``since``
    (a time.time()) into SUMMARY_FILE; an older JSON is a failed run's stale result."""
    parts = ["# Benchmark results", ""]
    for name in names:
        path = results_dir / f"{name}.json"
        if not path.is_file() or path.stat().st_mtime < since:
            parts += [f"### {name}", "", "no result from this run (it failed)", ""]
            continue
        result = Result(**json.loads(path.read_text()))
        parts.append(result.markdown())
    target = results_dir / SUMMARY_FILE
    target.write_text("\n".join(parts))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="the seconds-long versions")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args(argv)
    results_dir = args.results_dir or (SMOKE_RESULTS_DIR if args.smoke else RESULTS_DIR)
    since = time.time()
    failed = [
        name
        for name in args.only
        if run_one(name, args.smoke, results_dir.absolute(), args.cache_dir.absolute()) != 0
    ]
    print(f"wrote {gather(args.only, results_dir, since)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
