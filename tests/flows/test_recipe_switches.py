"""The recipe's switches in the nightly training (``[train]`` keys): gradient accumulation,
an EMA of the weights, test-time flips, auxiliary heads. Trained through Ray Train on 2
workers, the model that is shipped must be the one that was validated (without its
auxiliary heads), and it must score as it was validated.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.train import train
from mammo import contract as c
from mammo import tags as t
from tasks.scoring import score_rows
from tasks.settings import Settings
from tests.flows.conftest import SPLIT, Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ema_flips_and_accumulation_ship_the_model_that_was_validated(
    pipeline: Pipeline, ray_cluster: dict[str, object]
) -> None:
    config = {
        "image_rows": 128,
        "image_cols": 64,
        "epochs": 3,
        "batch_size": 4,
        "num_workers": 2,
        "early_stopping_patience": 3,
        "accumulate": 2,
        "ema_decay": 0.9,
        "tta_vflip": True,
        "aux_targets": ["BIRADS", "density", "difficult_negative_case"],
    }
    result = train(str(pipeline.out), config, SPLIT, register_challenger=False)
    run_id, metrics = result["run_id"], result["metrics"]
    mlflow.set_tracking_uri(pipeline.tracking_uri)

    def artifact(path: str) -> Path:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))

    # The weights shipped are the EMA's of the best epoch: validated again after training,
    # they give the figures that epoch was chosen on (the raw weights would not).
    history = json.loads(artifact(t.HISTORY_FILE).read_text())
    best = max(history, key=lambda record: record["auc"])
    assert metrics["val_pf1"] == pytest.approx(best["pf1"], abs=1e-6)
    assert metrics["val_auc"] == pytest.approx(best["auc"], abs=1e-9)

    # The registered pyfunc flips as validation did: its scores of the holdout PNGs are the
    # holdout predictions the run logged.
    logged = pd.read_parquet(artifact(f"{t.PREDICTIONS_DIR}/{t.predictions_file('holdout')}"))
    manifest = pd.read_parquet(pipeline.out / c.MANIFEST_FILE).set_index(c.IMAGE_ID)
    paths = manifest.loc[logged[c.IMAGE_ID], c.PNG_PATH]
    frame = pd.DataFrame({c.PNG: [(pipeline.out / p).read_bytes() for p in paths]})
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{t.PYFUNC_MODEL}")
    bundle = model.unwrap_python_model().bundle
    assert bundle.vflip and bundle.model.spec.num_outputs == 1  # the auxiliary heads are gone
    scores = model.predict(frame)[c.PROBABILITY].to_numpy()
    expected = logged[c.PROBABILITY].to_numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    # ... and so does promotion's path: Ray tasks scoring the PNG bytes of the shards
    rows = manifest.loc[logged[c.IMAGE_ID]].reset_index()
    uri = f"runs:/{run_id}/{t.PYFUNC_MODEL}"
    promoted = score_rows(str(pipeline.out), rows, [uri], Settings.from_env())
    by_image = promoted.set_index(c.IMAGE_ID)["model_0"]
    np.testing.assert_allclose(
        by_image.loc[logged[c.IMAGE_ID]].to_numpy(), expected, rtol=1e-4, atol=1e-5
    )
