"""The ``mammo`` command: one subcommand per flow, plus the demo and the local stack.

Imports are deferred to the subcommand that needs them, so ``mammo --help`` is instant.
Known failures (bad input, failed validation, storage or registry errors) print one clear
message and exit with status 1; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Handler = Callable[[argparse.Namespace], int]
# mammo.datasets' layouts, named here so that --help need not import the dataset layer
LAYOUTS = ("rsna", "cbis-ddsm", "vindr", "mias", "inbreast", "cmmd")


def _preprocess_overrides(args: argparse.Namespace) -> dict[str, object] | None:
    pairs = (
        ("out_rows", args.rows),
        ("out_cols", args.cols),
        ("bit_depth", args.bit_depth),
        ("decode", args.decode),
    )
    overrides = {key: value for key, value in pairs if value is not None}
    return overrides or None


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = {
        "model": args.model,
        "pretrained": args.pretrained and str(Path(args.pretrained).resolve()),
        "target": args.target,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_rows": args.image_rows,
        "image_cols": args.image_cols,
        "num_workers": args.workers,
        "lr": args.lr,
        "sampler": args.sampler,
        "seed": args.seed,
        "use_gpu": args.use_gpu,
        "fuse_metadata": args.fuse_metadata or None,
    }
    return {key: value for key, value in pairs.items() if value is not None}


def _split_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    pairs = {
        "holdout_fraction": args.holdout_fraction,
        "val_fraction": args.val_fraction,
        "seed": args.split_seed,
    }
    return {key: value for key, value in pairs.items() if value is not None} or None


def _validation_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    band = args.positive_rate_band
    return {"positive_rate_band": tuple(band)} if band else None


def check_settings(args: argparse.Namespace) -> None:
    """The configuration file and the flags, checked before any flow starts: a wrong key or
    value is one line naming it (tasks.config.resolve)."""
    from tasks.storage import check_uri

    for name in ("raw", "out", "data", "work"):
        if isinstance(getattr(args, name, None), str) and args.command != "synth":
            check_uri(getattr(args, name))
    if getattr(args, "config", None) is None and not _has_settings(args):
        return
    from tasks.config import resolve

    sections: dict[str, dict[str, Any] | None] = {}
    # RunConfig.merged drops the flags that were not given (None)
    if hasattr(args, "rows"):
        sections["ingest"] = {"shard_size": args.shard_size, "max_patients": args.max_patients}
        sections["preprocess"] = _preprocess_overrides(args)
    if hasattr(args, "epochs"):
        sections["train"] = _train_overrides(args) or None
    if hasattr(args, "holdout_fraction"):
        sections["split"] = _split_overrides(args)
    if hasattr(args, "positive_rate_band"):
        sections["validation"] = _validation_overrides(args)
    if hasattr(args, "trials"):
        sections["tune"] = {"trials": args.trials}
    if hasattr(args, "margin") and not getattr(args, "rollback", False):
        sections["promotion"] = {
            "protocol": args.protocol,
            "metric": args.metric,
            "margin": args.margin,
        }
    resolve(getattr(args, "config", None), sections)


def _has_settings(args: argparse.Namespace) -> bool:
    return any(hasattr(args, name) for name in ("rows", "epochs", "positive_rate_band", "margin"))


def cmd_synth(args: argparse.Namespace) -> int:
    if args.layout != "rsna":
        return _synth_layout(args)
    from rich.progress import Progress

    from mammo.contract import SYNTHETIC_ORACLE
    from mammo.synth.generate import SynthConfig, generate

    config = SynthConfig(
        patients=args.patients,
        seed=args.seed,
        positive_rate=args.positive_rate,
        image_size=args.image_size,
        with_test=args.with_test,
        workers=args.workers,
        difficulty=args.difficulty,
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
    if summary.oracle_auc is not None:
        print(
            f"Oracle (knows each lesion): breast-level AUC {summary.oracle_auc:.3f} "
            f"({config.difficulty} lesions; per image in {SYNTHETIC_ORACLE})"
        )
    return 0


def _synth_layout(args: argparse.Namespace) -> int:
    """A small synthetic copy of another dataset's layout, with the traps of the real one."""
    from mammo.datasets.synth import write_layout

    planted = write_layout(args.layout, Path(args.out), args.seed)
    print(
        f"Wrote a synthetic {args.layout} copy to {args.out}: {len(planted.images)} images, "
        f"{len(planted.findings)} findings, {len(planted.bad)} planted bad inputs "
        f"(see `mammo catalog --raw {args.out} --out OUT`)"
    )
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from tasks.catalog import catalog, describe

    print(describe(catalog(args.raw, args.out, args.dataset)))
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
        config=args.config,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "decode"}, indent=2))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from flows.validate import validate

    result = validate(
        raw=args.raw, data=args.data, validation=_validation_overrides(args), config=args.config
    )
    print(json.dumps(result, indent=2))
    print(f"Reports: {args.data}/validation/")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from flows.drift import drift

    if args.resolve:
        from tasks.monitor import resolve_finding
        from tasks.settings import default_out
        from tasks.storage import absolute_uri

        data = absolute_uri(args.data or default_out())
        done = resolve_finding(data, args.resolve, args.reason)
        print(f"Resolved {args.resolve} ({done['at']}): {done['reason']}")
        return 0

    report = drift(data=args.data, config=args.config)
    print(
        f"{report['current_images']} new image(s) against "
        + (f"{report['model']} v{report['version']}" if report["version"] else "no reference")
    )
    for note in report["notes"]:
        print(f"  note: {note}")
    for finding in report["findings"]:
        print(f"  {finding['severity']:8} {finding['detail']}")
    if not report["findings"]:
        print("  no drift found")
    print(f"Report: {report['report']}")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from mammo import contract as c
    from mammo.history import side_by_side
    from tasks.history import read_nights
    from tasks.settings import default_out
    from tasks.storage import absolute_uri, join_uri, open_store

    out = absolute_uri(args.out or default_out())
    print(f"The last nights of {out}:\n")
    nights = read_nights(out, args.last)
    print(side_by_side(nights))
    for night in [n for n in nights if n.data_docs][-1:]:
        print(f"\nLatest Great Expectations Data Docs: {night.data_docs}")
    store = open_store(out)
    reports = sorted(f.relpath for f in store.list_files(c.DRIFT_REPORTS_DIR))
    latest = [name for name in reports if name.endswith(".md")][-1:]
    for name in latest:
        print(f"\nLatest drift report: {join_uri(store.uri, name)}")
    return 0


