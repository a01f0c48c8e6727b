"""``mammo catalog``: a copy of any public mammography dataset read into the common schema.

The dataset layer (mammo.datasets) recognises the layout under RAW by its marker files, or
takes the one named, and reads the dataset's own label files as distributed. This step
writes what it read under OUT, without decoding any pixels:

- ``catalog/<dataset>/images.parquet``: one row per full mammogram (mammo.datasets.schema);
- ``catalog/<dataset>/findings.parquet``: one row per annotated lesion, boxes in pixels;
- ``catalog/<dataset>/quarantine.parquet``: each file or label row left out, with the reason.

The adapters read plain files, so RAW is a local folder. The ingest of these layouts into
shards is not wired yet: ``mammo ingest`` reads the RSNA layout (docs/datasets.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from mammo import datasets
from mammo.datasets.schema import DatasetTables
from tasks.storage import LocalStore, join_uri, open_store, write_parquet

CATALOG_DIR = "catalog"
TABLES = ("images", "findings", "quarantine")


class CatalogError(ValueError):
    """A RAW that cannot be catalogued: not local, no known layout, unreadable labels."""


@dataclass(frozen=True)
class CatalogSummary:
    dataset: str
    evidence: str  # the marker files that chose the layout, or "named"
    uri: str  # where the tables were written
    images: int
    patients: int
    breasts: int
    cancer: dict[str, int]  # images per cancer label (0, 1, missing)
    sources: dict[str, int]  # images per cancer_source
    findings: int
    quarantined: dict[str, int]  # rows per reason


def _local_root(raw: str) -> Path | None:
    """The folder a local RAW names (as tasks.storage opens it); None for S3."""
    store = open_store(raw)
    return store.root if isinstance(store, LocalStore) else None


def read_layout(raw: str, dataset: str | None = None) -> tuple[DatasetTables, str]:
    """The tables of the copy under ``raw`` and why its layout was chosen."""
    root = _local_root(raw)
    if root is None:
        raise CatalogError(f"{raw}: the dataset layouts are read from a local copy")
    try:
        if dataset is None:
            adapter, evidence = datasets.recognise(root)
        else:
            adapter, evidence = datasets.get(dataset), "named"
            if not root.is_dir():
                raise CatalogError(f"{root} is not a folder")
        return adapter.read(root), evidence
    except datasets.DatasetError as exc:
        raise CatalogError(str(exc)) from exc
    except FileNotFoundError as exc:  # a named layout whose label files are not there
        raise CatalogError(
            f"{root} read as {adapter.name}: no {exc.filename}; that layout has {adapter.markers}"
        ) from exc


def write_catalog(tables: DatasetTables, out: str) -> str:
    """The three tables under ``out``/catalog/<dataset>/; returns that location."""
    store = open_store(out)
    prefix = f"{CATALOG_DIR}/{tables.dataset}"
    for name in TABLES:
        frame: pd.DataFrame = getattr(tables, name)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        write_parquet(store, f"{prefix}/{name}.parquet", table)
    return join_uri(store.uri, prefix)


def catalog(raw: str, out: str, dataset: str | None = None) -> CatalogSummary:
    tables, evidence = read_layout(raw, dataset)
    uri = write_catalog(tables, out)
    images = tables.images
    return CatalogSummary(
        dataset=tables.dataset,
        evidence=evidence,
        uri=uri,
        images=len(images),
        patients=int(images["patient_id"].nunique()),
        breasts=int(images["prediction_id"].nunique()),
        cancer=_counts(images["cancer"].astype("string").fillna("missing")),
        sources=_counts(images["cancer_source"].astype("string").replace("", "missing")),
        findings=len(tables.findings),
        quarantined=_counts(tables.quarantine["reason"].astype("string")),
    )


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(key): int(n) for key, n in values.value_counts().sort_index().items()}


def describe(summary: CatalogSummary) -> str:
    """The summary as the lines ``mammo catalog`` prints."""
    why = "named" if summary.evidence == "named" else f"found {summary.evidence}"
    lines = [
        f"Layout {summary.dataset} ({why})",
        f"{summary.images} images of {summary.patients} patients, {summary.breasts} breasts; "
        f"{summary.findings} findings",
        "cancer per image: " + _pairs(summary.cancer),
        "label source: " + _pairs(summary.sources),
        "quarantined: " + (_pairs(summary.quarantined) or "none"),
        f"Wrote {', '.join(f'{name}.parquet' for name in TABLES)} to {summary.uri}",
    ]
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items())


def layout_hint(raw: str) -> str:
    """Why a local RAW without the RSNA CSV cannot be ingested: the other layout it holds,
    or what each layout's marker files are; "" for S3 or an RSNA copy."""
    root = _local_root(raw)
    if root is None:
        return ""
    try:
        adapter, evidence = datasets.recognise(root)
    except datasets.DatasetError as exc:
        return str(exc)
    if adapter.name == "rsna":
        return ""
    return (
        f"{root} holds the {adapter.name} layout ({evidence}); `mammo ingest` reads "
        f"the RSNA layout so far: `mammo catalog --raw {raw} --out OUT` reads this one into "
        "the common schema (docs/datasets.md)"
    )
