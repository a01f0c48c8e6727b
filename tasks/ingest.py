"""Ingest tasks: plan shards, decode them on Ray, and publish the manifest and quarantine.

Prefect sees three tasks per run whatever the number of files (never one task per file);
the decode task drives one Ray task per shard of a few hundred files. Work passes between
tasks as small records and URIs; items live in ``OUT/_work/<plan>/``.

Commit protocol, per shard: PNGs, then ``quarantine/<part>.parquet``, then
``shards/<part>.parquet`` last. A shard is done exactly when its ``shards/`` object exists,
so a crash at any point leaves either a finished shard or one the next run redoes whole.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd
import pyarrow as pa
import ray
from prefect import task

from mammo import contract as c
from mammo import inventory as inv
from mammo.lease import Lease
from mammo.preprocess import PreprocessConfig
from mammo.shards import process_shard
from tasks.catalog import layout_hint
from tasks.cluster import cluster_resources, ensure_ray, metrics
from tasks.lock import OutLockedError, confirm_held
from tasks.logs import run_logger
from tasks.progress import ProgressReporter
from tasks.retry import transient_only
from tasks.settings import Settings
from tasks.storage import StorageError, Store, open_store, read_parquet, write_parquet

SHARD_KEY = "shard"
SAFE_DECODERS = ("pydicom",)


class IngestError(RuntimeError):
    """Ingest could not finish: the message says what failed and what was kept."""


@dataclass(frozen=True)
class IngestPlan:
    raw: str
    out: str
    subset: str
    plan_id: str
    preprocess: dict[str, Any]  # PreprocessConfig's fields, as JSON
    csv_rows: int
    candidates: int
    already_done: int
    pending: int
    plan_quarantined: int
    shards: list[str] = field(default_factory=list)

    @property
    def work(self) -> str:
        return f"{c.INGEST_WORK_DIR}/{self.plan_id}"


@dataclass(frozen=True)
class ShardSummary:
    name: str
    images: int
    quarantined: int
    decode_seconds: float
    wall_seconds: float
    bytes_read: int
    node: str  # the Ray node that decoded it


@dataclass(frozen=True)
class DecodeReport:
    shards: int
    images: int
    quarantined: int
    decode_seconds: float  # summed over workers: the decode work
    wall_seconds: float
    dashboard_url: str | None
    nodes: int = 0  # Ray nodes that decoded at least one shard


def resolve_config(out: Store, overrides: dict[str, Any] | None) -> PreprocessConfig:
    """The frozen preprocessing config of OUT: saved on first use, then reused as is.

    Asking for a different config on an OUT that already has one is an error: mixing
    configurations in one output would silently make images incomparable.
    """
    requested = PreprocessConfig(**overrides) if overrides else None
    if out.exists(c.PREPROCESS_CONFIG_FILE):
        saved = PreprocessConfig.from_json(out.read_bytes(c.PREPROCESS_CONFIG_FILE).decode())
        if requested is not None and "decode" not in (overrides or {}):
            # the decode mode is kept unless asked for: a flag for the size alone is no change
            requested = replace(requested, decode=saved.decode)
        if requested is not None and requested.config_hash() != saved.config_hash():
            raise IngestError(
                f"{out.uri} was built with another preprocessing config "
                f"({saved.config_hash()} != {requested.config_hash()}); "
                "write to a new output location instead"
            )
        return saved
    config = requested or PreprocessConfig()
    out.write_bytes(c.PREPROCESS_CONFIG_FILE, config.to_json().encode())
    return config


def _unfinished_plan(out: Store, work: str, pending: pd.DataFrame) -> list[inv.ShardPlan] | None:
    """The shards an earlier run of this plan cut for what is still pending; None if there is
    no such run or the pending items are not all in it (its outputs were removed since)."""
    try:
        planned = read_parquet(out, f"{work}/pending.parquet").to_pandas()
    except FileNotFoundError:
        return None
    keys = pd.MultiIndex.from_frame(planned[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    wanted = pd.MultiIndex.from_frame(pending[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    if pending.empty or not wanted.isin(keys).all():
        return None
    left = planned[keys.isin(wanted)]
    shards = [
        inv.ShardPlan(str(name), frame.drop(columns=[SHARD_KEY]).reset_index(drop=True))
        for name, frame in left.groupby(SHARD_KEY, sort=True)
    ]
    return inv.by_cost(shards)


def _cluster_cpus(settings: Settings | None, pending: pd.DataFrame) -> int:
    """The Ray cluster's CPUs; Ray starts here rather than at the decode when there is work."""
    if pending.empty:
        return 1
    ensure_ray(settings or Settings.from_env())
    return max(1, int(cluster_resources().get("CPU", 1)))


