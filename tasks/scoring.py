"""Scoring registered models on decoded images: one Ray task per shard, shared by promotion
and batch prediction.

A model is loaded once per worker process from the registry (``models:/name/version`` or
``models:/name@alias``) through its pyfunc, so what is scored is exactly what a consumer
loads. Only the rows asked for are scored; the PNG bytes are read from the shards.
"""

from __future__ import annotations

from functools import cache

import mlflow
import pandas as pd
import ray

from mammo import contract as c
from mammo.inference import ModelBundle
from tasks.cluster import ensure_ray
from tasks.settings import Settings
from tasks.storage import open_store, read_parquet

SCORE_COLUMNS = [c.IMAGE_ID, c.FINGERPRINT, c.PNG, *c.PREDICTION_TIME_COLUMNS]


class ScoringError(ValueError):
    """A model URI that could change meaning during a run (an alias)."""


@cache
def load_bundle(model_uri: str, tracking_uri: str) -> ModelBundle:
    """The bundle behind a registered pyfunc model (cached per process).

    Only URIs that name one version are accepted (``models:/name/N``, ``runs:/...``): an
    alias is resolved once per run by the caller (tasks.tracking.pin_model_uri), so a
    cached or re-resolved alias can never score one run with two versions.
    """
    if "@" in model_uri:
        raise ScoringError(f"resolve {model_uri} to a version first (pin_model_uri)")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    bundle: ModelBundle = model.unwrap_python_model().bundle
    return bundle


@ray.remote(num_cpus=1, max_retries=2)
def score_shard(
    data: str, shard: str, wanted: dict[int, str], model_uris: list[str], tracking_uri: str
) -> pd.DataFrame:
    """Probabilities of each model for the shard's rows in ``wanted`` (image_id -> fingerprint)."""
    table = read_parquet(open_store(data), shard, SCORE_COLUMNS).to_pandas()
    keep = table[c.IMAGE_ID].map(wanted) == table[c.FINGERPRINT]
    rows = table[keep].reset_index(drop=True)
    out = pd.DataFrame({c.IMAGE_ID: rows[c.IMAGE_ID]})
    for index, uri in enumerate(model_uris):
        scores = load_bundle(uri, tracking_uri).predict_frame(rows)
        out[f"model_{index}"] = scores[c.PROBABILITY].to_numpy()
    return out


def score_rows(
    data: str, rows: pd.DataFrame, model_uris: list[str], settings: Settings
) -> pd.DataFrame:
    """``rows`` (manifest rows) with one probability column per model, ``model_0``, ..."""
    ensure_ray(settings)
    futures = [
        score_shard.options(name=f"score {shard}").remote(
            data,
            shard,
            dict(zip(part[c.IMAGE_ID].astype(int), part[c.FINGERPRINT].astype(str), strict=True)),
            model_uris,
            settings.mlflow_tracking_uri,
        )
        for shard, part in rows.groupby(c.SHARD, sort=True)
    ]
    scores = pd.concat(ray.get(futures), ignore_index=True) if futures else pd.DataFrame()
    if scores.empty:
        return rows.assign(**{f"model_{i}": pd.Series(dtype=float) for i in range(len(model_uris))})
    return rows.merge(scores, on=c.IMAGE_ID, how="inner", validate="one_to_one")


def read_manifest(data: str) -> pd.DataFrame:
    columns = [f.name for f in c.MANIFEST_SCHEMA]
    return read_parquet(open_store(data), c.MANIFEST_FILE, columns).to_pandas()
