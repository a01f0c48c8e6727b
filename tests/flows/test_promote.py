"""Promotion through the real flow: registry, holdout scoring on Ray, paired bootstrap, lock.

The versions compared are real models scored through their pyfunc: the pipeline's trained
model ("good"), the same weights registered again (a tie), and the same network with its
output negated ("inverted": every ranking reversed, AUC = 1 - AUC of the good one).
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from flows.promote import promote
from mammo.inference import ModelBundle
from tasks import tracking
from tasks.lineage import manifest_hash, record_validation
from tasks.registry import PromotionError
from tasks.scoring import load_bundle
from tasks.settings import Settings
from tasks.train import log_models
from tests.flows.conftest import Pipeline
from tests.support.protocols import protocol_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def invert(model: torch.nn.Module) -> None:
    head = model.head[-1]  # (Dropout, Linear): negate the logit
    with torch.no_grad():
        head.weight.neg_()
        head.bias.neg_()


def keep(model: torch.nn.Module) -> None:
    """The same weights: a challenger that ties the champion exactly."""


class Registry:
    """Versions of model ``name`` made from the trained model ``source``@challenger."""

    def __init__(
        self,
        pipeline: Pipeline,
        name: str,
        monkeypatch: pytest.MonkeyPatch,
        source: str = "mammo-cancer",
    ) -> None:
        monkeypatch.setenv("MAMMO_MODEL_NAME", name)
        self.pipeline, self.name = pipeline, name
        self.count = itertools.count()
        self.settings = Settings.from_env()
        self.client = MlflowClient(pipeline.tracking_uri, registry_uri=pipeline.tracking_uri)
        good = self.client.get_model_version_by_alias(source, "challenger")
        self.good_params = self.client.get_run(good.run_id).data.params
        self.good = load_bundle(f"models:/{source}/{good.version}", pipeline.tracking_uri)

    def register(
        self, change: Callable[[torch.nn.Module], None], data_hash: str | None = None
    ) -> str:
        """A new version (and @challenger) of the good model with ``change`` applied, trained
        (as its tags say) on the pipeline's validated manifest, or on ``data_hash``."""
        model = copy.deepcopy(self.good.model)
        change(model)
        return self.register_bundle(ModelBundle(model, self.good.config), data_hash)

    def register_bundle(self, bundle: ModelBundle, data_hash: str | None = None) -> str:
        model = bundle.model
        mlflow_client = tracking.client(self.settings)
        experiment = mlflow_client.get_experiment_by_name(self.settings.mlflow_experiment)
        with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
            mlflow.log_params({k: v for k, v in self.good_params.items() if k.startswith("split.")})
            with tempfile.TemporaryDirectory() as tmp:
                model_uri, _ = log_models(bundle, model, Path(tmp))
        tags = {
            "mammo.data": str(self.pipeline.out),
            "mammo.data_hash": data_hash or manifest_hash(str(self.pipeline.out)),
        }
        version = tracking.register_version(
            mlflow_client, self.name, model_uri, run.info.run_id, tags
        )
        return str(version.version)

    def champion(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.name, "champion").version)
        except mlflow.exceptions.MlflowException:
            return None

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)

    def promote(self, **sections: object) -> dict[str, object]:
        """Promote under the small-holdout protocol with ``sections`` replaced."""
        directory = self.pipeline.home / "protocols" / self.name
        path = protocol_file(directory, f"p{next(self.count)}.yaml", **sections)
        return promote(data=str(self.pipeline.out), protocol=path)


def test_a_first_model_below_the_floor_is_refused(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-floor", monkeypatch)
    inverted = registry.register(invert)
    outcome = registry.promote()
    assert outcome["decision"] == "refused" and "floor auc: lower bound" in str(outcome["reason"])
    assert registry.champion() is None
    assert registry.tags(inverted)["mammo.promotion.decision"] == "refused"


def test_a_better_challenger_is_promoted_and_rollback_restores_the_old_champion(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-better", monkeypatch)
    inverted = registry.register(invert)
    assert registry.promote(first_model={"auc": 0.0})["decision"] == "promoted"  # a first model
    good = registry.register(keep)

    outcome = registry.promote()
    assert outcome["decision"] == "promoted", outcome
    rules = {r["name"]: r for r in outcome["rules"]}  # type: ignore[union-attr]
    primary = rules["non-inferior auc"]
    assert primary["passed"] and "difference +" in primary["observed"]
    assert registry.champion() == good
    challenger_tags, champion_tags = registry.tags(good), registry.tags(inverted)
    assert challenger_tags["mammo.promotion.decision"] == "promoted"
    assert challenger_tags["mammo.promotion.compared_to"] == inverted
    assert float(challenger_tags["mammo.promotion.ci_low"]) > 0.5
    assert champion_tags["mammo.promotion.challenged_by"] == good
    assert champion_tags["mammo.promotion.challenge_decision"] == "promoted"

    rolled = promote(rollback=True, reason="a reader study found a problem")
    assert rolled["champion"] == inverted and registry.champion() == inverted
    tags = registry.tags(good)
    assert "mammo.promotion.rolled_back_at" in tags
    assert tags["mammo.rolled_back"].endswith("a reader study found a problem")


def test_a_worse_challenger_is_refused_and_the_decision_is_on_both_versions(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-worse", monkeypatch)
    good = registry.register(keep)
    assert registry.promote()["decision"] == "promoted"
    inverted = registry.register(invert)

    outcome = registry.promote()
    assert outcome["decision"] == "refused" and "non-inferior auc" in str(outcome["reason"])
    assert registry.champion() == good
    assert registry.tags(inverted)["mammo.promotion.decision"] == "refused"
    assert registry.tags(good)["mammo.promotion.challenge_decision"] == "refused"


def test_an_identical_challenger_is_non_inferior_and_promoted(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-tie", monkeypatch)
    registry.register(keep)
    assert registry.promote()["decision"] == "promoted"
    second = registry.register(keep)  # identical predictions: difference 0, CI [0, 0]

    outcome = registry.promote()
    assert outcome["decision"] == "promoted", outcome
    assert registry.champion() == second


def test_a_challenger_whose_data_failed_validation_is_never_promoted(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-failed", monkeypatch)
    failed_hash = "f" * 64  # a manifest whose validation failed, recorded as validate does
    record_validation(str(pipeline.out), failed_hash, {"raw_metadata": (False, b"{}")})
    registry.register(keep, data_hash=failed_hash)
    outcome = registry.promote(first_model={"auc": 0.0})
    reason = str(outcome["reason"])
    assert outcome["decision"] == "refused"
    assert reason.startswith("the data it trained on failed validation: suite(s) raw_metadata")
    assert f"validation/manifests/{failed_hash}/raw_metadata.json" in reason
    assert registry.champion() is None


def test_a_challenger_whose_data_was_never_validated_is_refused_with_the_command(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-unvalidated", monkeypatch)
    registry.register(keep, data_hash="0" * 64)
    outcome = registry.promote(first_model={"auc": 0.0})
    assert outcome["decision"] == "refused"
    assert "never validated" in str(outcome["reason"])
    assert f"mammo validate --raw RAW --data {pipeline.out}" in str(outcome["reason"])


def test_rollback_without_a_previous_champion_is_a_clear_error(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(pipeline, "promo-no-previous", monkeypatch)
    registry.register(keep)
    registry.promote()
    with pytest.raises(PromotionError, match="replaced no earlier champion"):
        promote(rollback=True)
