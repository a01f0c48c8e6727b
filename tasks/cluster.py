"""The Ray side: connect to (or start) a cluster, and the pipeline's own Ray metrics.

With ``RAY_ADDRESS`` set, flows join that cluster; otherwise they start a local one on
127.0.0.1 sized by :class:`~tasks.settings.Settings`, every one of its sockets on loopback.
The metrics defined here are exported by every Ray node on its Prometheus endpoint beside
Ray's own (names get a ``ray_`` prefix).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
from functools import cache
from typing import TypedDict

import ray
from ray._private import ray_constants
from ray.util.metrics import Counter, Gauge

from tasks.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()


def ensure_ray(settings: Settings) -> str | None:
    """Connect to Ray once per process; return the dashboard URL when there is one."""
    with _lock:
        if not ray.is_initialized():
            if settings.ray_address:
                ray.init(address=settings.ray_address, logging_level=logging.WARNING)
            else:
                _keep_on_loopback()
                ray.init(
                    num_cpus=settings.ray_num_cpus,
                    object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
                    include_dashboard=settings.ray_dashboard,
                    dashboard_host="127.0.0.1",
                    dashboard_port=_port_or_free(settings.ray_dashboard_port, "dashboard"),
                    _node_ip_address="127.0.0.1",
                    _metrics_export_port=settings.ray_metrics_port,
                    logging_level=logging.WARNING,
                )
        return dashboard_url()


def _port_or_free(port: int, what: str) -> int:
    """``port`` if nothing listens on 127.0.0.1:port, else a free one (another embedded run,
    or ``mammo up``, holds it): a second local run on one machine still starts."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            probe.bind(("127.0.0.1", 0))
            free = int(probe.getsockname()[1])
    log.warning("Ray %s port %d is taken; this run's local Ray uses %d", what, port, free)
    return free


def _keep_on_loopback() -> None:
    """Make ``_node_ip_address="127.0.0.1"`` stick.

    On Linux ``ray.init`` swaps a loopback node address for the machine's routable one unless
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``; with that address the GCS, the raylet, every
    worker and the metrics exporter listen on all interfaces and the dashboard agent on the
    routable address. Ray reads the variable when it is imported: this process read it
    already (hence the constant), the daemons ray.init starts read it from the environment.
    """
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def dashboard_url() -> str | None:
    """The Ray dashboard of the connected cluster (Ray has no public accessor for it)."""
    from ray._private.worker import get_dashboard_url

    # Ray leaves get_dashboard_url unannotated.
    address: str | None = get_dashboard_url()  # type: ignore[no-untyped-call]
    return f"http://{address}" if address else None


def cluster_gpus() -> int:
    return int(cluster_resources().get("GPU", 0))


def cluster_resources() -> dict[str, float]:
    """Total resources of the connected cluster, by name ("CPU", "GPU", ...)."""
    # Ray leaves cluster_resources unannotated.
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return resources


class PipelineMetrics(TypedDict):
    """The pipeline's own Ray metrics, by name."""

    decoded: Counter
    quarantined: Counter
    ingest_rate: Gauge
    epoch: Gauge
    val_metric: Gauge


@cache
def metrics() -> PipelineMetrics:
    """The pipeline's metrics; created lazily in each process that reports them."""
    return {
        "decoded": Counter(
            "mammo_images_decoded", description="Images decoded and written by ingest."
        ),
        "quarantined": Counter(
            "mammo_images_quarantined", description="Inputs quarantined by ingest."
        ),
        "ingest_rate": Gauge(
            "mammo_ingest_images_per_second", description="Ingest throughput of the current run."
        ),
        "epoch": Gauge("mammo_train_epoch", description="Last finished training epoch."),
        "val_metric": Gauge(
            "mammo_train_val_metric",
            description="Validation metric after the last epoch.",
            tag_keys=("metric",),
        ),
    }


def publish_training_metrics(history: list[dict[str, float]]) -> None:
    """The last epoch and its validation metrics as Ray metrics of this process: the training
    workers export them while they run, the driver (long-lived) after the run."""
    gauges = metrics()
    if history:
        gauges["epoch"].set(history[-1]["epoch"])
        for name in ("auc", "pf1", "accuracy", "macro_f1"):
            value = history[-1].get(name, math.nan)
            if math.isfinite(value):
                gauges["val_metric"].set(value, tags={"metric": name})
