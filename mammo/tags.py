"""The MLflow side of the data contract: tag keys and artifact names.

Part of the contract (mammo.contract), in a module of its own so that contract.py stays
legible: the file names under OUT are there, what a training run and a registered version
carry in MLflow is here. Plain strings only (no MLflow import): tasks/ sets and reads them,
tests check them from outside. A key or a path is renamed here or nowhere.
"""

from __future__ import annotations

from typing import Final

from mammo import contract as c

# --- tags of a training run (tasks/train.py, tasks/tracking.py, flows/train.py) --------------
RUN_KEY: Final = "mammo.run_key"  # hash of manifest + configs: a crashed run is resumed by it
RAY_RUN_NAME: Final = "mammo.ray_run_name"  # where Ray Train keeps the run's checkpoints
DATA: Final = "mammo.data"  # the OUT the run trained on (also a version tag)
DATA_HASH: Final = "mammo.data_hash"  # SHA-256 of its manifest.parquet (also a version tag)
GIT_COMMIT: Final = "mammo.git_commit"
ROWS_PREFIX: Final = "mammo.rows."  # + split: images per split
PREFECT_FLOW_RUN_ID: Final = "mammo.prefect_flow_run_id"
VALIDATION: Final = "mammo.validation"  # mammo.promotion VALIDATION_* (also a version tag)
VALIDATION_DETAIL: Final = "mammo.validation.detail"  # the report, or the command to run
# ... and of a hyperparameter search (tasks/tune.py): a parent run, one child run per trial
PARENT_RUN_ID: Final = "mlflow.parentRunId"  # MLflow's own key: the UI nests the child under it
TUNE_TRIAL: Final = "mammo.tune.trial"  # the Ray Tune trial id of a child run
TUNE_EXPERIMENT: Final = "mammo.tune.experiment"  # on the parent: where Ray Tune keeps its trials
TUNE_BEST_RUN: Final = "mammo.tune.best_run_id"  # on the parent: the best trial's run

# --- tags of a registered model version (flows/train.py, tasks/promote.py, tasks/registry.py)
THRESHOLD: Final = "mammo.threshold"  # locked on validation, "%.6f"; "" without one
TORCH_MODEL_URI: Final = "mammo.torch_model_uri"
METRIC_PREFIX: Final = "mammo.metric."  # + metric name, "%.6f"
MODEL_CARD: Final = "mammo.model_card"  # where the card is under OUT
PREVIOUS_CHAMPION: Final = "mammo.previous_champion"  # the version a promotion replaced
ROLLED_BACK: Final = "mammo.rolled_back"  # set once: never promoted again automatically
PROMOTION_PREFIX: Final = "mammo.promotion."  # + a figure of the primary metric's difference
PROMOTION_DECISION: Final = "mammo.promotion.decision"
PROMOTION_REASON: Final = "mammo.promotion.reason"
PROMOTION_AT: Final = "mammo.promotion.at"
PROMOTION_COMPARED_TO: Final = "mammo.promotion.compared_to"  # the champion's version, or "none"
PROMOTION_PROTOCOL: Final = "mammo.promotion.protocol"
PROMOTION_PROTOCOL_HASH: Final = "mammo.promotion.protocol_hash"
PROMOTION_BREASTS: Final = "mammo.promotion.breasts"
PROMOTION_POSITIVE_BREASTS: Final = "mammo.promotion.positive_breasts"
# ... and on the champion it was compared with:
CHALLENGED_BY: Final = "mammo.promotion.challenged_by"
CHALLENGE_DECISION: Final = "mammo.promotion.challenge_decision"
CHALLENGE_REASON: Final = "mammo.promotion.challenge_reason"
CHALLENGE_AT: Final = "mammo.promotion.challenge_at"
# ... and by a rollback, on the withdrawn version and on the one restored:
ROLLED_BACK_AT: Final = "mammo.promotion.rolled_back_at"
RESTORED_FROM: Final = "mammo.promotion.restored_from"

# --- artifacts of a training run ------------------------------------------------------------
PYFUNC_MODEL: Final = "model"  # the logged pyfunc model (PNG bytes + metadata in), registered
TORCH_MODEL: Final = "torch-model"  # the raw torch module
BUNDLE_ARTIFACT: Final = "bundle"  # the pyfunc's artifact: a saved mammo.inference.ModelBundle
HISTORY_FILE: Final = "history.json"  # one row of metrics per epoch
SPLITS_FILE: Final = "splits.csv"  # patient_id, image_id, split
PREDICTIONS_DIR: Final = "predictions"  # predictions_{split}.parquet, per image
PLOTS_DIR: Final = "plots"
TRAINING_CURVES_PNG: Final = "training_curves.png"
ROC_PNG: Final = "roc.png"  # binary targets
PR_PNG: Final = "pr.png"  # binary targets
CONFUSION_VAL_PNG: Final = "confusion_val.png"  # multi-class targets
SAMPLES_PNG: Final = "samples.png"
EVALUATION_DIR: Final = "evaluation"  # {split}.json (clinical evaluation) and data.json
EVALUATION_DATA_FILE: Final = f"{EVALUATION_DIR}/data.json"  # mammo.model_card.data_summary
CARD_DIR: Final = "model_card"  # the card's files, as under OUT/registry/<model>/v<N>/
DRIFT_DIR: Final = "drift"
DRIFT_REFERENCE: Final = f"{DRIFT_DIR}/reference.parquet"  # mammo.drift_report.reference_profile
PROMOTION_DIR: Final = "promotion"
DECISION_ARTIFACT: Final = f"{PROMOTION_DIR}/{c.DECISION_FILE}"  # the latest decision
TUNED_CONFIG: Final = "tuned.toml"  # of a search's parent run: the best trial's configuration


def predictions_file(split: str) -> str:
    return f"predictions_{split}.parquet"


def evaluation_file(split: str) -> str:
    """``evaluation/{split}.json``: mammo.clinical.evaluate on the split, at breast level."""
    return f"{EVALUATION_DIR}/{split}.json"


def decision_history_file(stamp: str) -> str:
    """Every decision, kept: ``promotion/history/decision-{stamp}.json``."""
    return f"{PROMOTION_DIR}/history/decision-{stamp}.json"