def committed_shards(out: Store) -> list[str]:
    names = [
        f.relpath.removeprefix(f"{c.SHARDS_DIR}/").removesuffix(".parquet")
        for f in out.list_files(f"{c.SHARDS_DIR}/")
        if f.relpath.endswith(".parquet")
    ]
    return sorted(names)


def _read_committed(
    out: Store, directory: str, names: list[str], columns: list[str]
) -> pd.DataFrame:
    frames = []
    for name in names:
        try:
            frames.append(read_parquet(out, f"{directory}/{name}.parquet", columns).to_pandas())
        except FileNotFoundError:
            continue  # a quarantine part is optional for shards written with no bad input
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@task(
    name="plan-ingest",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient_only(IngestError, OutLockedError),
)
def plan_ingest(
    raw: str,
    out: str,
    subset: str = c.Subset.TRAIN.value,
    shard_size: int | None = None,
    max_patients: int | None = None,
    preprocess: dict[str, object] | None = None,
    settings: Settings | None = None,
) -> IngestPlan:
    """Join the CSV with the listing of RAW and plan the shards still to decode.

    ``shard_size`` None sizes the shards to the Ray cluster (:func:`inv.auto_shard_size`;
    Ray is started here when there is work). A rerun of a plan that
    did not finish (the same inputs and config) decodes the shards that plan left.
    """
    logger = run_logger()
    raw_store, out_store = open_store(raw), open_store(out)
    which = c.Subset(subset)
    config = resolve_config(out_store, preprocess)

    try:
        csv_bytes = raw_store.read_bytes(c.csv_name(which))
    except FileNotFoundError as exc:
        hint = layout_hint(raw)
        raise IngestError(
            f"no {c.csv_name(which)} under {raw_store.uri}" + (f": {hint}" if hint else "")
        ) from exc
    rows, csv_quarantine = inv.parse_metadata_csv(csv_bytes, which)
    scope = None
    if max_patients is not None:
        rows, csv_quarantine, scope = inv.select_patients(rows, csv_quarantine, max_patients)
    started = time.perf_counter()
    files = list(raw_store.list_files(c.images_dir(which) + "/"))
    logger.info(
        "Listed %d files under %s in %.1f s",
        len(files),
        raw_store.uri,
        time.perf_counter() - started,
    )
    inventory = inv.join_inventory(rows, files, which, csv_quarantine, scope)

    done_names = committed_shards(out_store)
    done = _read_committed(out_store, c.SHARDS_DIR, done_names, [c.IMAGE_ID, c.FINGERPRINT])
    done_bad = _read_committed(
        out_store, c.SHARD_QUARANTINE_DIR, done_names, [c.IMAGE_ID, c.FINGERPRINT]
    )
    pending = inv.pending_items(inventory.candidates, pd.concat([done, done_bad]))
    plan_id = inv.content_digest(inventory.candidates, config.config_hash())
    shards = _unfinished_plan(out_store, f"{c.INGEST_WORK_DIR}/{plan_id}", pending)
    if shards is None:
        size = shard_size or inv.auto_shard_size(len(pending), _cluster_cpus(settings, pending))
        shards = inv.plan_shards(pending, size, config.config_hash())

    plan = IngestPlan(
        raw=raw_store.uri,
        out=out_store.uri,
        subset=which.value,
        plan_id=plan_id,
        preprocess=json.loads(config.to_json()),
        csv_rows=inventory.csv_rows,
        candidates=len(inventory.candidates),
        already_done=len(inventory.candidates) - len(pending),
        pending=len(pending),
        plan_quarantined=len(inventory.quarantine),
        shards=[s.name for s in shards],
    )
    items = (
        pd.concat([s.items.assign(**{SHARD_KEY: s.name}) for s in shards], ignore_index=True)
        if shards
        else pending.assign(**{SHARD_KEY: pd.Series(dtype="string")})
    )
    write_parquet(
        out_store, f"{plan.work}/pending.parquet", pa.Table.from_pandas(items, preserve_index=False)
    )
    write_parquet(
        out_store,
        f"{plan.work}/candidates.parquet",
        pa.Table.from_pandas(  # with tonight's metadata: finalize joins it to the manifest
            inventory.candidates[[*c.METADATA_COLUMNS, c.FINGERPRINT]], preserve_index=False
        ),
    )
    write_parquet(
        out_store,
        f"{plan.work}/plan-quarantine.parquet",
        pa.Table.from_pandas(
            inventory.quarantine, schema=c.QUARANTINE_SCHEMA, preserve_index=False
        ),
    )
    logger.info(
        "Plan %s: %d CSV rows, %d files to use, %d already decoded, %d to decode in %d shards, "
        "%d quarantined while planning",
        plan.plan_id,
        plan.csv_rows,
        plan.candidates,
        plan.already_done,
        plan.pending,
        len(plan.shards),
        plan.plan_quarantined,
    )
    return plan


