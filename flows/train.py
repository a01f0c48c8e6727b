"""Training flow: a manifest written by ingest -> a model in MLflow, registered as challenger.

mammo train --data OUT          (or: python flows/train.py --data OUT)
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.runtime import flow_run

from mammo import tags as t
from mammo.splits import SplitConfig
from mammo.training import TrainConfig
from tasks import tracking
from tasks.config import load_config
from tasks.lineage import ValidationFact, validation_fact
from tasks.model_card import publish_card
from tasks.retry import transient_only
from tasks.settings import Settings, default_out
from tasks.storage import absolute_uri
from tasks.train import TrainOutcome, train_model


@task(
    name="register-model",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=transient_only(),
)
def register_model(
    outcome: TrainOutcome, settings: Settings, validation: ValidationFact
) -> dict[str, str]:
    """Register the run's pyfunc model as a new version with the ``challenger`` alias."""
    tags = {
        t.RUN_KEY: outcome.run_key,
        t.DATA: outcome.data,
        t.DATA_HASH: outcome.data_hash,
        t.VALIDATION: validation.status,
        t.VALIDATION_DETAIL: validation.detail,
        t.THRESHOLD: "" if outcome.threshold is None else f"{outcome.threshold:.6f}",
        t.TORCH_MODEL_URI: outcome.torch_model_uri,
        **{f"{t.METRIC_PREFIX}{k}": f"{v:.6f}" for k, v in outcome.metrics.items()},
    }
    client = tracking.client(settings)
    version = tracking.register_version(
        client, settings.model_name, outcome.model_uri, outcome.run_id, tags
    )
    registered = {
        "name": settings.model_name,
        "version": str(version.version),
        "run_id": outcome.run_id,
    }
    if outcome.threshold is not None:  # a binary cancer model: its card, not decided yet
        card = publish_card(
            client, settings.model_name, version, outcome.data, None, None, None,
            outcome.threshold, outcome.aggregation,
        )  # fmt: skip
        registered.update(card)
    return registered


@flow(name="train")
def train(
    data: str = "",
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    register_challenger: bool = True,
    config: str | None = None,
) -> dict[str, Any]:
    """Train on the manifest under ``data`` and (by default) register a challenger.

    The version records the validation of the exact manifest it trained on, as found
    under ``data`` (tasks.lineage): ``mammo validate`` first, or promotion refuses it.
    ``train_config`` and ``split`` override the [train] and [split] sections of ``config``.
    """
    settings = Settings.from_env()
    data = absolute_uri(data or default_out())
    night = load_config(config)
    train_values = TrainConfig.from_dict(night.merged("train", train_config) or {}).to_dict()
    split_config = SplitConfig.from_dict(night.merged("split", split) or {}).to_dict()
    lineage = {t.PREFECT_FLOW_RUN_ID: str(flow_run.id)}
    outcome = train_model(data, train_values, split_config, settings, lineage)
    validation = validation_fact(data, outcome.data_hash)
    run_tags = {t.VALIDATION: validation.status, t.VALIDATION_DETAIL: validation.detail}
    client = tracking.client(settings)
    for key, value in run_tags.items():  # lineage on the run too, for the MLflow UI
        client.set_tag(outcome.run_id, key, value)
    result: dict[str, Any] = {
        "run_id": outcome.run_id,
        "metrics": outcome.metrics,
        "validation": validation.to_dict(),
    }
    if register_challenger:
        result["registered"] = register_model(outcome, settings, validation)
    return result


if __name__ == "__main__":
    from flows.cli import main

    main(["train", *__import__("sys").argv[1:]])
