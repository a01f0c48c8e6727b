"""Incremental ingest: after a full run on N files, how long do the nightly re-runs take?

Order, in one process, on a private copy of the cached set:
0. start-up run on a tiny set (Prefect and Ray start; reported apart);
1. full run: every file is new;
2. 1% new files are added (``--new-fraction``): new patients from another seed, their rows
   appended to train.csv and their folders copied under train_images/; run again;
3. nothing changes; run a third time.

    second run fraction = run 2 seconds / run 1 seconds     (target <= 0.05)
    third run           = its seconds, and files decoded     (target: 0 decoded)

    python -m benchmarks.incremental --images 5000
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import (
    BenchmarkError,
    IngestRun,
    Result,
    base_parser,
    finish,
    prepare_environment,
    run_ingest,
    synth_set,
    warm_up_ingest,
)
from mammo.contract import IMAGE_ID, PATIENT_ID, Subset, csv_name, images_dir
from mammo.synth.generate import SynthConfig

NAME = "incremental"
IMAGES_PER_PATIENT = 4.6
NEW_SEED_OFFSET = 1_000  # the new patients come from seed + this


def add_new_files(raw: Path, extra: Path) -> int:
    """Append ``extra``'s train.csv lines to ``raw``'s (existing lines stay byte for byte, as
    in a real delivery) and copy its patient folders in; returns the number of rows added.
    Refuses a different header or ids already present in ``raw``."""
    csv_path, extra_csv = raw / csv_name(Subset.TRAIN), extra / csv_name(Subset.TRAIN)
    rows, new_rows = pd.read_csv(csv_path), pd.read_csv(extra_csv)
    if list(rows.columns) != list(new_rows.columns):
        raise BenchmarkError(f"{extra_csv} has other columns than {csv_path}")
    for column in (PATIENT_ID, IMAGE_ID):
        clash = set(rows[column]) & set(new_rows[column])
        if clash:
            raise BenchmarkError(f"the new set reuses {len(clash)} {column}s; pick another seed")
    text = csv_path.read_text()
    new_lines = extra_csv.read_text().splitlines(keepends=True)[1:]  # without the header
    csv_path.write_text(text + ("" if text.endswith("\n") else "\n") + "".join(new_lines))
    for folder in (extra / images_dir(Subset.TRAIN)).iterdir():
        shutil.copytree(folder, raw / images_dir(Subset.TRAIN) / folder.name)
    return len(new_rows)


def _row(label: str, run: IngestRun, first: IngestRun) -> dict[str, Any]:
    return {
        "run": label,
        "seconds": run.seconds,
        "fraction_of_full_run": run.seconds / first.seconds,
        "decoded": run.summary["decoded_this_run"],
        "quarantined": run.summary["quarantined_this_run"],
        "already_done": run.summary["already_done"],
        "manifest_rows": run.summary["manifest_rows"],
    }


def measure(base: Path, extra: Path, cache_dir: Path, shard_size: int, smoke: bool) -> Result:
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        raw = work / "raw"
        shutil.copytree(base, raw)
        startup = warm_up_ingest(cache_dir, work)
        full = run_ingest(raw, work / "out", shard_size)
        added = add_new_files(raw, extra)
        new = run_ingest(raw, work / "out", shard_size)
        same = run_ingest(raw, work / "out", shard_size)
    if new.summary["decoded_this_run"] + new.summary["quarantined_this_run"] != added:
        raise BenchmarkError(
            f"the second run decoded {new.summary['decoded_this_run']}, not {added}"
        )
    table = [
        _row("1 full", full, full),
        _row("2 +new files", new, full),
        _row("3 no change", same, full),
    ]
    return Result(
        name=NAME,
        smoke=smoke,
        params={"base": str(base), "extra": str(extra), "shard_size": shard_size},
        table=table,
        summary={
            "full_run_files": full.summary["decoded_this_run"]
            + full.summary["quarantined_this_run"],
            "new_files": added,
            "second_run_fraction": new.seconds / full.seconds,
            "third_run_s": same.seconds,
            "third_run_decoded": same.summary["decoded_this_run"],
            "startup_s": startup,
        },
        formulas={
            "second_run_fraction": "seconds of run 2 (1% new files) / seconds of run 1 "
            "(target <= 0.05)",
            "third_run_decoded": "decoded_this_run of run 3, nothing changed (target 0)",
        },
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Re-run time after adding 1% new files, and with no change.")
    parser.add_argument("--images", type=int, default=None, help="N (default 5000; smoke 40)")
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--image-size", default="small", help='"small" (256x208) or "RxC"')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=256, help="the flow's default")
    args = parser.parse_args(argv)
    prepare_environment()
    images = args.images or (40 if args.smoke else 5000)
    patients = max(1, round(images / IMAGES_PER_PATIENT))
    new_patients = max(1, math.ceil(patients * args.new_fraction))
    base = synth_set(
        args.cache_dir,
        "scale",
        SynthConfig(patients=patients, seed=args.seed, image_size=args.image_size),
    )
    extra = synth_set(
        args.cache_dir,
        "new",
        SynthConfig(
            patients=new_patients,
            seed=args.seed + NEW_SEED_OFFSET,
            image_size=args.image_size,
        ),
    )
    result = measure(base, extra, args.cache_dir, args.shard_size, args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
