"""What there is to ingest: the CSV joined with the file listing, and the shards still to decode.

Order of operations, all pure (the caller lists and reads storage):
1. :func:`parse_metadata_csv` types the CSV rows; a row that cannot be used becomes a
   quarantine row (``bad_csv_row``, ``duplicate_image_id``), a CSV that cannot be used at
   all raises :class:`MetadataError`.
2. :func:`join_inventory` pairs rows with files on (patient_id, image_id). A file path is
   only ever *matched*, never built from CSV text: ids are integers before they touch a path.
3. :func:`pending_items` drops what earlier runs already decoded (same image, same fingerprint).
4. :func:`plan_shards` cuts the pending items, sorted, into shards of one size (given, or
   :func:`auto_shard_size`: a few per core) named by a hash of their content, and orders them
   by expected cost, largest first. A re-run after a crash finishes the shards its plan left
   (the caller keeps the plan), so it rebuilds exactly the shards that were missing.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from mammo import contract as c

SOURCE_COLUMNS: Final = (c.SOURCE_PATH, c.FINGERPRINT)
ITEM_COLUMNS: Final = (*c.METADATA_COLUMNS, *SOURCE_COLUMNS)
CSV_LINE = "csv_line"

_INT_ID = re.compile(rf"^\s*({c.ID_PATTERN})\s*$")
_TRUE, _FALSE = {"true", "1", "1.0", "yes"}, {"false", "0", "0.0", "no"}
_INT_COLUMNS: Final = (c.SITE_ID, c.MACHINE_ID, c.IMPLANT, c.CANCER, c.BIOPSY, c.INVASIVE, c.BIRADS)


class MetadataError(ValueError):
    """The metadata CSV cannot be used at all (unparseable, required columns missing)."""


@dataclass(frozen=True)
class FileInfo:
    """One listed file: path relative to RAW, size in bytes, and a version (mtime or ETag)."""

    relpath: str
    size: int
    version: str


@dataclass(frozen=True)
class Inventory:
    candidates: pd.DataFrame  # ITEM_COLUMNS: one row per (CSV row, file) pair to decode
    quarantine: pd.DataFrame  # QUARANTINE_SCHEMA columns, stage "plan"
    csv_rows: int  # CSV rows in scope (after select_patients), usable or not


@dataclass(frozen=True)
class ShardPlan:
    name: str  # "part-<16 hex>": a hash of the config and of every (image, fingerprint)
    items: pd.DataFrame  # ITEM_COLUMNS, sorted by (patient_id, image_id)


def quarantine_frame(records: Iterable[dict[str, object]]) -> pd.DataFrame:
    columns = [f.name for f in c.QUARANTINE_SCHEMA]
    frame = pd.DataFrame(list(records), columns=columns)
    for col in (c.PATIENT_ID, c.IMAGE_ID):
        frame[col] = frame[col].astype("Int64")
    return frame


def read_csv_table(data: bytes, name: str) -> pd.DataFrame:
    """A metadata CSV as distributed, every cell a string and only empty cells missing: the
    one way the project reads ``train.csv`` and ``test.csv`` (typing is
    :func:`parse_metadata_csv`'s job)."""
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{name} cannot be parsed as CSV: {exc}") from exc


def parse_metadata_csv(data: bytes, subset: c.Subset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type the rows of ``{subset}.csv``; returns (rows, quarantine).

    ``rows`` has the contract's metadata columns plus ``csv_line``; missing optional columns
    are filled with nulls; ``prediction_id`` is always recomputed as
    ``f"{patient_id}_{laterality}"``.
    """
    name = c.csv_name(subset)
    raw = read_csv_table(data, name)
    missing = [col for col in c.REQUIRED_COLUMNS[subset] if col not in raw.columns]
    if missing:
        raise MetadataError(
            f"{name} is missing required column(s) {missing}; found {list(raw.columns)}"
        )
    raw[CSV_LINE] = np.arange(len(raw)) + 2  # line 1 is the header

    typed, problems = _type_rows(raw, subset)
    quarantine = [
        _csv_quarantine(name, line, None, c.QuarantineReason.BAD_CSV_ROW, detail)
        for line, detail in problems
    ]
    duplicated = typed[c.IMAGE_ID].duplicated(keep=False)
    for _, row in typed[duplicated].iterrows():
        quarantine.append(
            _csv_quarantine(
                name,
                int(row[CSV_LINE]),
                row,
                c.QuarantineReason.DUPLICATE_IMAGE_ID,
                f"image_id {row[c.IMAGE_ID]} appears on more than one row of {name}",
            )
        )
    rows = typed[~duplicated].reset_index(drop=True)
    return rows, quarantine_frame(quarantine)


def select_patients(
    rows: pd.DataFrame, quarantine: pd.DataFrame, max_patients: int
) -> tuple[pd.DataFrame, pd.DataFrame, set[int]]:
    """Keep the ``max_patients`` smallest patient ids: a deterministic small run.

    CSV rows quarantined without a usable patient id stay in scope.
    """
    scope = set(np.sort(rows[c.PATIENT_ID].unique())[:max_patients].tolist())
    kept_quarantine = quarantine[
        quarantine[c.PATIENT_ID].isna() | quarantine[c.PATIENT_ID].isin(scope)
    ]
    return rows[rows[c.PATIENT_ID].isin(scope)].reset_index(drop=True), kept_quarantine, scope


def _csv_quarantine(
    name: str, line: int, row: pd.Series | None, reason: c.QuarantineReason, detail: str
) -> dict[str, object]:
    return {
        "stage": c.QuarantineStage.PLAN.value,
        "source": f"{name}:line {line}",
        c.PATIENT_ID: None if row is None else int(row[c.PATIENT_ID]),
        c.IMAGE_ID: None if row is None else int(row[c.IMAGE_ID]),
        "reason": reason.value,
        "detail": detail,
        c.FINGERPRINT: None,
    }


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_rows(raw: pd.DataFrame, subset: c.Subset) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """Cast every column to its contract type; collect (line, reason) for rows that fail."""
    required = set(c.REQUIRED_COLUMNS[subset])
    bad: dict[int, str] = {}

    def flag(mask: pd.Series, message: str) -> None:
        for line in raw.loc[mask, CSV_LINE]:
            bad.setdefault(int(line), message)

    out = pd.DataFrame(index=raw.index)
    for col in (c.PATIENT_ID, c.IMAGE_ID):
        text = raw[col]
        ok = text.fillna("").str.match(_INT_ID)
        for line, value in zip(raw.loc[~ok, CSV_LINE], text[~ok], strict=True):
            bad.setdefault(int(line), f"{col} {_short(value)} is not a non-negative integer")
        out[col] = pd.to_numeric(text.where(ok), errors="coerce").astype("Int64")

    for col in c.METADATA_COLUMNS:
        if col in (c.PATIENT_ID, c.IMAGE_ID, c.PREDICTION_ID):
            continue
        text = raw[col].str.strip() if col in raw.columns else pd.Series(pd.NA, index=raw.index)
        if col in required:
            flag(text.isna(), f"required column {col} is empty")
        if col in _INT_COLUMNS:
            number = pd.to_numeric(text, errors="coerce")
            whole = number.isna() | (number == np.floor(number))
            flag((text.notna() & number.isna()) | ~whole, f"{col} is not an integer")
            out[col] = number.where(whole).astype("Int64")
        elif col == c.AGE:
            number = pd.to_numeric(text, errors="coerce")
            flag(text.notna() & number.isna(), f"{col} is not a number")
            out[col] = number.astype("Float32")
        elif col == c.DIFFICULT_NEGATIVE:
            lower = text.str.lower()
            flag(text.notna() & ~lower.isin(_TRUE | _FALSE), f"{col} is not a boolean")
            out[col] = lower.map(lambda v: v in _TRUE, na_action="ignore").astype("boolean")
        else:
            out[col] = text.astype("string")

    lateral_ok = out[c.LATERALITY].isin([m.value for m in c.Laterality]).fillna(False)
    flag(~lateral_ok.astype(bool), f"{c.LATERALITY} is not L or R")
    out[CSV_LINE] = raw[CSV_LINE]

    good = ~out[CSV_LINE].isin(bad.keys())
    out = out[good].copy()
    out[c.PREDICTION_ID] = (
        out[c.PATIENT_ID].astype(str) + "_" + out[c.LATERALITY].astype(str)
    ).astype("string")
    return out[[*c.METADATA_COLUMNS, CSV_LINE]], sorted(bad.items())


def join_inventory(
    rows: pd.DataFrame,
    files: Iterable[FileInfo],
    subset: c.Subset,
    csv_quarantine: pd.DataFrame,
    scope: set[int] | None = None,
) -> Inventory:
    """Pair CSV rows with listed files; everything unpaired becomes a quarantine row.

    ``scope`` (from :func:`select_patients`) restricts a small run to some patients: files of
    other patients are then ignored rather than quarantined.
    """
    name, prefix = c.csv_name(subset), c.images_dir(subset) + "/"
    listed: list[tuple[int, int, str, int, str]] = []
    quarantine: list[dict[str, object]] = []
    for info in files:
        if not info.relpath.startswith(prefix):
            continue
        parsed = c.parse_image_relpath(info.relpath)
        if parsed is None or parsed[0] != subset:
            if scope is None:
                quarantine.append(
                    _file_quarantine(
                        info,
                        None,
                        None,
                        c.QuarantineReason.UNEXPECTED_PATH,
                        f"not named {prefix}{{patient_id}}/{{image_id}}.dcm with ids of "
                        f"at most {c.MAX_ID_DIGITS} digits",
                    )
                )
            continue
        _, patient_id, image_id = parsed
        if scope is None or patient_id in scope:
            listed.append((patient_id, image_id, info.relpath, info.size, info.version))

    files_df = pd.DataFrame(
        listed, columns=[c.PATIENT_ID, c.IMAGE_ID, c.SOURCE_PATH, "size", "version"]
    ).astype({c.PATIENT_ID: "Int64", c.IMAGE_ID: "Int64"})
    merged = rows.merge(files_df, on=[c.PATIENT_ID, c.IMAGE_ID], how="outer", indicator=True)

    for _, row in merged[merged["_merge"] == "left_only"].iterrows():
        quarantine.append(
            _csv_quarantine(
                name,
                int(row[CSV_LINE]),
                row,
                c.QuarantineReason.MISSING_FILE,
                f"no file {c.image_relpath(subset, row[c.PATIENT_ID], row[c.IMAGE_ID])}",
            )
        )
    row_ids = set(rows[c.IMAGE_ID].tolist())
    for _, row in merged[merged["_merge"] == "right_only"].iterrows():
        image_id = int(row[c.IMAGE_ID])
        info = FileInfo(str(row[c.SOURCE_PATH]), int(row["size"]), str(row["version"]))
        if image_id in row_ids:
            reason = c.QuarantineReason.PATIENT_MISMATCH
            detail = f"{name} puts image_id {image_id} under another patient_id"
        else:
            reason, detail = c.QuarantineReason.NO_CSV_ROW, f"image_id {image_id} is not in {name}"
        quarantine.append(_file_quarantine(info, int(row[c.PATIENT_ID]), image_id, reason, detail))

    pairs = merged[merged["_merge"] == "both"].copy()
    # the file's identity only: a corrected label or metadata cell is joined at manifest time
    # (tasks/ingest.finalize_ingest) without decoding the image again
    pairs[c.FINGERPRINT] = pairs["size"].astype("int64").astype(str) + "-" + pairs["version"]
    candidates = (
        pairs[list(ITEM_COLUMNS)].sort_values([c.PATIENT_ID, c.IMAGE_ID]).reset_index(drop=True)
    )
    frames = [f for f in (csv_quarantine, quarantine_frame(quarantine)) if len(f)]
    all_quarantine = pd.concat(frames, ignore_index=True) if frames else quarantine_frame([])
    return Inventory(candidates, all_quarantine, len(rows) + len(csv_quarantine))


def _file_quarantine(
    info: FileInfo,
    patient_id: int | None,
    image_id: int | None,
    reason: c.QuarantineReason,
    detail: str,
) -> dict[str, object]:
    return {
        "stage": c.QuarantineStage.PLAN.value,
        "source": info.relpath,
        c.PATIENT_ID: patient_id,
        c.IMAGE_ID: image_id,
        "reason": reason.value,
        "detail": detail,
        c.FINGERPRINT: f"{info.size}-{info.version}",
    }


def pending_items(candidates: pd.DataFrame, done: pd.DataFrame) -> pd.DataFrame:
    """Candidates not yet decoded: no earlier output holds the same (image_id, fingerprint)."""
    if done.empty:
        return candidates
    done_keys = pd.MultiIndex.from_frame(done[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    keys = pd.MultiIndex.from_frame(candidates[[c.IMAGE_ID, c.FINGERPRINT]].astype(str))
    return candidates[~keys.isin(done_keys)].reset_index(drop=True)


SHARDS_PER_CORE: Final = 4  # waves enough that the last one leaves few cores idle
MAX_SHARD_SIZE: Final = 256  # files per shard: bounds a worker's memory and a retry's cost


def auto_shard_size(pending: int, cores: int) -> int:
    """Files per shard so that ``pending`` files make SHARDS_PER_CORE shards per core."""
    return max(1, min(MAX_SHARD_SIZE, math.ceil(pending / (max(1, cores) * SHARDS_PER_CORE))))


def plan_shards(pending: pd.DataFrame, shard_size: int, config_hash: str) -> list[ShardPlan]:
    """Cut sorted pending items into consecutive shards of ``shard_size`` (last may be short),
    ordered by :func:`expected_cost`, largest first."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    ordered = pending.sort_values([c.PATIENT_ID, c.IMAGE_ID]).reset_index(drop=True)
    shards = []
    for start in range(0, len(ordered), shard_size):
        items = ordered.iloc[start : start + shard_size].reset_index(drop=True)
        shards.append(ShardPlan(f"part-{content_digest(items, config_hash)}", items))
    return by_cost(shards)


def by_cost(shards: list[ShardPlan]) -> list[ShardPlan]:
    return sorted(shards, key=lambda shard: (-expected_cost(shard.items), shard.name))


def expected_cost(items: pd.DataFrame) -> int:
    """The bytes of the shard's files (the fingerprint starts with the size, see
    :func:`join_inventory`): decode time grows with the compressed size."""
    sizes = items[c.FINGERPRINT].astype(str).str.split("-", n=1).str[0]
    return int(pd.to_numeric(sizes, errors="coerce").fillna(0).sum())


def content_digest(items: pd.DataFrame, config_hash: str) -> str:
    """16 hex digits identifying a set of (image_id, fingerprint) under one config."""
    digest = hashlib.blake2b(config_hash.encode(), digest_size=8)
    for image_id, fingerprint in zip(items[c.IMAGE_ID], items[c.FINGERPRINT], strict=True):
        digest.update(f"{image_id}:{fingerprint};".encode())
    return digest.hexdigest()
