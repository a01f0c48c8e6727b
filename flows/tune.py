"""Hyperparameter search: trials of the training task over the [tune] space, the best one
written as a nightly configuration file.

mammo tune --data OUT --trials 8 --config nightly.toml --out-config best.toml
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from mammo import tags as t
from mammo.search import TuneSettings, TuningError, apply_sample, best_trial, trial_table
from tasks import tracking
from tasks.config import load_config, write_config
from tasks.lineage import manifest_hash
from tasks.settings import Settings, default_out
from tasks.storage import absolute_uri
from tasks.tune import TrialJob, record_best, run_search, search_run


def default_tuned_config() -> str:
    """Where the best configuration goes when no --out-config is given: $MAMMO_HOME/tuned.toml."""
    return str(Settings.from_env().home / t.TUNED_CONFIG)


@flow(name="tune")
def tune(
    data: str = "",
    trials: int | None = None,
    train_config: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    config: str | None = None,
    out_config: str | None = None,
) -> dict[str, Any]:
    """Run the search of [tune] (``trials`` overrides its count) on the manifest under ``data``.

    Each trial trains with the [train] values of ``config`` and ``train_config`` under its
    sample; the file written keeps every section of ``config`` and holds the best trial's
    [train] values, so ``mammo run --config`` takes it as it is.
    """
    settings = Settings.from_env()
    data = absolute_uri(data or default_out())
    out_config = absolute_uri(out_config or default_tuned_config())
    night = load_config(config)
    search = TuneSettings(**(night.merged("tune", {"trials": trials}) or {}))
    train_values = night.merged("train", train_config) or {}
    split_values = night.merged("split", split) or {}
    tags = {
        t.DATA: data,
        t.DATA_HASH: manifest_hash(data),
        t.GIT_COMMIT: tracking.git_commit(),
        t.PREFECT_FLOW_RUN_ID: str(flow_run.id),
    }
    with search_run(settings, search, tags) as parent_id:
        name = f"tune-{parent_id[:12]}"
        tracking.client(settings).set_tag(parent_id, t.TUNE_EXPERIMENT, name)
        lineage = {t.PARENT_RUN_ID: parent_id, t.PREFECT_FLOW_RUN_ID: tags[t.PREFECT_FLOW_RUN_ID]}
        job = TrialJob(
            data, train_values, split_values, settings, lineage, search.metric,
            search.max_concurrent_trials,
        )  # fmt: skip
        results = run_search(job, search, name)
        best = best_trial(results, search.mode)
        if best is None:
            errors = sorted({r.error for r in results if r.error}) or ["none reported it"]
            raise TuningError(f"no trial produced {search.metric}: {errors[0]}")
        sections = {**night.sections, "train": apply_sample(train_values, best.values)}
        if split_values:
            sections["split"] = split_values
        text = write_config(out_config, sections)
        record_best(settings, parent_id, search.metric, best, text)
    return {
        "parent_run_id": parent_id,
        "table": trial_table(results, search.metric, best),
        "metric": search.metric,
        "best": {"trial": best.trial, "metric": best.metric, "run_id": best.run_id},
        "out_config": out_config,
    }


if __name__ == "__main__":
    from flows.cli import main

    main(["tune", *__import__("sys").argv[1:]])
