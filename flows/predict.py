"""Batch prediction flow: RAW/test.csv + test_images/ -> submission.csv (Kaggle's format).

mammo predict --raw RAW --model models:/mammo-cancer@champion --out submission.csv
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.ingest import ingest
from tasks.predict import predict_breasts
from tasks.scoring import load_bundle
from tasks.settings import Settings


@flow(name="predict")
def predict(
    raw: str,
    model: str = "models:/mammo-cancer@champion",
    out: str = "submission.csv",
    work: str | None = None,
    binarize: bool = False,
    shard_size: int = 256,
) -> dict[str, Any]:
    """Decode RAW's test images with the model's own preprocessing, score, write the CSV."""
    settings = Settings.from_env()
    bundle = load_bundle(model, settings.mlflow_tracking_uri)
    preprocess = bundle.config.preprocess
    work = work or str(settings.home / "predict" / bundle.preprocess.config_hash())
    ingest(raw, work, "test", shard_size, None, preprocess)
    return predict_breasts(raw, work, model, out, settings, binarize)


if __name__ == "__main__":
    from flows.cli import main

    main(["predict", *__import__("sys").argv[1:]])