def run_decode_shard(
    raw: str,
    out: str,
    name: str,
    items: pd.DataFrame,
    preprocess: dict[str, Any],
    progress: object,
    decoders: tuple[str, ...] | None = None,
) -> ShardSummary:
    """One shard on a Ray worker: decode, write PNGs, then commit the shard's two tables."""
    import cv2

    cv2.setNumThreads(1)  # one Ray task per CPU: no oversubscription
    started = time.perf_counter()
    raw_store, out_store = open_store(raw), open_store(out)
    counters = metrics()

    def report(decoded: bool) -> None:
        counters["decoded" if decoded else "quarantined"].inc()
        progress.add.remote(decoded)  # type: ignore[attr-defined]

    result = process_shard(
        items,
        raw_store.read_bytes,
        out_store.write_bytes,
        PreprocessConfig(**preprocess),
        report,
        decoders,
    )
    if result.quarantine.num_rows:
        write_parquet(out_store, f"{c.SHARD_QUARANTINE_DIR}/{name}.parquet", result.quarantine)
    write_parquet(out_store, f"{c.SHARDS_DIR}/{name}.parquet", result.images)  # commit
    return ShardSummary(
        name=name,
        images=result.images.num_rows,
        quarantined=result.quarantine.num_rows,
        decode_seconds=result.decode_seconds,
        wall_seconds=time.perf_counter() - started,
        bytes_read=result.bytes_read,
        node=ray.get_runtime_context().get_node_id(),
    )


