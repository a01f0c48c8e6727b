"""Promotion as a user meets it: the `mammo` commands as subprocesses, one by one, against a
real `mlflow server` on 127.0.0.1 (and the session's Prefect server and Ray cluster).

- by hand: ingest -> train -> promote (never validated) -> validate (fails, then passes with
  the band of this enriched set) -> promote (the shipped protocol: insufficient evidence on
  this small holdout) -> promote --protocol (promoted, with its card) -> predict;
- a rollback sticks: the withdrawn version loses @challenger and is refused if put back;
- a challenger that passes every overall rule but is broken on one site is refused, the site
  named;
- a promotion during a batch prediction does not mix versions in one submission.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from mammo import contract as c
from mammo.features import MetadataEncoder
from mammo.inference import BundleConfig, ModelBundle
from mammo.models import ModelSpec, create_model
from tasks import tracking
from tasks.lineage import manifest_hash
from tests.flows.conftest import Pipeline
from tests.flows.test_promote import Registry, invert, keep
from tests.support.mlflow_server import MlflowServer
from tests.support.protocols import protocol_file
from tests.support.servers import create_bucket

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SOURCE = "journey"  # the model trained by hand
TRAIN = ["--image-rows", "256", "--image-cols", "128", "--epochs", "8", "--batch-size", "8"]


@dataclass
class Journey:
    raw: Path
    out: Path
    home: Path
    server: MlflowServer
    env: dict[str, str]
    protocol: str  # the small-holdout protocol
    trained: subprocess.CompletedProcess[str] | None = None
    validated: bool = False

    def mammo(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "mammo"), *args],
            env={**self.env, **env},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=900,
        )

    def client(self) -> MlflowClient:
        return MlflowClient(self.server.url, registry_uri=self.server.url)

    def pipeline(self) -> Pipeline:
        return Pipeline(self.raw, self.out, self.home, self.server.url, {}, self.protocol)

    def validate(self) -> str:
        """`mammo validate` with the positive-rate band of this enriched set (25 %)."""
        band = ["--positive-rate-band", "0", "0.5"]
        done = ok(self.mammo("validate", "--raw", str(self.raw), "--data", str(self.out), *band))
        self.validated = True
        return done

    def registry(self, name: str, monkeypatch: pytest.MonkeyPatch) -> Registry:
        """Versions of ``name`` copied from the hand-trained model, on validated data."""
        if not self.validated:
            self.validate()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.server.url)
        return Registry(self.pipeline(), name, monkeypatch, source=SOURCE)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


def failed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def journey(
    pipeline: Pipeline,
    prefect_server: str,
    ray_cluster: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Journey]:
    """A real `mlflow server`; `mammo ingest` and `mammo train` run by hand on the pipeline's
    synthetic RAW (40 patients, 25 % positive breasts)."""
    root = tmp_path_factory.mktemp("journey")
    server = MlflowServer(root / "mlflow")
    server.start()
    home = root / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MAMMO_"))},
        "MLFLOW_TRACKING_URI": server.url,
        "PREFECT_API_URL": prefect_server,
        "RAY_ADDRESS": str(ray_cluster["address"]),
        "MAMMO_HOME": str(home),
        "MAMMO_MODEL_NAME": SOURCE,
        "MAMMO_RAY_DASHBOARD": "0",
    }
    try:
        out = root / "out"
        # The promotion mechanics are this module's subject, not the hand-trained model's
        # quality (the floors are tested in tests/mammo/test_promotion.py): on this 10-breast,
        # 2-positive holdout one misranked positive puts the AUC's lower bound under any floor.
        protocol = protocol_file(root, first_model={"auc": 0.0})
        journey = Journey(pipeline.raw, out, home, server, env, protocol)
        ingest = ["ingest", "--raw", str(pipeline.raw), "--out", str(out)]
        ok(journey.mammo(*ingest, "--rows", "512", "--cols", "256", "--shard-size", "64"))
        journey.trained = journey.mammo("train", "--data", str(out), *TRAIN)
        ok(journey.trained)
        yield journey
    finally:
        server.stop()


def test_by_hand_the_steps_one_at_a_time_promote_as_the_nightly_does(journey: Journey) -> None:
    raw, out, small = str(journey.raw), str(journey.out), journey.protocol
    assert journey.trained is not None
    assert f"models:/{SOURCE}/1 (alias @challenger)" in journey.trained.stdout

    never = ok(journey.mammo("promote", "--data", out, "--protocol", small))
    assert "Promotion: refused" in never
    assert "never validated" in never and f"mammo validate --raw RAW --data {out}" in never

    # the default band (0.001 to 0.2) rejects this enriched set: failed, with the report named
    failure = failed(journey.mammo("validate", "--raw", raw, "--data", out))
    assert "positive" in failure
    refused = ok(journey.mammo("promote", "--data", out, "--protocol", small))
    assert "failed validation" in refused and "validation/manifests/" in refused

    journey.validate()
    shipped = ok(journey.mammo("promote", "--data", out))
    assert "Promotion: insufficient evidence" in shipped
    assert "the protocol needs >= 100 breasts and >= 20 positive" in shipped
    assert "protocol mammo-default v1" in shipped

    promoted = ok(journey.mammo("promote", "--data", out, "--protocol", small))
    assert "Promotion: promoted" in promoted and "first model, every floor cleared" in promoted
    card = next(line.split()[-1] for line in promoted.splitlines() if "model_card " in line)
    assert Path(card).read_text().startswith(f"# Model card: {SOURCE} version 1")
    assert "**promoted**" in Path(card).read_text()
    champion = journey.client().get_model_version_by_alias(SOURCE, "champion")
    assert champion.version == "1"

    decision = json.loads(Path(out, c.REGISTRY_DIR, SOURCE, "v1", "decision.json").read_text())
    assert decision["schema"] == "mammo.promotion-decision/1"
    assert decision["protocol"]["name"] == "tests-small-holdout"
    assert decision["data"]["hash"] == manifest_hash(out)
    evaluation = decision["evaluations"]["challenger"]
    low, high = evaluation["auc"]["delong"]
    assert low <= evaluation["auc"]["value"] <= high
    run_id = decision["challenger"]["run_id"]
    logged = {a.path for a in journey.client().list_artifacts(run_id, "promotion")}
    assert "promotion/decision.json" in logged

    submission = out + "/submission.csv"
    ok(
        journey.mammo(
            "predict", "--raw", raw, "--model", f"models:/{SOURCE}@champion", "--out", submission
        )
    )
    assert json.loads(Path(submission + ".json").read_text())["model_uri"] == f"models:/{SOURCE}/1"

    # the same command to S3 (a real endpoint): the CSV and its record land under the key
    create_bucket("journey-submissions")
    s3_out = "s3://journey-submissions/nightly/submission.csv"
    model = f"models:/{SOURCE}@champion"
    ok(journey.mammo("predict", "--raw", raw, "--model", model, "--out", s3_out))
    s3 = boto3.client("s3")
    body = s3.get_object(Bucket="journey-submissions", Key="nightly/submission.csv")["Body"]
    assert body.read().decode() == Path(submission).read_text()
    record = s3.get_object(Bucket="journey-submissions", Key="nightly/submission.csv.json")
    assert json.loads(record["Body"].read())["model_uri"] == f"models:/{SOURCE}/1"


def test_a_rollback_sticks_through_the_next_promotion(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = journey.registry("journey-rollback", monkeypatch)
    first = registry.register(keep)
    env = {"MAMMO_MODEL_NAME": registry.name}
    promote = ["promote", "--data", str(journey.out), "--protocol", journey.protocol]
    assert "Promotion: promoted" in ok(journey.mammo(*promote, **env))
    second = registry.register(keep)
    assert "Promotion: promoted" in ok(journey.mammo(*promote, **env))
    assert registry.champion() == second

    rolled = ok(journey.mammo("promote", "--rollback", "--reason", "reader study", **env))
    assert "rolled back" in rolled and registry.champion() == first
    assert "mammo.rolled_back" in registry.tags(second)
    # @challenger moved off the withdrawn version: the next promotion has nothing to judge
    assert "no @challenger version" in failed(journey.mammo(*promote, **env))
    # an operator points @challenger at it again: still never promoted automatically
    registry.client.set_registered_model_alias(registry.name, tracking.CHALLENGER, second)
    again = ok(journey.mammo(*promote, **env))
    assert "Promotion: refused" in again and "rolled back" in again
    assert registry.champion() == first

    history = ok(journey.mammo("promote", "--history", **env)).splitlines()
    assert history[1].split()[:2] == [second, "challenger"] and "[rolled back]" in history[1]
    assert any(line.split()[:2] == [first, "champion"] for line in history)


def break_site(good: ModelBundle, site: int, sites: tuple[int, ...]) -> ModelBundle:
    """The good model fused with site_id, its logit lowered by 1,000 on ``site``: probability
    exactly 0 there (every breast tied: AUC 0.5, sensitivity 0), unchanged elsewhere."""
    encoder = MetadataEncoder(columns=(c.SITE_ID,), site_ids=sites)
    spec = ModelSpec.from_dict({**good.config.spec, "metadata_features": encoder.n_features})
    model = create_model(good.config.model, spec)
    model.backbone.load_state_dict(good.model.backbone.state_dict())
    hidden = spec.metadata_hidden
    with torch.no_grad():
        first, second = model.metadata_mlp[0], model.metadata_mlp[2]  # type: ignore[index]
        for layer in (first, second):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, encoder.feature_names.index(f"{c.SITE_ID}={site}")] = 1.0
        second.weight[0, 0] = 1.0  # unit 0 is 1 on the broken site, 0 elsewhere
        head, old = model.head[-1], good.model.head[-1]
        head.weight.zero_()
        head.weight[:, : old.weight.shape[1]] = old.weight
        head.weight[0, old.weight.shape[1]] = -1000.0
        head.bias.copy_(old.bias)
    assert head.weight.shape[1] == old.weight.shape[1] + hidden
    config = BundleConfig(
        **{**good.config.__dict__, "spec": spec.to_dict(), "encoder": encoder.to_dict()}
    )
    return ModelBundle(model, config)


def test_a_challenger_worse_on_one_site_is_refused_naming_the_site(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = journey.registry("journey-subgroup", monkeypatch)
    champion = registry.register(keep)
    env = {"MAMMO_MODEL_NAME": registry.name}
    small = ["promote", "--data", str(journey.out), "--protocol", journey.protocol]
    assert "Promotion: promoted" in ok(journey.mammo(*small, **env))

    decision = json.loads(
        Path(journey.out, c.REGISTRY_DIR, registry.name, "v1", "decision.json").read_text()
    )
    held_out = [r for r in decision["subgroups"] if r["column"] == c.SITE_ID]
    judged = max(held_out, key=lambda r: (r["n_positive"], r["n_breasts"]))
    assert 0 < judged["n_positive"] < judged["n_breasts"], held_out  # both classes there
    site = int(judged["value"])
    manifest = pd.read_parquet(journey.out / c.MANIFEST_FILE)
    sites = tuple(sorted(int(s) for s in manifest[c.SITE_ID].unique()))
    broken = registry.register_bundle(break_site(copy.deepcopy(registry.good), site, sites))

    # only the subgroup rule may refuse: on this holdout (2 positive breasts) the broken site
    # holds the positives, so the overall operating-point rules are turned off and the primary
    # margin loosened; every site with a positive breast is judged
    protocol = protocol_file(
        journey.home / "subgroup",
        primary={"resamples": 200, "margin": 0.95},
        operating_point={"sensitivity_margin": None, "specificity_margin": None},
        subgroups={"columns": [c.SITE_ID], "min_breasts": 2, "min_positive_breasts": 1},
    )
    done = ok(journey.mammo("promote", "--data", str(journey.out), "--protocol", protocol, **env))
    assert "Promotion: refused" in done
    assert f"site_id={site} auc -" in done and f"site_id={site} sensitivity -" in done
    failed_rules = [line for line in done.splitlines() if line.strip().startswith("FAIL")]
    assert len(failed_rules) == 1 and "subgroups" in failed_rules[0], done
    assert registry.champion() == champion and broken != champion


def test_a_promotion_during_a_batch_prediction_does_not_mix_versions(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = journey.registry("journey-batch", monkeypatch)
    versions = [registry.register(keep), registry.register(invert)]
    env = {"MAMMO_MODEL_NAME": registry.name}
    out = journey.home / "batch"
    pinned = {}
    for version in versions:  # what each version alone writes
        target = out / f"v{version}.csv"
        ok(
            journey.mammo(
                "predict",
                "--raw",
                str(journey.raw),
                "--model",
                f"models:/{registry.name}/{version}",
                "--out",
                str(target),
                **env,
            )
        )
        pinned[version] = pd.read_csv(target)
    assert not pinned[versions[0]].equals(pinned[versions[1]])

    stop = threading.Event()

    def flip() -> None:  # the champion alias moves back and forth all through the run
        client, turn = registry.client, 0
        while not stop.is_set():
            client.set_registered_model_alias(registry.name, "champion", versions[turn % 2])
            turn += 1
            stop.wait(0.2)

    registry.client.set_registered_model_alias(registry.name, "champion", versions[0])
    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        target = out / "moving.csv"
        model = f"models:/{registry.name}@champion"
        ok(
            journey.mammo(
                "predict", "--raw", str(journey.raw), "--model", model, "--out", str(target), **env
            )
        )
    finally:
        stop.set()
        flipper.join()
    used = json.loads(Path(f"{target}.json").read_text())["model_uri"].rsplit("/", 1)[-1]
    assert used in versions
    pd.testing.assert_frame_equal(pd.read_csv(target), pinned[used])
