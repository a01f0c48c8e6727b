"""The nightly pipeline: ingest -> validate -> EDA -> train -> register -> promote.

    mammo run --raw RAW [--out OUT]      (or: python flows/nightly.py --raw RAW)

A failed validation stops the run before training: nothing is trained or registered.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.ingest import ingest
from flows.promote import promote
from flows.train import train
from tasks.eda import eda_report
from tasks.settings import default_out
from tasks.validate import validate_data


@flow(name="nightly")
def nightly(
    raw: str,
    out: str | None = None,
    max_patients: int | None = None,
    shard_size: int = 256,
    preprocess: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
    protocol: str | None = None,
) -> dict[str, Any]:
    """Retrain on everything RAW holds tonight, register the challenger, promote if earned."""
    if not raw:
        raise ValueError(
            "raw is empty: set MAMMO_RAW before `prefect deploy`, or run with --param raw=..."
        )
    out = out or default_out()
    ingested = ingest(raw, out, "train", shard_size, max_patients, preprocess)
    validated = validate_data(raw, out, validation)
    eda = eda_report(raw, out)
    trained = train(out, train_config, split, register_challenger=True)
    promoted = promote(out, protocol)
    return {
        "out": out,
        "ingest": {k: v for k, v in ingested.items() if k != "decode"},
        "validation": validated,
        "eda": {k: eda[k] for k in ("images", "patients", "positive_breasts") if k in eda},
        **trained,
        "promotion": promoted,
    }


if __name__ == "__main__":
    from flows.cli import main

    main(["run", *__import__("sys").argv[1:]])
