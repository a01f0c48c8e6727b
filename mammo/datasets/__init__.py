"""The dataset layer: one adapter per public mammography layout, one common schema.

Each adapter (mammo.datasets.<name>) finds its files under a local root, reads its own
label files as distributed and yields mammo.datasets.schema's tables: ``images`` (the
full mammograms only), ``findings`` (one row per annotated lesion) and ``quarantine``.
Pure: plain files under a root path, no orchestration, no object storage.

    from mammo import datasets
    tables = datasets.detect(root).read(root)

Importing this package registers every adapter.
"""

from __future__ import annotations

# The adapters register themselves through ``register_dataset``, defined above.
from mammo.datasets import cbis_ddsm, cmmd, inbreast, mias, rsna, vindr  # noqa: F401
from mammo.datasets.registry import (
    Adapter,
    DatasetError,
    detect,
    detection_message,
    get,
    list_datasets,
    recognise,
    register_dataset,
)
from mammo.datasets.schema import DatasetTables

__all__ = [
    "Adapter",
    "DatasetError",
    "DatasetTables",
    "detect",
    "detection_message",
    "get",
    "list_datasets",
    "recognise",
    "register_dataset",
]
