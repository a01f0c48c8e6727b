"""The nightly pipeline: metadata gate -> ingest -> decoded-set gate -> drift -> EDA ->
train -> register -> promote.

    mammo run --raw RAW [--out OUT]      (or: python flows/nightly.py --raw RAW)

A broken train.csv stops the run before anything is decoded; a failed decoded-set validation
stops it before training: nothing is trained or registered. The drift and EDA reports are
informative: their findings warn, their failure is logged, and the night goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from prefect import Task, flow, get_run_logger
from prefect.client.schemas.objects import State

from flows.compact import compact
from flows.ingest import ingest
from flows.promote import promote
from flows.train import train
from mammo.config import IngestSettings, PromotionSettings
from tasks.compact import superseded_fraction
from tasks.config import load_config
from tasks.eda import eda_report
from tasks.history import night_recorder
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
    stages: dict[str, Any] = {}  # stage -> its result, in the order reached (tasks.history)
    with night_recorder(out, stages):
        night = load_config(config)
        given = {"shard_size": shard_size, "max_patients": max_patients}
        sizes = IngestSettings(**night.merged("ingest", given) or {})
        chosen = {"protocol": protocol, "metric": metric, "margin": margin}
        promotion = PromotionSettings(**night.merged("promotion", chosen) or {})
        validation = night.merged("validation", validation)
        split = night.merged("split", split)
        preprocess = night.merged("preprocess", preprocess)

        def stage(name: str, step: Callable[..., Any], *args: Any) -> Any:
            stages[name] = None  # reached: a step that raises is the night's last stage
            stages[name] = step(*args)
            return stages[name]

        stage("metadata gate", validate_metadata, raw, out, validation)
        ingested = stage(
            "ingest", ingest, raw, out, "train", sizes.shard_size, sizes.max_patients, preprocess
        )
        if superseded_fraction(open_store(out)) > sizes.compact_above:
            compact(out)
        validated = stage("decoded-set gate", validate_data, raw, out, validation)
        drift = stage("drift", _informative, drift_report, out, night.merged("monitor", None))
        eda = stage("eda", _informative, eda_report, raw, out)
        trained = stage("train", train, out, night.merged("train", train_config), split, True)
        promoted = stage(
            "promote", promote, out, promotion.protocol, promotion.metric, promotion.margin
        )
    return {
        "out": out,
        "ingest": {k: v for k, v in ingested.items() if k != "decode"},
        "validation": validated,
        "drift": {k: drift[k] for k in ("counts", "report") if k in drift},
        "eda": {k: eda[k] for k in ("images", "patients", "positive_breasts") if k in eda},
        **trained,
        "promotion": promoted,
    }


def _informative(step: Task[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A report the night does not depend on: its failure is logged, the night goes on."""
    state = cast("State[dict[str, Any]]", step(*args, return_state=True))
    if state.is_completed():
        result: dict[str, Any] = state.result()
        return result
    get_run_logger().warning("%s failed; the night goes on: %s", step.name, state.message)
    return {}


if __name__ == "__main__":
    from flows.cli import main

    main(["run", *__import__("sys").argv[1:]])
