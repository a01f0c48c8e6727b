"""Every command block of README.md and docs/*.md, and the test that runs it.

tests/journeys/test_docs.py extracts each command from the ```bash blocks and fails when one
is missing here or when an entry here is no longer in the docs: a documented command
changes together with the test that exercises it. A value is the test (path::name) that
runs the command as a user would, or ``EXAMPLE`` plus why no test can run it here.
"""

from __future__ import annotations

from typing import Final

EXAMPLE: Final = "example: "  # shown for a real deployment; checked for form only

JOURNEY = "tests/flows/test_promotion_journey.py::test_by_hand_the_steps_one_at_a_time_promote_as_the_nightly_does"  # noqa: E501
ROLLBACK = (
    "tests/flows/test_promotion_journey.py::test_a_rollback_sticks_through_the_next_promotion"
)
DEPLOY = "tests/flows/test_deployment.py::test_deploy_all_then_a_worker_runs_the_nightly_deployment_to_completion"  # noqa: E501
STACK = (
    "tests/flows/test_stack.py::test_status_reports_every_service_running"  # its fixture: up, down
)
PIPELINE = "tests/flows/test_pipeline.py::test_batch_prediction_writes_one_probability_per_breast"
S3_INGEST = "tests/flows/test_ingest.py::test_ingest_from_s3_to_s3"
CONFIG = "tests/tasks/test_config.py::test_flags_override_the_file_and_are_checked_the_same_way"
COMPACT = "tests/flows/test_compact.py::test_a_compaction_killed_between_its_steps_is_finished_by_mammo_compact"  # noqa: E501
DEMO = "tests/journeys/test_docs.py::test_make_targets_named_in_the_docs_exist"
HELP = "tests/journeys/test_docs.py::test_every_documented_mammo_command_parses"
SMOKE = "tests/benchmarks/test_smoke.py::"
FANOUT = "tests/benchmarks/test_fanout_smoke.py::test_fanout_smoke_runs_three_strategies_on_the_same_files"  # noqa: E501
DRIFT = "tests/flows/test_monitor.py::test_a_new_machine_and_a_pixel_shift_raise_exactly_those_findings_as_events"  # noqa: E501
MONITOR = "tests/flows/test_monitor.py::test_mammo_monitor_prints_a_completed_and_a_stopped_night_side_by_side"  # noqa: E501
AUTOMATIONS = "tests/flows/test_automations.py::test_the_command_names_both_automations"
NOTIFY_BLOCK = (
    "tests/flows/test_automations.py::test_a_saved_notification_block_can_carry_the_drift_alerts"
)
TUNE = "tests/flows/test_tune.py::test_two_trials_nest_under_one_parent_run_and_the_best_config_is_a_nightly_config"  # noqa: E501
CATALOG = "tests/tasks/test_catalog.py::test_synth_then_catalog_as_a_user_runs_them"
REMOTE = EXAMPLE + "a remote cluster, server or bucket that this machine cannot reach"