# Ray re-runs the task when its worker dies (a killed node, or a native crash inside a codec)
# and when storage fails transiently; ``decoders`` is the driver's safe mode. Ray's overloads
# type retry_exceptions as bool only; Ray documents and accepts a list of exception types.
decode_shard = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=[StorageError])(  # type: ignore[call-overload]
    run_decode_shard
)


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Images finished across all workers, polled by the driver for the progress display."""

    def __init__(self) -> None:
        self.decoded = 0
        self.quarantined = 0

    def add(self, decoded: bool) -> None:
        if decoded:
            self.decoded += 1
        else:
            self.quarantined += 1

    def counts(self) -> tuple[int, int]:
        return self.decoded, self.quarantined


@task(name="decode-shards")
def decode_shards(plan: IngestPlan, settings: Settings) -> DecodeReport:
    """Fan the plan's shards out to Ray workers; wait for all, then fail if any shard failed."""
    logger = run_logger()
    started = time.perf_counter()
    if not plan.shards:
        logger.info("Nothing new to decode: every input is already in the outputs")
        return DecodeReport(0, 0, 0, 0.0, 0.0, None)
    dashboard = ensure_ray(settings)
    if dashboard:
        logger.info("Ray dashboard: %s", dashboard)
    out_store = open_store(plan.out)
    items = read_parquet(out_store, f"{plan.work}/pending.parquet").to_pandas()
    counter = ProgressCounter.options(name=f"ingest-progress-{plan.plan_id}").remote()  # type: ignore[attr-defined]
    shard_items = {
        str(name): frame.drop(columns=[SHARD_KEY]).reset_index(drop=True)
        for name, frame in items.groupby(SHARD_KEY, sort=False)
    }
    shard_items = {
        name: shard_items[name] for name in plan.shards
    }  # the plan's order: costliest first
    del items

    def submit(name: str, decoders: tuple[str, ...] | None = None) -> ray.ObjectRef[ShardSummary]:
        label = f"decode {name}" + (" (safe mode)" if decoders else "")
        ref: ray.ObjectRef[ShardSummary] = decode_shard.options(name=label).remote(
            plan.raw, plan.out, name, shard_items[name], plan.preprocess, counter, decoders
        )
        return ref

    futures = {submit(name): name for name in shard_items}
    summaries: list[ShardSummary] = []
    failures: dict[str, str] = {}
    safe_mode: set[str] = set()
    reporter = ProgressReporter(plan.pending, "decoding", logger)
    waiting = list(futures)
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
        for ref in ready:
            name = futures[ref]
            try:
                summaries.append(ray.get(ref))
            except ray.exceptions.WorkerCrashedError:
                if name in safe_mode:
                    failures[name] = "the worker died in safe mode too"
                    continue
                # Ray already re-ran it: a codec that crashes the process on one file does
                # so every time. Decode the shard again with pydicom first (no native crash
                # seen there); its bad file then gets a quarantine row like any other.
                logger.warning("workers died on %s; decoding it again in safe mode", name)
                safe_mode.add(name)
                retry = submit(name, SAFE_DECODERS)
                futures[retry] = name
                waiting.append(retry)
            except (ray.exceptions.RayError, StorageError) as exc:
                failures[name] = str(exc).strip().splitlines()[-1][:500]
        decoded, quarantined = ray.get(counter.counts.remote())
        reporter.update(decoded, quarantined)
        rate = decoded / max(time.perf_counter() - started, 1e-9)
        metrics()["ingest_rate"].set(rate)
    reporter.close()
    ray.kill(counter)
    if failures:
        lines = "\n".join(f"  {name}: {error}" for name, error in sorted(failures.items()))
        raise IngestError(
            f"{len(failures)} of {len(shard_items)} shards failed; {len(summaries)} finished "
            f"and are kept (a re-run decodes only the rest):\n{lines}"
        )
    report = DecodeReport(
        shards=len(summaries),
        images=sum(s.images for s in summaries),
        quarantined=sum(s.quarantined for s in summaries),
        decode_seconds=sum(s.decode_seconds for s in summaries),
        wall_seconds=time.perf_counter() - started,
        dashboard_url=dashboard,
        nodes=len({s.node for s in summaries}),
    )
    logger.info(
        "Decoded %d images (%d quarantined) in %d shards, %.1f s wall, %.1f img/s",
        report.images,
        report.quarantined,
        report.shards,
        report.wall_seconds,
        report.images / max(report.wall_seconds, 1e-9),
    )
    return report


