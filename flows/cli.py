"""The ``mammo`` command: one subcommand per flow, plus the local stack.

Imports are deferred to the subcommand that needs them, so ``mammo --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _preprocess_overrides(args: argparse.Namespace) -> dict[str, object] | None:
    overrides = {
        key: value
        for key, value in (
            ("out_rows", args.rows),
            ("out_cols", args.cols),
            ("bit_depth", args.bit_depth),
        )
        if value is not None
    }
    return overrides or None


def cmd_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.progress import Progress

    from mammo.synth.generate import SynthConfig, generate

    config = SynthConfig(
        patients=args.patients,
        seed=args.seed,
        positive_rate=args.positive_rate,
        image_size=args.image_size,
        with_test=args.with_test,
        workers=args.workers,
    )
    with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("writing DICOMs", total=None)
        summary = generate(
            Path(args.out),
            config,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    print(
        f"Wrote {summary.images} images of {summary.patients} patients "
        f"({summary.positive_images} positive) to {args.out} in {summary.elapsed_s:.1f} s"
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import ingest

    summary = ingest(
        raw=args.raw,
        out=args.out,
        subset=args.subset,
        shard_size=args.shard_size,
        max_patients=args.max_patients,
        preprocess=_preprocess_overrides(args),
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "decode"}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo",
        description="Nightly retraining of a screening-mammography cancer model: "
        "DICOM ingest, validation, Ray Train, MLflow registry.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic RSNA-layout data set")
    p.add_argument("out", help="directory to write train.csv and train_images/ to")
    p.add_argument("--patients", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--positive-rate", type=float, default=0.0206, help="positive breasts")
    p.add_argument("--image-size", default="small", help="small (256x208), full, or RxC")
    p.add_argument("--with-test", action="store_true", help="also write test.csv, test_images/")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("ingest", help="decode RAW's DICOMs into shards, PNGs and a manifest")
    p.add_argument(
        "--raw", required=True, help="local path or s3://bucket/prefix of the RSNA layout"
    )
    p.add_argument("--out", required=True, help="local path or s3://bucket/prefix for outputs")
    p.add_argument("--subset", choices=["train", "test"], default="train")
    p.add_argument("--shard-size", type=int, default=256, help="files per unit of work")
    p.add_argument("--max-patients", type=int, default=None, help="a small run: first N patients")
    p.add_argument("--rows", type=int, default=None, help="output rows (default 1024)")
    p.add_argument("--cols", type=int, default=None, help="output columns (default 512)")
    p.add_argument("--bit-depth", type=int, choices=[8, 16], default=None)
    p.set_defaults(handler=cmd_ingest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
