"""The pipeline's own progress metrics appear beside Ray's on the node's Prometheus endpoint.

Counters (images decoded, quarantined) accumulate for the life of the cluster; gauges
(images per second, training epoch and validation metric) are live values that Ray stops
exporting a few seconds after their process stops refreshing them, so the test scrapes
while an ingest and a training run are in progress.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from flows.ingest import ingest
from flows.train import train
from tests.flows.conftest import SPLIT, Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WATCHED = (
    "ray_mammo_images_decoded_total",
    "ray_mammo_ingest_images_per_second",
    "ray_mammo_train_epoch",
    "ray_mammo_train_val_metric",
)


def scrape(port: int) -> dict[str, float]:
    """Each watched metric summed over its series (one per Ray process), when exported."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for name in WATCHED:
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.MULTILINE)
        if values:
            found[name] = sum(float(v) for v in values)
    if "ray_node_cpu_utilization" in text:
        found["ray_node_cpu_utilization"] = 1.0
    return found


def test_ingest_and_training_progress_is_exported_while_they_run(
    pipeline: Pipeline, ray_cluster: dict[str, object], tmp_path: Path
) -> None:
    port = int(ray_cluster["metrics_port"])  # type: ignore[call-overload]
    before = scrape(port).get("ray_mammo_images_decoded_total", 0.0)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            summary = ingest(str(pipeline.raw), str(tmp_path / "out"), shard_size=4)
            assert summary["decoded_this_run"] > 0
            config = {
                "image_rows": 128,
                "image_cols": 64,
                "epochs": 4,
                "batch_size": 8,
                "num_workers": 2,
                "early_stopping_patience": 4,
            }
            train(str(tmp_path / "out"), config, SPLIT, register_challenger=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    runner = threading.Thread(target=work)
    runner.start()
    seen: dict[str, float] = {}
    while runner.is_alive():
        for name, value in scrape(port).items():
            seen[name] = max(value, seen.get(name, value))
        time.sleep(1)
    runner.join()
    assert not errors, errors

    assert seen["ray_mammo_images_decoded_total"] > before
    assert seen["ray_mammo_ingest_images_per_second"] > 0
    assert "ray_mammo_train_epoch" in seen and "ray_mammo_train_val_metric" in seen
    assert "ray_node_cpu_utilization" in seen  # Ray's own metrics on the same endpoint