@task(
    name="finalize-ingest",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=transient_only(IngestError, OutLockedError),
)
def finalize_ingest(
    plan: IngestPlan, decoded: DecodeReport, lease: Lease | None = None
) -> dict[str, object]:
    """Publish manifest.parquet and quarantine.parquet for the current inputs, and check that
    every input is in exactly one of them. With the ``lease`` of OUT's lock (tasks/lock.py),
    first remove the temporary files of killed writers; without it, leave them."""
    logger = run_logger()
    out = open_store(plan.out)
    if lease is not None:
        # Every shard of this run has finished and no other ingest can write here while the
        # lock is ours: temporary files now are those of killed writers.
        confirm_held(out, lease)
        leftovers = out.remove_temporaries("", recursive=False)  # manifest, quarantine, ...
        for folder in (c.SHARDS_DIR, c.SHARD_QUARANTINE_DIR, c.PNG_DIR, c.INGEST_WORK_DIR):
            leftovers += out.remove_temporaries(folder)
        if leftovers:
            logger.info("Removed %d temporary files of interrupted writes", len(leftovers))
    candidates = read_parquet(out, f"{plan.work}/candidates.parquet").to_pandas()
    wanted = pd.MultiIndex.from_frame(candidates[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))

    names = committed_shards(out)
    manifest_columns = [f.name for f in c.MANIFEST_SCHEMA if f.name != c.SHARD]
    parts = []
    for name in names:
        table = read_parquet(out, f"{c.SHARDS_DIR}/{name}.parquet", manifest_columns).to_pandas()
        parts.append(table.assign(**{c.SHARD: f"{c.SHARDS_DIR}/{name}.parquet"}))
    images = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=[*manifest_columns, c.SHARD])
    )
    keys = pd.MultiIndex.from_frame(images[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    manifest = images[keys.isin(wanted)].drop_duplicates([c.IMAGE_ID, c.FINGERPRINT])
    manifest = _with_current_metadata(manifest, candidates)

    bad = _read_committed(out, c.SHARD_QUARANTINE_DIR, names, [f.name for f in c.QUARANTINE_SCHEMA])
    bad_keys = pd.MultiIndex.from_frame(bad[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    bad = bad[bad_keys.isin(wanted)].drop_duplicates([c.IMAGE_ID, c.FINGERPRINT])
    plan_bad = read_parquet(out, f"{plan.work}/plan-quarantine.parquet").to_pandas()
    quarantine = pd.concat([plan_bad, bad], ignore_index=True) if len(bad) else plan_bad

    _check_accounted(candidates, manifest, bad)
    write_parquet(
        out,
        c.MANIFEST_FILE,
        pa.Table.from_pandas(manifest, schema=c.MANIFEST_SCHEMA, preserve_index=False),
    )
    write_parquet(
        out,
        c.QUARANTINE_FILE,
        pa.Table.from_pandas(quarantine, schema=c.QUARANTINE_SCHEMA, preserve_index=False),
    )
    reasons: dict[str, int] = defaultdict(int)
    for reason in quarantine["reason"]:
        reasons[str(reason)] += 1
    summary: dict[str, object] = {
        "raw": plan.raw,
        "out": plan.out,
        "subset": plan.subset,
        "plan_id": plan.plan_id,
        "config_hash": PreprocessConfig(**plan.preprocess).config_hash(),
        "csv_rows": plan.csv_rows,
        "manifest_rows": len(manifest),
        "quarantined": len(quarantine),
        "quarantined_csv_rows": int(_csv_row_quarantine(quarantine)),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "decoded_this_run": decoded.images,
        "quarantined_this_run": decoded.quarantined,
        "already_done": plan.already_done,
        "shards": len(names),
        "decode": asdict(decoded),
    }
    out.write_bytes(c.INGEST_SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    logger.info(
        "Manifest: %d images; quarantine: %d inputs %s; outputs under %s",
        len(manifest),
        len(quarantine),
        dict(reasons),
        plan.out,
    )
    return summary


def _with_current_metadata(manifest: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """The decoded rows with tonight's CSV values: labels and metadata corrected since an image
    was decoded are taken from the CSV, not from the shard that holds its pixels."""
    stale = [col for col in c.METADATA_COLUMNS if col != c.IMAGE_ID]
    current = candidates[list(c.METADATA_COLUMNS)].drop_duplicates(c.IMAGE_ID)
    joined = manifest.drop(columns=stale).merge(current, on=c.IMAGE_ID, how="left")
    columns = [f.name for f in c.MANIFEST_SCHEMA]
    return joined[columns].sort_values([c.PATIENT_ID, c.IMAGE_ID]).reset_index(drop=True)


def _csv_row_quarantine(quarantine: pd.DataFrame) -> int:
    """Quarantine rows that stand for a CSV row (as opposed to a stray file)."""
    file_only = {
        c.QuarantineReason.NO_CSV_ROW.value,
        c.QuarantineReason.UNEXPECTED_PATH.value,
        c.QuarantineReason.PATIENT_MISMATCH.value,
    }
    return int((~quarantine["reason"].isin(file_only)).sum())


def _check_accounted(candidates: pd.DataFrame, manifest: pd.DataFrame, bad: pd.DataFrame) -> None:
    """Every candidate must be in exactly one of manifest or decode quarantine."""
    counts = pd.concat([manifest[c.IMAGE_ID], bad[c.IMAGE_ID]]).value_counts()
    missing = set(candidates[c.IMAGE_ID]) - set(counts.index)
    twice = counts[counts > 1]
    if missing or len(twice):
        raise IngestError(
            f"outputs do not account for every input: {len(missing)} missing, {len(twice)} "
            "duplicated; re-run ingest to decode the missing shards"
        )