def cmd_eda(args: argparse.Namespace) -> int:
    from mammo import contract as c
    from mammo.eda import metadata_report
    from mammo.inventory import read_csv_table
    from tasks.storage import open_store

    name = c.csv_name(c.Subset.TRAIN)
    report = metadata_report(
        read_csv_table(open_store(args.raw).read_bytes(name), name), Path(args.out)
    )
    print(f"Wrote {report.markdown} and {len(report.plots)} plots")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flows.train import train

    result = train(
        data=args.data,
        train_config=_train_overrides(args) or None,
        split=_split_overrides(args),
        register_challenger=not args.no_register,
        config=args.config,
    )
    _print_training(result)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from flows.tune import tune

    result = tune(
        data=args.data,
        trials=args.trials,
        train_config=_train_overrides(args) or None,
        split=_split_overrides(args),
        config=args.config,
        out_config=args.out_config,
    )
    print(f"\nTrials ({result['metric']}; * the best):\n{result['table']}\n")
    _line("best config", result["out_config"])
    _line("MLflow parent run", result["parent_run_id"])
    _line("use it", f"mammo run --raw RAW --config {result['out_config']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.nightly import nightly

    result = nightly(
        raw=args.raw,
        out=args.out,
        max_patients=args.max_patients,
        shard_size=args.shard_size,
        preprocess=_preprocess_overrides(args),
        train_config=_train_overrides(args) or None,
        split=_split_overrides(args),
        validation=_validation_overrides(args),
        protocol=args.protocol,
        metric=args.metric,
        margin=args.margin,
        config=args.config,
    )
    _print_pipeline(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthesize a small enriched set (once) and run the nightly pipeline on it."""
    from flows.demo import run_demo
    from tasks.settings import Settings

    root = Path(args.dir) if args.dir else Settings.from_env().home / "demo"
    _print_pipeline(run_demo(root, args.patients))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    if args.history:
        from tasks.registry import history
        from tasks.settings import Settings

        _print_history(history(Settings.from_env()))
        return 0
    from flows.promote import promote

    result = promote(
        data=args.data or "",
        protocol=args.protocol,
        metric=args.metric,
        margin=args.margin,
        rollback=args.rollback,
        reason=args.reason,
        config=args.config,
    )
    _print_decision(result)
    return 0


def _print_decision(result: dict[str, Any]) -> None:
    """The decision as a person reads it: outcome, reason, each rule, where the card is."""
    print(f"\nPromotion: {result['decision']}")
    print(f"  {result.get('reason', '')}")
    if "protocol" in result:
        holdout = result["holdout"]
        print(
            f"  protocol {result['protocol']} (hash {result['protocol_hash'][:16]}); holdout "
            f"{holdout['n_breasts']} breasts, {holdout['n_positive']} positive, "
            f"{holdout['n_patients']} patients"
        )
    for rule in result.get("rules", []):
        mark = "pass" if rule["passed"] else "FAIL"
        print(f"  {mark:<4}  {rule['name']:<24} {rule['observed']}")
        if rule["required"]:
            print(f"        {'':<24} needs {rule['required']}")
    for key in ("champion", "replaced", "model_card", "model_card_html", "decision_file"):
        if result.get(key) is not None:
            print(f"  {key:<16} {result[key]}")


def _print_history(rows: list[dict[str, str]]) -> None:
    if not rows:
        print("No registered version yet.")
        return
    print(f"{'version':>7}  {'aliases':<20} {'created':<17} {'validation':<10} decision")
    for row in rows:
        withdrawn = "  [rolled back]" if row["rolled_back"] else ""
        print(
            f"{row['version']:>7}  {row['aliases'] or '-':<20} {row['created']:<17} "
            f"{row['validation'] or '-':<10} {row['decision']}{withdrawn}"
        )
        if row["reason"]:
            print(f"{'':>9}{row['reason']}")


def cmd_compact(args: argparse.Namespace) -> int:
    from flows.compact import compact

    done = compact(out=args.out or "")
    print(
        f"Compacted {args.out or 'the default OUT'}: {done['rows_removed']} superseded rows "
        f"removed, {done['shards_rewritten']} of {done['shards']} shards rewritten"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from flows.predict import predict

    result = predict(
        raw=args.raw, model=args.model, out=args.out, work=args.work, binarize=args.binarize
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.stack import StackConfig, up
    from tasks.automations import ensure_automations

    info = up(StackConfig.from_env())
    print(info.describe())
    with temporary_settings(updates={PREFECT_API_URL: info.env["PREFECT_API_URL"]}):
        lines = ensure_automations(webhook_url=os.environ.get("MAMMO_DRIFT_WEBHOOK") or None)
    print("\nAutomations:\n" + "\n".join(f"  {line}" for line in lines))
    return 0


def cmd_automations(args: argparse.Namespace) -> int:
    from tasks.automations import ensure_automations

    lines = ensure_automations(args.drift_webhook, args.notify_block, args.heartbeat_grace)
    print("\n".join(lines))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from infra.stack import StackConfig, down

    stopped = down(StackConfig.from_env())
    print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from infra.stack import StackConfig, status

    for service, state in status(StackConfig.from_env()).items():
        print(f"  {service:<16} {state}")
    return 0


def _print_training(result: dict[str, Any]) -> None:
    from tasks.settings import Settings

    settings = Settings.from_env()
    metrics = result.get("metrics", {})
    keys = (
        "val_auc",
        "val_pf1",
        "val_best_f1",
        "holdout_auc",
        "holdout_pf1",
        "holdout_sensitivity",
        "holdout_specificity",
    )
    print("\nModel:")
    for key in keys:
        if key in metrics:
            _line(key, f"{metrics[key]:.3f}")
    _line("MLflow run", result["run_id"])
    if "registered" in result:
        reg = result["registered"]
        _line("registered", f"models:/{reg['name']}/{reg['version']} (alias @challenger)")
    uri = settings.mlflow_tracking_uri
    _line("MLflow UI", f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri)


def _line(label: str, value: object) -> None:
    print(f"  {label:<20} {value}")


def _print_pipeline(result: dict[str, Any]) -> None:
    from mammo import contract as c
    from mammo.eda import MARKDOWN_FILE

    ingest = result["ingest"]
    eda = f"{result['out']}/{c.EDA_DIR}/{MARKDOWN_FILE}"
    print(
        f"\nData: {ingest['manifest_rows']} images decoded into {result['out']} "
        f"({ingest['quarantined']} quarantined, {ingest['decoded_this_run']} new this run); "
        "both validation gates passed; "
        + (f"EDA report {eda}" if result.get("eda") else "EDA report failed")
    )
    _print_training(result)
    promotion = result.get("promotion", {})
    _line("promotion", f"{promotion.get('decision')}: {promotion.get('reason', '')}")
    for key in ("model_card", "decision_file"):
        if promotion.get(key):
            _line(key.replace("_", " "), promotion[key])
    _line("Ray dashboard", "logged above (live while a run lasts; `mammo up` keeps one running)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo",
        description="Nightly retraining of a screening-mammography cancer model: "
        "DICOM ingest, validation, Ray Train, MLflow registry.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthesize a small set and run the whole pipeline on it")
    p.add_argument("--dir", default=None, help="where to work (default: $MAMMO_HOME/demo)")
    p.add_argument("--patients", type=int, default=60)
    p.set_defaults(handler=cmd_demo)

    from mammo.synth import DIFFICULTY_NAMES

    p = sub.add_parser("synth", help="write a synthetic RSNA-layout data set")
    p.add_argument("out", help="directory to write train.csv and train_images/ to")
    p.add_argument("--patients", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--positive-rate", type=float, default=0.0206, help="positive breasts")
    p.add_argument("--image-size", default="small", help="small (256x208), full, or RxC")
    p.add_argument("--with-test", action="store_true", help="also write test.csv, test_images/")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument(
        "--difficulty",
        choices=DIFFICULTY_NAMES,
        default="easy",
        help="lesion conspicuity: easy (every model finds them), realistic (oracle AUC ~0.88)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="rsna",
        help="the dataset layout to copy; the options above shape rsna only, the other "
        "layouts are a small fixed copy varied by --seed (docs/datasets.md)",
    )
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser(
        "catalog", help="read any public dataset layout into the common schema (no decoding)"
    )
    p.add_argument("--raw", required=True, help="a local copy of RSNA, CBIS-DDSM, VinDr, ...")
    p.add_argument("--out", required=True, help="writes OUT/catalog/<dataset>/*.parquet")
    p.add_argument("--dataset", choices=LAYOUTS, help="default: recognised by marker files")
    p.set_defaults(handler=cmd_catalog)

    p = sub.add_parser("ingest", help="decode RAW's DICOMs into shards, PNGs and a manifest")
    _add_ingest_args(p, out_required=True)
    p.add_argument("--subset", choices=["train", "test"], default="train")
    _add_config_arg(p)
    p.set_defaults(handler=cmd_ingest)

    p = sub.add_parser("validate", help="Great Expectations on train.csv and the decoded set")
    p.add_argument("--raw", required=True, help="the RSNA layout that was ingested")
    p.add_argument("--data", required=True, help="the ingest output (OUT)")
    _add_validation_args(p)
    _add_config_arg(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("drift", help="the images since the champion's training, against its data")
    p.add_argument("--data", default="", help="the ingest output (default: $MAMMO_HOME/data)")
    p.add_argument(
        "--resolve",
        default=None,
        metavar="KEY",
        help="mark a finding of the latest report resolved",
    )
    p.add_argument("--reason", default="", help="why it is resolved (with --resolve)")
    _add_config_arg(p)
    p.set_defaults(handler=cmd_drift)

    p = sub.add_parser(
        "automations", help="create or update the Prefect automations (crashed runs, drift)"
    )
    p.add_argument("--drift-webhook", default=None, help="URL to POST each drift finding to")
    p.add_argument(
        "--notify-block", default=None, help="or a saved notification block, type-slug/name"
    )
    p.add_argument(
        "--heartbeat-grace",
        type=int,
        default=None,
        help="seconds without a heartbeat before a run is Crashed (default: 3 heartbeats)",
    )
    p.set_defaults(handler=cmd_automations)

    p = sub.add_parser("monitor", help="the last nightly runs side by side, from OUT's records")
    p.add_argument("--out", default="", help="the ingest output (default: $MAMMO_HOME/data)")
    p.add_argument("--last", type=int, default=7, help="how many nights (default 7)")
    p.set_defaults(handler=cmd_monitor)

    p = sub.add_parser("eda", help="exploratory report of train.csv (plots + eda.md)")
    p.add_argument("--raw", required=True, help="local path or s3://bucket/prefix (RSNA layout)")
    p.add_argument("--out", default="eda", help="local directory for eda.md and the plots")
    p.set_defaults(handler=cmd_eda)

    p = sub.add_parser("train", help="train on an ingest output with Ray Train; log to MLflow")
    p.add_argument("--data", required=True, help="the ingest output (OUT)")
    p.add_argument("--no-register", action="store_true", help="log the model, do not register")
    _add_train_args(p)
    _add_split_args(p)
    _add_config_arg(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("tune", help="search [train] hyperparameters with Ray Tune; best as TOML")
    p.add_argument("--data", required=True, help="the ingest output (OUT)")
    p.add_argument("--trials", type=int, default=None, help="how many (default: [tune] trials, 8)")
    p.add_argument(
        "--out-config",
        default=None,
        metavar="TOML",
        help="where to write the best trial's configuration (default: $MAMMO_HOME/tuned.toml)",
    )
    _add_train_args(p)
    _add_split_args(p)
    _add_config_arg(p)
    p.set_defaults(handler=cmd_tune)

    p = sub.add_parser("run", help="the nightly pipeline: ingest, validate, EDA, train, promote")
    _add_ingest_args(p, out_required=False)
    _add_promotion_args(p)
    _add_validation_args(p)
    _add_train_args(p)
    _add_split_args(p)
    _add_config_arg(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("promote", help="move @champion to the challenger if proven no worse")
    p.add_argument(
        "--data",
        default=None,
        help="decoded data whose holdout to score (default $MAMMO_HOME/data)",
    )
    _add_promotion_args(p)
    p.add_argument("--rollback", action="store_true", help="restore the previous champion")
    p.add_argument("--reason", default="", help="with --rollback: why, kept on the version")
    p.add_argument("--history", action="store_true", help="list versions, aliases, decisions")
    _add_config_arg(p)
    p.set_defaults(handler=cmd_promote)

    p = sub.add_parser("compact", help="rewrite OUT's shards without superseded rows")
    p.add_argument("--out", default=None, help="the ingest output (default $MAMMO_HOME/data)")
    p.set_defaults(handler=cmd_compact)

    p = sub.add_parser("predict", help="score RAW/test.csv into a Kaggle submission CSV")
    p.add_argument("--raw", required=True, help="RSNA layout with test.csv and test_images/")
    p.add_argument("--model", default="models:/mammo-cancer@champion", help="a model URI")
    p.add_argument("--out", default="submission.csv", help="CSV path or s3:// URI")
    p.add_argument("--binarize", action="store_true", help="0/1 with the model's threshold")
    p.add_argument(
        "--work",
        default=None,
        help="where the test images are decoded: a path or s3:// URI every Ray node can reach "
        "(default: $MAMMO_HOME/predict/<preprocess hash>, this machine only)",
    )
    p.set_defaults(handler=cmd_predict)

    for name, handler, text in (
        ("up", cmd_up, "start the local stack on 127.0.0.1: Prefect, Ray, MLflow, S3"),
        ("down", cmd_down, "stop everything `mammo up` started"),
        ("status", cmd_status, "show the local stack's services and URLs"),
    ):
        sub.add_parser(name, help=text).set_defaults(handler=handler)
    return parser


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="TOML",
        help="settings file (docs/configuration.md); the flags override it",
    )


def _add_promotion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", default=None, help="promotion protocol YAML (default: shipped)")
    p.add_argument("--metric", choices=["auc", "pf1"], default=None, help="override: primary")
    p.add_argument("--margin", type=float, default=None, help="override: non-inferiority margin")


def _add_validation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--positive-rate-band",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="allowed share of positive images (default 0.001 0.2: a feed with no positive fails)",
    )


def _add_split_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("patient split (defaults: mammo.splits.SplitConfig)")
    g.add_argument("--holdout-fraction", type=float, default=None, help="default 0.15")
    g.add_argument("--val-fraction", type=float, default=None, help="default 0.15")
    g.add_argument("--split-seed", type=int, default=None, help="default 0")


def _add_ingest_args(p: argparse.ArgumentParser, out_required: bool) -> None:
    p.add_argument("--raw", required=True, help="local path or s3://bucket/prefix (RSNA layout)")
    p.add_argument(
        "--out",
        required=out_required,
        default=None,
        help="local path or s3://bucket/prefix for outputs"
        + ("" if out_required else " (default: $MAMMO_HOME/data)"),
    )
    p.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="files per unit of work (default: a few units per Ray CPU, at most 256)",
    )
    p.add_argument("--max-patients", type=int, default=None, help="a small run: first N patients")
    p.add_argument("--rows", type=int, default=None, help="output rows (default 1024)")
    p.add_argument("--cols", type=int, default=None, help="output columns (default 512)")
    p.add_argument("--bit-depth", type=int, choices=[8, 16], default=None)
    p.add_argument(
        "--decode",
        choices=["fast", "exact"],
        default=None,
        help="exact (default): every image at full resolution; fast: JPEG 2000 decoded only "
        "as finely as the output needs, about 4x faster, slightly different pixels "
        "(docs/decoding.md)",
    )


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (defaults: mammo.training.TrainConfig)")
    g.add_argument(
        "--model",
        default=None,
        help="small_cnn (default), resnet18, resnet34, efficientnet_b0, efficientnet_b2, "
        "convnext_tiny, convnext_small",
    )
    g.add_argument(
        "--pretrained",
        default=None,
        metavar="PATH",
        help="backbone weights: a local .safetensors or .pth, e.g. exported from timm or "
        "torchvision (docs/training.md); readable by every training worker",
    )
    g.add_argument("--target", default=None, help="cancer (default) or density, ...")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--image-rows", type=int, default=None, help="training resolution")
    g.add_argument("--image-cols", type=int, default=None)
    g.add_argument("--workers", type=int, default=None, help="Ray Train workers")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--sampler", choices=["none", "oversample", "balanced"], default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--fuse-metadata", action="store_true", help="also feed age, view, ...")
    g.add_argument(
        "--use-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: when the cluster has GPUs",
    )


def _known_errors() -> tuple[type[BaseException], ...]:
    from infra.stack import StackError
    from mammo.config import ConfigError
    from mammo.inventory import MetadataError
    from mammo.protocol import ProtocolError
    from mammo.search import TuningError
    from tasks.automations import AutomationError
    from tasks.catalog import CatalogError
    from tasks.ingest import IngestError
    from tasks.monitor import DriftError
    from tasks.registry import PromotionError
    from tasks.scoring import ScoringError
    from tasks.storage import StorageError, StorageURIError
    from tasks.tracking import RegistryError
    from tasks.train import TrainingError
    from tasks.validate import DataValidationError

    return (
        MetadataError,
        IngestError,
        StorageError,
        RegistryError,
        TrainingError,
        DataValidationError,
        StackError,
        PromotionError,
        ProtocolError,
        ScoringError,
        ConfigError,
        StorageURIError,
        AutomationError,
        CatalogError,
        DriftError,
        TuningError,
        FileNotFoundError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # With no PREFECT_API_URL a command starts Prefect's temporary server, whose first start
    # (database migrations) takes longer than Prefect's 20 s on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    from tasks.logs import one_line_known_errors

    one_line_known_errors(_known_errors())
    try:
        check_settings(args)
        return handler(args)
    except Exception as exc:
        if isinstance(exc, _known_errors()):
            print(f"\nmammo {args.command} failed: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
