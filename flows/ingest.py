"""Ingest flow: RSNA-layout DICOMs in RAW -> Parquet shards, PNGs, manifest and quarantine in OUT.

mammo ingest --raw RAW --out OUT          (or: python flows/ingest.py --raw RAW --out OUT)
"""

from __future__ import annotations

from prefect import flow

from mammo.config import IngestSettings
from tasks.config import load_config
from tasks.ingest import decode_shards, finalize_ingest, plan_ingest
from tasks.lock import out_lock
from tasks.settings import Settings, default_out


@flow(name="ingest")
def ingest(
    raw: str,
    out: str = "",
    subset: str = "train",
    shard_size: int | None = None,
    max_patients: int | None = None,
    preprocess: dict[str, object] | None = None,
    config: str | None = None,
) -> dict[str, object]:
    """Plan shards of new or changed files, decode them on Ray, publish manifest and quarantine.

    ``config`` names a configuration file (mammo.config); the other parameters override it.
    """
    settings = Settings.from_env()
    out = out or default_out()
    night = load_config(config)
    given = {"shard_size": shard_size, "max_patients": max_patients}
    sizes = IngestSettings(**night.merged("ingest", given) or {})
    shard_size, max_patients = sizes.shard_size, sizes.max_patients
    preprocess = night.merged("preprocess", preprocess)
    with out_lock(out, settings) as lease:  # one ingest per OUT, released however it ends
        plan = plan_ingest(raw, out, subset, shard_size, max_patients, preprocess, settings)
        decoded = decode_shards(plan, settings)
        return finalize_ingest(plan, decoded, lease)


if __name__ == "__main__":
    from flows.cli import main

    main(["ingest", *__import__("sys").argv[1:]])
