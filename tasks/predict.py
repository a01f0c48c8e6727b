"""Batch prediction: RSNA test images -> one probability per breast, in Kaggle's format.

The test DICOMs are decoded by the ingest flow with the exact preprocessing config stored
with the model; images are scored per shard on Ray; views are aggregated per breast with
the model's aggregation; ``prediction_id,cancer`` is written with one row per breast of
test.csv. A breast whose images were all quarantined still gets a row (probability 0.0)
and is counted in the summary.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task

from mammo import contract as c
from mammo.inventory import parse_metadata_csv
from mammo.metrics import aggregate_breasts
from tasks.logs import run_logger
from tasks.scoring import load_bundle, read_manifest, score_rows
from tasks.settings import Settings
from tasks.storage import StorageError, open_store

FALLBACK_PROBABILITY = 0.0


@task(name="predict-breasts")
def predict_breasts(
    raw: str, work: str, model_uri: str, out: str, settings: Settings, binarize: bool = False
) -> dict[str, Any]:
    logger = run_logger()
    bundle = load_bundle(model_uri, settings.mlflow_tracking_uri)
    test, unusable = parse_metadata_csv(
        open_store(raw).read_bytes(c.csv_name(c.Subset.TEST)), c.Subset.TEST
    )
    if len(unusable):
        logger.warning(
            "%d row(s) of %s cannot be scored (%s): no prediction_id can be formed",
            len(unusable),
            c.csv_name(c.Subset.TEST),
            "; ".join(unusable["detail"].astype(str).head(3)),
        )
    breasts = test[[c.PREDICTION_ID]].drop_duplicates()
    scored = score_rows(work, read_manifest(work), [model_uri], settings)
    per_breast = aggregate_breasts(scored, "model_0", bundle.config.aggregation)  # type: ignore[arg-type]
    submission = breasts.merge(
        per_breast[[c.PREDICTION_ID, "model_0"]], on=c.PREDICTION_ID, how="left"
    ).rename(columns={"model_0": c.CANCER})
    missing = int(submission[c.CANCER].isna().sum())
    submission[c.CANCER] = submission[c.CANCER].fillna(FALLBACK_PROBABILITY)
    if binarize:
        if bundle.config.threshold is None:
            raise ValueError(f"{model_uri} stores no threshold to binarize with")
        submission[c.CANCER] = (submission[c.CANCER] >= bundle.config.threshold).astype(int)
    submission = submission.sort_values(c.PREDICTION_ID).reset_index(drop=True)
    _write(out, submission.to_csv(index=False).encode())
    record = {"model_uri": model_uri, "breasts": len(submission), "images_scored": len(scored)}
    _write(f"{out}.json", json.dumps(record, indent=2).encode())  # which version scored it
    if missing:
        logger.warning(
            "%d breasts had no decodable image: probability %s", missing, FALLBACK_PROBABILITY
        )
    logger.info("Wrote %d breasts (%d images scored) to %s", len(submission), len(scored), out)
    return {
        "out": out,
        "breasts": len(submission),
        "images_scored": len(scored),
        "breasts_without_image": missing,
        "binarized": binarize,
        "threshold": bundle.config.threshold,
    }


def _write(out: str, content: bytes) -> None:
    """Write ``content`` to a local path or an ``s3://bucket/key`` URI."""
    parent, _, name = out.rstrip("/").rpartition("/")
    if not name or out.endswith("/"):
        raise StorageError(f"--out must name a file, got {out!r}")
    if not parent:
        parent = "."
    elif parent in ("s3:", "s3:/"):
        raise StorageError(f"--out {out!r} names a bucket, not a key: use s3://bucket/file.csv")
    open_store(parent).write_bytes(name, content)
