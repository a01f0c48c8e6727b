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
from tasks.tracking import pin_model_uri


@flow(name="predict")
def predict(
    raw: str,
    model: str = "models:/mammo-cancer@champion",
    out: str = "submission.csv",
    work: str | None = None,
    binarize: bool = False,
    shard_size: int | None = None,
) -> dict[str, Any]:
    """Decode RAW's test images with the model's own preprocessing, score, write the CSV.

    An alias (``models:/name@champion``) is resolved to its version once, here: the decode,
    every scoring worker and the submission's record use that version, whatever moves the
    alias during the run.
    """
    settings = Settings.from_env()
    pinned, version = pin_model_uri(settings, model)
    bundle = load_bundle(pinned, settings.mlflow_tracking_uri)
    preprocess = bundle.config.preprocess
    work = work or str(settings.home / "predict" / bundle.preprocess.config_hash())
    ingest(raw, work, "test", shard_size, None, preprocess)
    result = predict_breasts(raw, work, pinned, out, settings, binarize)
    return {"model": model, "model_uri": pinned, "model_version": version, **result}


if __name__ == "__main__":
    from flows.cli import main

    main(["predict", *__import__("sys").argv[1:]])