COMMANDS: Final[dict[str, str]] = {
    # README.md
    "make demo": DEMO,
    "make test": DEMO,
    "source .venv/bin/activate": HELP,
    "mammo --help": HELP,
    "mammo synth data/raw --patients 500 --positive-rate 0.18 --with-test": JOURNEY,
    "mammo ingest --raw data/raw --out data/out": JOURNEY,
    "mammo validate --raw data/raw --data data/out": JOURNEY,
    "mammo train --data data/out --epochs 10": JOURNEY,
    "mammo promote --data data/out": JOURNEY,
    "mammo promote --history": ROLLBACK,
    "mammo predict --raw data/raw --model models:/mammo-cancer@champion --out submission.csv": JOURNEY,  # noqa: E501
    "mammo run --raw s3://archive/rsna --out s3://ml/mammo": S3_INGEST,
    "mammo up / mammo status / mammo down": STACK,
    "mammo compact --out data/out": COMPACT,
    "mammo up && source .mammo/stack/env.sh": STACK,
    "MAMMO_RAW=s3://mammo/rsna prefect --no-prompt deploy --all": DEPLOY,
    "prefect deployment run 'nightly/nightly'": DEPLOY,
    # docs/configuration.md
    "mammo run --raw data/raw --config nightly.toml": CONFIG,
    "mammo run --raw data/raw --config nightly.toml --epochs 3": CONFIG,
    # docs/operations.md
    "mammo up": STACK,
    "source .mammo/stack/env.sh": STACK,
    "mammo status": STACK,
    "mammo down": STACK,
    "export MAMMO_RAW=/data/rsna MAMMO_TIMEZONE=Europe/Paris": DEPLOY,
    "mammo drift --data data/out": DRIFT,
    "mammo monitor --out data/out": MONITOR,
    'mammo drift --data data/out --resolve numeric-shift:pixel_mean:machine_id=49 --reason "new detector firmware"': DRIFT,  # noqa: E501
    "mammo automations --drift-webhook http://127.0.0.1:9000/hook --heartbeat-grace 600": AUTOMATIONS,  # noqa: E501
    "mammo automations --notify-block slack-webhook/mammo-alerts": NOTIFY_BLOCK,
    "prefect --no-prompt deploy --all": DEPLOY,
    "prefect deployment run 'nightly/nightly' --param max_patients=50 --param 'train_config={\"epochs\": 3}'": DEPLOY,  # noqa: E501
    "mammo promote --data data/out --protocol board-2026.yaml": JOURNEY,
    'mammo promote --rollback --reason "reader study, site 2"': ROLLBACK,
    "mammo predict --raw /data/rsna-test --model models:/mammo-cancer@champion --out submission.csv": PIPELINE,  # noqa: E501
    "mammo predict ... --binarize": PIPELINE,
    # docs/data-contract.md
    "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...": REMOTE,
    "export AWS_DEFAULT_REGION=eu-west-1": REMOTE,
    "export AWS_ENDPOINT_URL_S3=http://minio.internal:9000": REMOTE,
    "mammo ingest --raw s3://hospital-archive/rsna --out s3://ml-data/mammo/decoded": S3_INGEST,
    # docs/deployment.md
    "export RAY_ADDRESS=ray-head.example.internal:6379": REMOTE,
    "export RAY_AUTH_MODE=token": REMOTE,
    "export RAY_AUTH_TOKEN_PATH=/etc/mammo/ray-token": REMOTE,
    "export PREFECT_API_URL=https://prefect.example.internal/api": REMOTE,
    "export PREFECT_API_AUTH_STRING='mammo:...'": REMOTE,
    "prefect work-pool create mammo-process --type process --base-job-template infra/prefect/process-work-pool.json": DEPLOY,  # noqa: E501
    "prefect work-pool create mammo-k8s --type kubernetes --base-job-template infra/prefect/kubernetes-work-pool.json": REMOTE,  # noqa: E501
    "export MLFLOW_TRACKING_URI=http://mlflow.example.internal:5000": REMOTE,
    "mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://CHANGE-ME-bucket/mlflow --host 0.0.0.0 --port 5000": REMOTE,  # noqa: E501
    "export AWS_ENDPOINT_URL_S3=https://minio.example.internal": REMOTE,
    "export MAMMO_TRAIN_STORAGE=s3://CHANGE-ME-bucket/mammo/ray-results": REMOTE,
    # docs/benchmarks.md: each benchmark's smoke version runs in the suite, and the full
    # runs (minutes to hours) are `make bench`, recorded in benchmarks/results/
    "make bench": SMOKE + "test_run_all_smoke_runs_the_chosen_benchmarks_and_gathers_them",
    "python -m benchmarks.run_all --smoke": SMOKE
    + "test_run_all_smoke_runs_the_chosen_benchmarks_and_gathers_them",
    "python -m benchmarks.run_all --only decode_ceiling ingest_vs_ceiling": SMOKE
    + "test_run_all_smoke_runs_the_chosen_benchmarks_and_gathers_them",
    "python -m benchmarks.decode_ceiling": SMOKE
    + "test_decode_ceiling_smoke_times_every_decoder_on_every_case",
    "python -m benchmarks.decode_ceiling --repeats 9 --cores 16": SMOKE
    + "test_decode_ceiling_smoke_times_every_decoder_on_every_case",
    "python -m benchmarks.drift_false_alarms": SMOKE
    + "test_drift_false_alarms_smoke_counts_every_night",
    "python -m benchmarks.fast_decode": SMOKE
    + "test_fast_decode_smoke_compares_both_modes_on_every_case",
    "python -m benchmarks.peer_baseline --patients 20": SMOKE
    + "test_peer_baseline_writes_one_8_bit_1024x512_png_per_file",
    "python -m benchmarks.ingest_vs_ceiling --patients 20": SMOKE + "test_ingest_vs_ceiling_smoke",
    "python -m benchmarks.scale_count --images 5000": SMOKE + "test_scale_count_smoke",
    "python -m benchmarks.scale_count --images 54706": SMOKE + "test_scale_count_smoke",
    "python -m benchmarks.incremental --images 5000": SMOKE + "test_incremental_smoke",
    "python -m benchmarks.train_input --patients 40 --epochs 3": SMOKE + "test_train_input_smoke",
    "python -m benchmarks.model_quality": SMOKE + "test_model_quality_smoke",
    "python -m benchmarks.model_quality --recipes baseline resnet18 --epochs 4": SMOKE
    + "test_model_quality_smoke",
    "python -m benchmarks.fanout --images 2000": FANOUT,
    "python -m benchmarks.fanout --images 2000 --repeats 3": FANOUT,
    "python -m benchmarks.fanout --images 200 --image-size full": FANOUT,
    "python -m benchmarks.fanout --images 2000 --shard-size 32": FANOUT,
    # docs/training.md
    "mammo tune --data data/out --trials 8 --config nightly.toml --out-config best.toml": TUNE,
    "mammo run --raw data/raw --config best.toml": TUNE,
    # docs/datasets.md
    "mammo synth data/cbis --layout cbis-ddsm": CATALOG,
    "mammo catalog --raw data/cbis --out data/catalog": CATALOG,
    # docs/decoding.md
    "mammo ingest --raw data/raw --out data/out-fast --decode fast": "tests/flows/test_ingest.py::test_mammo_ingest_decode_fast_reads_jpeg2000_at_the_resolution_the_output_needs",  # noqa: E501
    # docs/security.md
    ".venv/bin/pip-audit -r constraints.txt --no-deps --disable-pip": EXAMPLE
    + "needs PyPI's advisory database (make audit)",
}
