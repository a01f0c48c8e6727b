"""Faults in training, registration and promotion, injected for real.

- A Ray Train worker is SIGKILLed after a checkpoint: Ray restarts the worker group from that
  checkpoint (``FailureConfig(max_failures=MAMMO_TRAIN_MAX_FAILURES)``) and the flow finishes.
- The whole training process group is SIGKILLed; the same command, run again, finds the
  unfinished MLflow run by ``mammo.run_key`` and resumes the Ray run from its checkpoint.
- A real ``mlflow server`` is stopped, or cut off by a proxy, while a model is registered;
  a proxy loses the server's answer after it created the version (MLflow's client retries
  the POST). Registration fails clearly, then converges on one version with its alias.
- Promotions race on the real Prefect global concurrency limit; the champion is moved while
  a promotion waits for the lock (compare-and-set).

Which epochs were trained, and how often, is read from the per-epoch metrics that rank 0 logs
to MLflow while it trains (``train_loss`` at step = epoch): an epoch trained twice appears
twice. The model's own history (``history.json``) comes from the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar
from uuid import UUID

import mlflow
import psutil
import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.demo import SPLIT
from flows.promote import promote
from flows.train import register_model, train
from tasks import tracking
from tasks.lineage import validation_fact
from tasks.registry import promotion_lock
from tasks.settings import Settings
from tasks.train import TrainOutcome, train_model
from tests.flows.conftest import Pipeline
from tests.flows.test_promote import Registry, invert, keep
from tests.support.mlflow_server import FaultyProxy, MlflowServer
from tests.support.protocols import protocol_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of registered checkpoints
CREATE_VERSION = b"POST /api/2.0/mlflow/model-versions/create"


def training_config(epochs: int) -> dict[str, Any]:
    """Small and fast (about 1-2 s an epoch on 2 cores), never stopped early."""
    return {
        "image_rows": 128,
        "image_cols": 64,
        "epochs": epochs,
        "batch_size": 8,
        "num_workers": 2,
        "early_stopping_patience": epochs,
    }


# --- helpers -----------------------------------------------------------------------------
class Background(Generic[T]):
    """``work()`` in a thread; :meth:`result` re-raises what it raised."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._value: list[T] = []
        self._error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], T]) -> None:
        try:
            self._value.append(work())
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error.append(exc)

    def alive(self) -> bool:
        """True while it runs; once it has ended, what it raised is raised here."""
        if self.thread.is_alive():
            return True
        if self._error:
            raise self._error[0]
        return False

    def result(self, timeout: float = 600) -> T:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"still running after {timeout} s")
        if self._error:
            raise self._error[0]
        return self._value[0]


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], bool]
) -> T:
    """Poll ``probe`` until it returns something; fail if ``alive()`` turns false first."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if not alive():
            raise AssertionError(f"the work ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(0.2)


def flow_run_id(state: Any) -> UUID:
    """The flow run of a final state (flows called with ``return_state=True``)."""
    run_id: UUID | None = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


@contextlib.contextmanager
def mlflow_uris_kept() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs, and the variables that
    ``mlflow.set_tracking_uri`` writes, as they were before the block."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {name: os.environ.get(name) for name in names}
    uris = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uris[0])
        mlflow.set_registry_uri(uris[1])
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def mlflow_uris_restored() -> Iterator[None]:
    """tasks.tracking.client points MLflow's globals at a test's store: undo it after."""
    with mlflow_uris_kept():
        yield


@pytest.fixture
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MAMMO_HOME and a SQLite MLflow store of this test."""
    home = tmp_path / "home"
    uri = f"sqlite:///{home}/mlflow.db"
    monkeypatch.setenv("MAMMO_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def checkpointed_epoch(storage: Path) -> int | None:
    """The epoch of the latest checkpoint Ray Train registered for the one run under
    ``storage`` (its snapshot file), or None before the first."""
    for snapshot in storage.glob(f"*/{SNAPSHOT}"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, json.JSONDecodeError):  # being rewritten
            return None
        return None if latest is None else int(latest["metrics"]["epoch"])
    return None


def descendants(root: psutil.Process) -> list[psutil.Process]:
    try:
        return list(root.children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def train_workers(root: psutil.Process) -> list[psutil.Process]:
    """The RayTrainWorker actor processes started under ``root`` (Ray sets their title)."""
    found = []
    for process in descendants(root):
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:  # exited meanwhile
            continue
    return found


def epochs_logged(client: MlflowClient, run_id: str) -> Counter[int]:
    """How many times each epoch was trained: rank 0 logs ``train_loss`` once per epoch."""
    return Counter(int(m.step) for m in client.get_metric_history(run_id, "train_loss"))


def history_epochs(tracking_uri: str, run_id: str) -> list[int]:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="history.json", tracking_uri=tracking_uri
    )
    return [int(record["epoch"]) for record in json.loads(Path(path).read_text())]


def assert_resumed(counts: Counter[int], epochs: int, checkpointed: int) -> None:
    """Every epoch trained; those up to the checkpoint at the kill exactly once (a restart
    from scratch would train epoch 0 again)."""
    assert sorted(counts) == list(range(epochs)), counts
    assert all(counts[e] == 1 for e in range(checkpointed + 1)), (checkpointed, counts)
    assert checkpointed < epochs - 2, f"killed too late to prove anything: epoch {checkpointed}"


# --- 1. a training worker killed ------------------------------------------------------------
def test_a_killed_training_worker_is_replaced_and_training_resumes_from_its_checkpoint(
    pipeline: Pipeline, ray_cluster: dict[str, object], own_store: str
) -> None:
    epochs = 10
    config = training_config(epochs)
    storage = Path(Settings.from_env().train_storage)
    run = Background(lambda: train(str(pipeline.out), config, SPLIT, register_challenger=False))

    checkpointed = wait_for("checkpoint", lambda: checkpointed_epoch(storage), 300, run.alive)
    me = psutil.Process()
    workers = train_workers(me)
    assert len(workers) == 2, workers
    workers[0].kill()  # SIGKILL one of the two workers
    old = {p.pid for p in workers}
    replaced = wait_for(
        "replacement worker",
        lambda: [p for p in train_workers(me) if p.pid not in old] or None,
        120,
        run.alive,
    )
    result = run.result()

    assert len(replaced) >= 1
    client = MlflowClient(own_store)
    mlflow_run = client.get_run(result["run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert (storage / mlflow_run.data.tags[tracking.RAY_RUN] / SNAPSHOT).exists()
    assert_resumed(epochs_logged(client, result["run_id"]), epochs, checkpointed)
    assert history_epochs(own_store, result["run_id"]) == list(range(epochs))
    assert result["metrics"]["val_n_breasts"] > 0


# --- 2. the whole training process killed, then started again -------------------------------
TRAIN_COMMAND = (
    "import json, sys; from flows.train import train; "
    "train(sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), "
    "register_challenger=False)"
)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of ``process``, and any descendant that left it."""
    try:
        children = descendants(psutil.Process(process.pid))
    except psutil.NoSuchProcess:  # it has exited; members of its group may not have
        children = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(children, timeout=30)


def test_a_killed_training_run_resumes_its_mlflow_run_and_checkpoint_when_started_again(
    pipeline: Pipeline, prefect_server: str, tmp_path: Path
) -> None:
    epochs = 6
    home = tmp_path / "home"
    uri = f"sqlite:///{home}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        MAMMO_HOME=str(home),
        MLFLOW_TRACKING_URI=uri,
        PREFECT_API_URL=prefect_server,
        MAMMO_RAY_NUM_CPUS="2",
        MAMMO_RAY_DASHBOARD="0",
        MAMMO_RAY_OBJECT_STORE_MB="256",
    )
    argv = [
        sys.executable,
        "-c",
        TRAIN_COMMAND,
        str(pipeline.out),
        json.dumps(training_config(epochs)),
        json.dumps(SPLIT),
    ]
    storage = home / "ray_results"

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    first = start(tmp_path / "first.log")
    try:
        checkpointed = wait_for(
            "checkpoint", lambda: checkpointed_epoch(storage), 300, lambda: first.poll() is None
        )
    finally:
        kill_group(first)
    assert first.returncode == -signal.SIGKILL

    second = start(tmp_path / "second.log")
    try:
        assert second.wait(600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        kill_group(second)
    log = (tmp_path / "second.log").read_text()
    assert re.search(r"MLflow run \w+ \(resumed\)", log), log[-3000:]
    resumed_at = re.search(r"rank 0 resumes at epoch (\d+)", log)  # the worker's own log
    assert resumed_at is not None and int(resumed_at.group(1)) > checkpointed, log[-3000:]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mammo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]  # the same run, resumed
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert [p.name for p in storage.iterdir()] == [run.data.tags[tracking.RAY_RUN]]
    assert_resumed(epochs_logged(client, run.info.run_id), epochs, checkpointed)
    assert history_epochs(uri, run.info.run_id) == list(range(epochs))


# --- 3. the MLflow server down while a model is registered -----------------------------------
@dataclass(frozen=True)
class Served:
    server: MlflowServer
    settings: Settings
    outcome: TrainOutcome


@pytest.fixture(scope="module")
def served(
    pipeline: Pipeline, ray_cluster: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A real ``mlflow server`` (SQLite, proxied artifacts) and a model trained against it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(root / "server")
    server.start()
    try:
        settings = Settings.from_env(
            {**os.environ, "MAMMO_HOME": str(root / "home"), "MLFLOW_TRACKING_URI": server.url}
        )
        with mlflow_uris_kept():
            outcome = train_model.fn(str(pipeline.out), training_config(2), SPLIT, settings)
        yield Served(server, settings, outcome)
    finally:
        server.stop()


def versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[str]:
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return sorted(str(v.version) for v in found)


def challenger(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, tracking.CHALLENGER).version)


def test_registration_with_the_mlflow_server_down_fails_clearly_and_registers_once_after_restart(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail now, not in minutes
    server, outcome = served.server, served.outcome
    settings = replace(served.settings, model_name="fault-server-down")
    client = MlflowClient(server.url, registry_uri=server.url)
    tags = {"mammo.run_key": outcome.run_key}

    server.stop()
    try:
        with pytest.raises(tracking.RegistryError) as direct:
            tracking.register_version(
                client, settings.model_name, outcome.model_uri, outcome.run_id, tags
            )
        with pytest.raises(tracking.RegistryError, match=re.escape(server.url)):
            register_model.fn(outcome, settings, validation_fact(outcome.data, outcome.data_hash))
    finally:
        server.start()  # same port, same store
    message = str(direct.value)
    assert settings.model_name in message and outcome.run_id in message
    assert f"127.0.0.1:{server.port}" in message and "retrying is safe" in message

    assert versions_of_run(client, settings.model_name, outcome.run_id) == []  # nothing half-made
    registered = register_model.fn(
        outcome, settings, validation_fact(outcome.data, outcome.data_hash)
    )
    versions = versions_of_run(client, settings.model_name, outcome.run_id)
    assert versions == [registered["version"]]
    assert challenger(client, settings.model_name) == registered["version"]
    version = client.get_model_version(settings.model_name, registered["version"])
    assert version.tags["mammo.run_key"] == outcome.run_key
    assert version.tags["mammo.validation"] == "passed"


def test_an_answer_lost_after_the_server_created_the_version_leaves_one_version(
    served: Served,
) -> None:
    proxy = FaultyProxy(served.server.port)
    try:
        client = MlflowClient(proxy.url, registry_uri=proxy.url)
        name, outcome = "fault-lost-answer", served.outcome
        proxy.lose_answer(CREATE_VERSION)  # MLflow's client retries: the server creates again
        version = tracking.register_version(
            client, name, outcome.model_uri, outcome.run_id, {"mammo.run_key": outcome.run_key}
        )
        assert [line.split(b" HTTP")[0] for line in proxy.lost] == [CREATE_VERSION]
        assert versions_of_run(client, name, outcome.run_id) == [str(version.version)]
        assert challenger(client, name) == str(version.version)
        again = tracking.register_version(
            client, name, outcome.model_uri, outcome.run_id, {"mammo.run_key": outcome.run_key}
        )
        assert again.version == version.version  # a retry reuses it
    finally:
        proxy.close()


@flow(name="register-only")
def register_only(outcome: TrainOutcome, settings: Settings) -> dict[str, str]:
    return register_model(outcome, settings, validation_fact(outcome.data, outcome.data_hash))


def test_the_register_task_retries_through_a_short_outage_of_the_mlflow_server(
    served: Served, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    proxy = FaultyProxy(served.server.port)
    try:
        settings = replace(
            served.settings, mlflow_tracking_uri=proxy.url, model_name="fault-outage"
        )
        proxy.cut()
        run = Background(lambda: register_only(served.outcome, settings, return_state=True))
        wait_for("refused connection", lambda: proxy.refused or None, 60, run.alive)
        proxy.restore()  # before the task's first retry, 10 s later
        state = run.result()
        registered = state.result()
        client = MlflowClient(served.server.url, registry_uri=served.server.url)
        assert versions_of_run(client, "fault-outage", served.outcome.run_id) == [
            registered["version"]
        ]
        assert challenger(client, "fault-outage") == registered["version"]
        with get_client(sync_client=True) as prefect:
            task_runs = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
            )
        assert [(t.name.rsplit("-", 1)[0], t.run_count) for t in task_runs] == [
            ("register-model", 2)
        ]
    finally:
        proxy.close()


# --- 4. promotions racing -------------------------------------------------------------------
LOCK_CODE = promotion_lock.__wrapped__.__code__  # type: ignore[attr-defined]
VERSION_KEYS = ("challenger", "champion_before", "champion")


def at_the_lock(thread: threading.Thread) -> bool | None:
    """True while ``thread`` is inside tasks.registry.promotion_lock, acquiring it (once
    acquired, the generator is suspended and off the stack); None otherwise."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is LOCK_CODE:
            return True
        frame = frame.f_back
    return None


def start_promotion(registry: Registry) -> Background[Any]:
    """A promote flow in a thread, returning its final state (for the flow run id)."""
    data = str(registry.pipeline.out)
    protocol = protocol_file(registry.pipeline.home / "protocols" / registry.name)
    return Background(lambda: promote(data=data, protocol=protocol, return_state=True))


def finish(runs: list[Background[Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The final states of promote flows, and their outcomes with versions as strings."""
    states = [run.result() for run in runs]
    outcomes = [
        {k: str(v) if k in VERSION_KEYS and v is not None else v for k, v in s.result().items()}
        for s in states
    ]
    return states, outcomes


def wait_blocked(runs: list[Background[Any]]) -> None:
    for run in runs:
        wait_for(
            "promotion at the lock", functools.partial(at_the_lock, run.thread), 300, run.alive
        )


def decisions_recorded(states: list[Any]) -> list[str]:
    """The decision of each promote flow run, from its Prefect markdown artifact."""
    ids = [flow_run_id(s) for s in states]
    with get_client(sync_client=True) as prefect:
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["model-promotion"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=ids),
            )
        )
    by_run = {a.flow_run_id: str(a.description).rsplit(": ", 1)[-1] for a in artifacts}
    return [by_run.get(i, "missing") for i in ids]


def champion_with_a_promoted_record(registry: Registry, compared_to: str) -> str:
    """The one champion; its own record says it was promoted over ``compared_to``."""
    champion = registry.champion()
    assert champion is not None  # never none
    tags = registry.tags(champion)
    assert tags["mammo.promotion.decision"] == "promoted", tags
    assert tags["mammo.promotion.compared_to"] == compared_to
    assert tags["mammo.previous_champion"] == compared_to
    return champion


def with_a_champion(
    pipeline: Pipeline, name: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Registry, str]:
    """A registered model whose first version (a poor one) is the champion."""
    registry = Registry(pipeline, name, monkeypatch)
    first = registry.register(invert)
    assert registry.promote(first_model={"auc": 0.0})["decision"] == "promoted"
    return registry, first


def test_two_promotions_of_one_challenger_at_once_promote_it_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, first = with_a_champion(pipeline, "race-same", monkeypatch)
    better = registry.register(keep)

    with promotion_lock(registry.name):  # both compare against `first`, then queue here
        runs = [start_promotion(registry) for _ in range(2)]
        wait_blocked(runs)
    states, outcomes = finish(runs)

    assert sorted(o["decision"] for o in outcomes) == ["promoted", "unchanged"], outcomes
    assert all(o["champion_before"] == first for o in outcomes if o["decision"] == "promoted")
    assert champion_with_a_promoted_record(registry, first) == better
    assert sorted(decisions_recorded(states)) == ["promoted", "unchanged"]


def test_two_challengers_racing_leave_one_champion_and_the_loser_refused(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, first = with_a_champion(pipeline, "race-two", monkeypatch)
    a = registry.register(keep)

    with promotion_lock(registry.name):
        runs = [start_promotion(registry)]
        wait_blocked(runs)  # compared `a` with `first`
        b = registry.register(keep)  # @challenger moves to b
        runs.append(start_promotion(registry))
        wait_blocked(runs)
    states, finished = finish(runs)
    outcomes = {o["challenger"]: o for o in finished}

    assert set(outcomes) == {a, b}
    assert all(o["champion_before"] == first for o in outcomes.values())
    winner = champion_with_a_promoted_record(registry, first)
    loser = ({a, b} - {winner}).pop()
    assert outcomes[winner]["decision"] == "promoted"
    assert outcomes[loser]["decision"] == "refused"
    assert "champion changed" in str(outcomes[loser]["reason"])
    assert registry.tags(loser)["mammo.promotion.decision"] == "refused"
    assert sorted(decisions_recorded(states)) == ["promoted", "refused"]


def test_a_champion_moved_during_the_comparison_refuses_the_promotion(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, first = with_a_champion(pipeline, "race-moved", monkeypatch)
    other = registry.register(keep)
    candidate = registry.register(keep)

    with promotion_lock(registry.name):
        run = start_promotion(registry)
        wait_blocked([run])  # compared `candidate` with `first`; waits for the lock
        # what a rollback or an operator would do, holding the same lock
        registry.client.set_registered_model_alias(registry.name, tracking.CHAMPION, other)
    _, (outcome,) = finish([run])

    assert outcome["champion_before"] == first
    assert outcome["decision"] == "refused", outcome
    assert "champion changed" in str(outcome["reason"])
    assert registry.champion() == other
    tags = registry.tags(candidate)
    assert tags["mammo.promotion.decision"] == "refused"
    assert "champion changed" in tags["mammo.promotion.reason"]
