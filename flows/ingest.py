"""Ingest flow: RSNA-layout DICOMs in RAW -> Parquet shards, PNGs, manifest and quarantine in OUT.

mammo ingest --raw RAW --out OUT          (or: python flows/ingest.py --raw RAW --out OUT)
"""

from __future__ import annotations

from prefect import flow

from tasks.ingest import decode_shards, finalize_ingest, plan_ingest
from tasks.settings import Settings, default_out


@flow(name="ingest")
def ingest(
    raw: str,
    out: str = "",
    subset: str = "train",
    shard_size: int = 256,
    max_patients: int | None = None,
    preprocess: dict[str, object] | None = None,
) -> dict[str, object]:
    """Plan shards of new or changed files, decode them on Ray, publish manifest and quarantine."""
    settings = Settings.from_env()
    out = out or default_out()
    plan = plan_ingest(raw, out, subset, shard_size, max_patients, preprocess)
    decoded = decode_shards(plan, settings)
    return finalize_ingest(plan, decoded)


if __name__ == "__main__":
    from flows.cli import main

    main(["ingest", *__import__("sys").argv[1:]])
