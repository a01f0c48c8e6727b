"""The nightly pipeline: metadata gate -> ingest -> decoded-set gate -> drift -> EDA ->
train -> register -> promote.

    mammo run --raw RAW [--out OUT]      (or: python flows/nightly.py --raw RAW)

A broken train.csv stops the run before anything is decoded; a failed decoded-set validation
stops it before training: nothing is trained or registered. The drift and EDA reports are
informative: their findings warn, their failure is logged, and the night goes on.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.compact import compact
from flows.ingest import ingest
from flows.promote import promote
from flows.train import train
from mammo.config import IngestSettings, PromotionSettings
from tasks.compact import superseded_fraction
from tasks.config import load_config
from tasks.eda import eda_report
from tasks.monitor import drift_report
from tasks.settings import default_out
from tasks.storage import open_store
from tasks.validate import validate_data, validate_metadata


@flow(name="nightly")
def nightly(
    raw: str,
    out: str | None = None,
    max_patients: int | None = None,
    shard_size: int | None = None,
    preprocess: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
    protocol: str | None = None,
    metric: str | None = None,
    margin: float | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """Retrain on everything RAW holds tonight, register the challenger, promote if earned.

    ``config`` names a configuration file (mammo.config); the other parameters override it.
    """
    if not raw:
        raise ValueError(
            "raw is empty: set MAMMO_RAW before `prefect deploy`, or run with --param raw=..."
        )
    out = out or default_out()
    night = load_config(config)
    given = {"shard_size": shard_size, "max_patients": max_patients}
    sizes = IngestSettings(**night.merged("ingest", given) or {})
    chosen = {"protocol": protocol, "metric": metric, "margin": margin}
    promotion = PromotionSettings(**night.merged("promotion", chosen) or {})
    validation = night.merged("validation", validation)
    split = night.merged("split", split)
    validate_metadata(raw, out, validation)
    preprocess = night.merged("preprocess", preprocess)
    ingested = ingest(raw, out, "train", sizes.shard_size, sizes.max_patients, preprocess)
    if superseded_fraction(open_store(out)) > sizes.compact_above:
        compact(out)
    validated = validate_data(raw, out, validation)
    drift_state = drift_report(out, night.merged("monitor", None), return_state=True)
    drift: dict[str, Any] = {}
    if drift_state.is_completed():
        drift = drift_state.result()
    else:
        get_run_logger().warning("Drift report failed; the night goes on: %s", drift_state.message)
    eda_state = eda_report(raw, out, return_state=True)
    eda: dict[str, Any] = {}
    if eda_state.is_completed():
        eda = eda_state.result()
    else:
        get_run_logger().warning("EDA report failed; training goes on: %s", eda_state.message)
    trained = train(out, night.merged("train", train_config), split, register_challenger=True)
    promoted = promote(out, promotion.protocol, promotion.metric, promotion.margin)
    return {
        "out": out,
        "ingest": {k: v for k, v in ingested.items() if k != "decode"},
        "validation": validated,
        "eda": {k: eda[k] for k in ("images", "patients", "positive_breasts") if k in eda},
        "drift": {k: drift[k] for k in ("counts", "report") if k in drift},
        **trained,
        "promotion": promoted,
    }


if __name__ == "__main__":
    from flows.cli import main

    main(["run", *__import__("sys").argv[1:]])
