"""The data contract: every column name, enum, schema and path convention in one place.

Readers, writers, the expectation suites and the training loader are all built
from this module, so a column is renamed here or nowhere.

RAW layout (RSNA):   {subset}.csv, {subset}_images/{patient_id}/{image_id}.dcm
OUT layout:          preprocess.json, shards/part-*.parquet, quarantine/part-*.parquet,
                     png/{patient_id}/{image_id}.png, manifest.parquet, quarantine.parquet,
                     ingest.json, _work/{plan}/, _lock/ingest.json (only while an ingest
                     runs), validation/ (data-docs/ within), eda/, monitor/drift/,
                     monitor/nights/,
                     registry/{model}/v{version}/
MLflow tag keys and artifact names: mammo.tags.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

import pyarrow as pa


class Subset(StrEnum):
    """Which half of the RSNA layout a file belongs to."""

    TRAIN = "train"
    TEST = "test"


class Laterality(StrEnum):
    L = "L"
    R = "R"


class View(StrEnum):
    CC = "CC"
    MLO = "MLO"
    AT = "AT"
    LM = "LM"
    ML = "ML"
    LMO = "LMO"


DENSITIES: Final = ("A", "B", "C", "D")
BIRADS_VALUES: Final = (0, 1, 2)
AGE_RANGE: Final = (18.0, 100.0)


# --- train.csv / test.csv -------------------------------------------------------------
SITE_ID, PATIENT_ID, IMAGE_ID = "site_id", "patient_id", "image_id"
LATERALITY, VIEW, AGE, IMPLANT, MACHINE_ID = "laterality", "view", "age", "implant", "machine_id"
CANCER, BIOPSY, INVASIVE, BIRADS, DENSITY = "cancer", "biopsy", "invasive", "BIRADS", "density"
DIFFICULT_NEGATIVE = "difficult_negative_case"
PREDICTION_ID = "prediction_id"

TRAIN_COLUMNS: Final = (
    SITE_ID,
    PATIENT_ID,
    IMAGE_ID,
    LATERALITY,
    VIEW,
    AGE,
    CANCER,
    BIOPSY,
    INVASIVE,
    BIRADS,
    IMPLANT,
    DENSITY,
    MACHINE_ID,
    DIFFICULT_NEGATIVE,
)
TEST_COLUMNS: Final = (
    SITE_ID,
    PATIENT_ID,
    IMAGE_ID,
    LATERALITY,
    VIEW,
    AGE,
    IMPLANT,
    MACHINE_ID,
    PREDICTION_ID,
)
# Known for every image at prediction time; the only metadata a model may take as input.
PREDICTION_TIME_COLUMNS: Final = (AGE, IMPLANT, SITE_ID, MACHINE_ID, VIEW, LATERALITY)
# Known only for training images: never model inputs, at most auxiliary targets.
TRAIN_ONLY_COLUMNS: Final = (CANCER, BIOPSY, INVASIVE, BIRADS, DENSITY, DIFFICULT_NEGATIVE)
# Columns without which a CSV cannot be used at all (others may be missing per row).
REQUIRED_COLUMNS: Final = {
    Subset.TRAIN: (SITE_ID, PATIENT_ID, IMAGE_ID, LATERALITY, VIEW, CANCER),
    Subset.TEST: (SITE_ID, PATIENT_ID, IMAGE_ID, LATERALITY, VIEW),
}

# Arrow types of the metadata columns, as they are stored in shards and the manifest.
METADATA_FIELDS: Final = (
    pa.field(PATIENT_ID, pa.int64(), nullable=False),
    pa.field(IMAGE_ID, pa.int64(), nullable=False),
    pa.field(SITE_ID, pa.int16()),
    pa.field(LATERALITY, pa.string()),
    pa.field(VIEW, pa.string()),
    pa.field(AGE, pa.float32()),
    pa.field(IMPLANT, pa.int8()),
    pa.field(MACHINE_ID, pa.int32()),
    pa.field(CANCER, pa.int8()),
    pa.field(BIOPSY, pa.int8()),
    pa.field(INVASIVE, pa.int8()),
    pa.field(BIRADS, pa.int8()),
    pa.field(DENSITY, pa.string()),
    pa.field(DIFFICULT_NEGATIVE, pa.bool_()),
    pa.field(PREDICTION_ID, pa.string()),
)
METADATA_COLUMNS: Final = tuple(f.name for f in METADATA_FIELDS)


# --- decoded images ---------------------------------------------------------------------
SOURCE_PATH = "source_path"  # relative to RAW, e.g. train_images/10006/462822612.dcm
FINGERPRINT = "fingerprint"  # size + mtime/ETag of the file (not its CSV row)
PNG_PATH = "png_path"  # relative to OUT
PNG = "png"
SHARD = "shard"  # relative to OUT, manifest only
CONFIG_HASH = "config_hash"
ROWS, COLS = "rows", "cols"  # output image size after resize and pad
PIXEL_MEAN, PIXEL_STD = "pixel_mean", "pixel_std"  # of the output image, scaled to [0, 1]

# --- training and prediction ------------------------------------------------------------
SPLIT: Final = "split"  # "train", "val" or "holdout" (mammo.splits)
PROBABILITY: Final = "probability"  # a model's per-image (or per-breast) probability

# Whitelisted DICOM attributes copied into outputs. Nothing else read from a DICOM
# header (in particular no patient, study or institution attribute) ever leaves it.
DICOM_WHITELIST: Final = (
    "TransferSyntaxUID",
    "SOPClassUID",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
# Read only to map pixels (mammo.lut), never copied into any output, not even the Dataset
# handed to the decoders: the two LUT sequences, the LUT items' numeric elements
# (LUT Descriptor (0028,3002), LUT Data (0028,3006); never LUT Explanation, free text)
# and Presentation LUT Shape.
DICOM_LUT_ATTRIBUTES: Final = (
    "ModalityLUTSequence",
    "VOILUTSequence",
    "LUTDescriptor",
    "LUTData",
    "PresentationLUTShape",
)


class ModalityPath(StrEnum):
    """How stored values became modality values (manifest column ``modality_path``)."""

    RESCALE = "rescale"  # RescaleSlope (0028,1053) / RescaleIntercept (0028,1052), or 1 / 0
    MODALITY_LUT_SEQUENCE = "modality-lut-sequence"  # (0028,3000), replaces the rescale


class VoiPath(StrEnum):
    """Which VOI stage an image took (manifest column ``voi_path``)."""

    WINDOW = "window"  # a Window Center/Width pair with VOI LUT Function (0028,1056)
    VOI_LUT_SEQUENCE = "voi-lut-sequence"  # (0028,3010), used when the file has no window
    MIN_MAX = "min-max"  # neither in the file, or the config asks for min-max
    MIN_MAX_FALLBACK = "min-max-fallback"  # the file's VOI was malformed, invalid or flat


MODALITY_PATH, VOI_PATH, INVERTED = "modality_path", "voi_path", "inverted"
REDUCTION = "reduction"  # JPEG 2000 levels left undecoded: read at 1 / 2**reduction per side

IMAGE_FIELDS: Final = (
    pa.field(SOURCE_PATH, pa.string(), nullable=False),
    pa.field(FINGERPRINT, pa.string(), nullable=False),
    pa.field("transfer_syntax", pa.string()),
    pa.field("photometric", pa.string()),
    pa.field("bits_stored", pa.int8()),
    pa.field("src_rows", pa.int32()),
    pa.field("src_cols", pa.int32()),
    pa.field("voi_lut_function", pa.string()),
    pa.field("window_center", pa.float64()),
    pa.field("window_width", pa.float64()),
    pa.field("decoder", pa.string()),
    pa.field(REDUCTION, pa.int8()),
    pa.field("window_fallback", pa.bool_()),
    pa.field(MODALITY_PATH, pa.string()),
    pa.field(VOI_PATH, pa.string()),
    pa.field(INVERTED, pa.bool_()),  # MONOCHROME1 or Presentation LUT Shape INVERSE
    pa.field("crop_y0", pa.int32()),
    pa.field("crop_x0", pa.int32()),
    pa.field("crop_y1", pa.int32()),
    pa.field("crop_x1", pa.int32()),
    pa.field("crop_fallback", pa.bool_()),
    pa.field("flipped", pa.bool_()),
    pa.field(ROWS, pa.int32()),
    pa.field(COLS, pa.int32()),
    pa.field(PIXEL_MEAN, pa.float32()),
    pa.field(PIXEL_STD, pa.float32()),
    pa.field(CONFIG_HASH, pa.string()),
    pa.field(PNG_PATH, pa.string()),
)

# Image columns added after the first outputs were written; absent (null) in older shards.
ADDED_IMAGE_FIELDS: Final = {REDUCTION: pa.int8()}


def missing_added_columns(present: list[str], wanted: list[str]) -> list[str]:
    """The columns of ``wanted`` that a file with ``present`` lacks only for its age."""
    return [name for name in wanted if name in ADDED_IMAGE_FIELDS and name not in present]


def with_added_columns(table: pa.Table, missing: list[str], wanted: list[str]) -> pa.Table:
    """``table`` with the ``missing`` added columns as nulls, columns in ``wanted`` order."""
    for name in missing:
        table = table.append_column(
            pa.field(name, ADDED_IMAGE_FIELDS[name]),
            pa.nulls(table.num_rows, ADDED_IMAGE_FIELDS[name]),
        )
    return table.select(wanted)


SHARD_SCHEMA: Final = pa.schema([*METADATA_FIELDS, *IMAGE_FIELDS, pa.field(PNG, pa.binary())])
MANIFEST_SCHEMA: Final = pa.schema(
    [*METADATA_FIELDS, *IMAGE_FIELDS, pa.field(SHARD, pa.string(), nullable=False)]
)


# --- quarantine -------------------------------------------------------------------------
class QuarantineReason(StrEnum):
    """Why an input could not be used. Each input lands in the manifest or here, once."""

    MISSING_FILE = "missing_file"  # a CSV row whose DICOM is not in RAW
    NO_CSV_ROW = "no_csv_row"  # a DICOM under {subset}_images/ with no CSV row
    UNEXPECTED_PATH = "unexpected_path"  # a file not named {patient_id}/{image_id}.dcm
    BAD_CSV_ROW = "bad_csv_row"  # non-integer ids, out-of-domain values
    DUPLICATE_IMAGE_ID = "duplicate_image_id"  # image_id on more than one CSV row
    PATIENT_MISMATCH = "patient_mismatch"  # file's folder disagrees with the CSV patient_id
    EMPTY_FILE = "empty_file"
    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    UNREADABLE = "unreadable"  # a DICOM whose header cannot be parsed
    NO_PIXEL_DATA = "no_pixel_data"
    UNSUPPORTED_SYNTAX = "unsupported_syntax"
    MULTI_FRAME = "multi_frame"
    UNSUPPORTED_PHOTOMETRIC = "unsupported_photometric"  # RGB, palette, YBR...
    INVALID_BITS = "invalid_bits"  # BitsStored > BitsAllocated, HighBit != BitsStored - 1...
    TOO_LARGE = "too_large"  # declared dimensions over the pixel limit (decompression bomb)
    BLANK_IMAGE = "blank_image"  # constant pixel values, e.g. all zero
    DECODE_FAILED = "decode_failed"  # every decoder failed on a well-formed header


class QuarantineStage(StrEnum):
    PLAN = "plan"  # found while joining the CSV with the file listing
    DECODE = "decode"  # found while decoding


QUARANTINE_SCHEMA: Final = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # relative path or "train.csv:line N"
        pa.field(PATIENT_ID, pa.int64()),
        pa.field(IMAGE_ID, pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field(FINGERPRINT, pa.string()),
    ]
)


# --- paths --------------------------------------------------------------------------------
PREPROCESS_CONFIG_FILE: Final = "preprocess.json"
MANIFEST_FILE: Final = "manifest.parquet"
QUARANTINE_FILE: Final = "quarantine.parquet"
SHARDS_DIR: Final = "shards"
SHARD_QUARANTINE_DIR: Final = "quarantine"
PNG_DIR: Final = "png"
VALIDATION_DIR: Final = "validation"
REGISTRY_DIR: Final = "registry"  # model cards and promotion decisions, per model version
INGEST_LOCK_FILE: Final = "_lock/ingest.json"  # held while an ingest writes OUT (tasks/lock.py)
INGEST_SUMMARY_FILE: Final = "ingest.json"  # what the last ingest did, from which RAW
INGEST_WORK_DIR: Final = "_work"  # {plan}/: the plan of an ingest (pending items, candidates)
EDA_DIR: Final = "eda"  # the metadata report (mammo.eda)
VALIDATION_OUTCOMES_DIR: Final = f"{VALIDATION_DIR}/manifests"  # {manifest hash}/outcome.json
VALIDATION_OUTCOME_FILE: Final = "outcome.json"
DATA_DOCS_DIR: Final = f"{VALIDATION_DIR}/data-docs"  # index.html: GX Data Docs of every gate run
GX_RESULTS_DIR: Final = f"{VALIDATION_DIR}/gx-results"  # GX's JSON result of each suite run
DATA_DOCS_RUNS: Final = 60  # gate runs the Data Docs keep (two a night: a month)
MONITOR_DIR: Final = "monitor"
DRIFT_REPORTS_DIR: Final = f"{MONITOR_DIR}/drift"  # {stamp}.json and {stamp}.md, one per report
NIGHTS_DIR: Final = f"{MONITOR_DIR}/nights"  # {stamp}.json: one record per nightly run
OUTCOMES_DIR: Final = f"{MONITOR_DIR}/outcomes"  # {model}-v{version}.parquet: charted breasts
DRIFT_RESOLVED_FILE: Final = f"{MONITOR_DIR}/drift-resolved.json"  # finding key -> resolution
# In registry/{model}/v{version}/; the card's files also in the run's model_card/ artifacts:
MODEL_CARD_FILE: Final = "model_card.md"
MODEL_CARD_HTML_FILE: Final = "model_card.html"
DECISION_FILE: Final = "decision.json"  # the promotion decision document
SYNTHETIC_MARKER: Final = "synthetic.json"  # in RAW: written by `mammo synth`
SYNTHETIC_ORACLE: Final = "synthetic_oracle.csv"  # in RAW: the oracle's statistic per image

# One rule for every id (site, machine, patient, image) in the CSV, the file names and the
# validation suite: a non-negative decimal integer without sign or leading zeros, of at most
# 18 digits, so that every id fits an int64 (whose largest value has 19 digits).
MAX_ID_DIGITS: Final = 18
ID_PATTERN: Final = rf"(?:0|[1-9][0-9]{{0,{MAX_ID_DIGITS - 1}}})"
_IMAGE_RELPATH = re.compile(rf"^(train|test)_images/({ID_PATTERN})/({ID_PATTERN})\.dcm$")


def csv_name(subset: Subset) -> str:
    return f"{subset.value}.csv"


def images_dir(subset: Subset) -> str:
    return f"{subset.value}_images"


def image_relpath(subset: Subset, patient_id: int, image_id: int) -> str:
    """``{subset}_images/{patient_id}/{image_id}.dcm``, built only from integers."""
    return f"{images_dir(subset)}/{int(patient_id)}/{int(image_id)}.dcm"


def parse_image_relpath(relpath: str) -> tuple[Subset, int, int] | None:
    """Inverse of :func:`image_relpath`; ``None`` for anything not of that exact form."""
    match = _IMAGE_RELPATH.match(relpath)
    if match is None:
        return None
    return Subset(match.group(1)), int(match.group(2)), int(match.group(3))


def png_relpath(patient_id: int, image_id: int) -> str:
    return f"{PNG_DIR}/{int(patient_id)}/{int(image_id)}.png"


def prediction_id(patient_id: int, laterality: str) -> str:
    """The breast key of the competition: ``f"{patient_id}_{laterality}"``."""
    return f"{int(patient_id)}_{laterality}"
