"""Session-wide real components: an S3 endpoint (moto server), a local Ray cluster, a Prefect
server (Prefect's test harness runs a real one on SQLite). Each starts only when a test asks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port, moto_s3

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MAMMO_RAY_DASHBOARD", "0")
# Keep the session's Ray on 127.0.0.1 (read when ray is first imported; see tasks/cluster.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP endpoint on 127.0.0.1, with sentinel credentials set."""
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[dict[str, object]]:
    """A local Ray cluster on 127.0.0.1; its workers inherit the S3 environment."""
    import ray

    metrics_port = free_port()
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=400 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
        _metrics_export_port=metrics_port,
        logging_level="WARNING",
    )
    yield {"metrics_port": metrics_port, "address": context.address_info["address"]}
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API server (SQLite) for the session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def mammo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("mammo-home")
    os.environ["MAMMO_HOME"] = str(home)
    return home
