"""The common schema every dataset adapter yields: images, findings and quarantine rows.

``images`` (one row per full mammogram, never a mask or a crop):

- ``dataset``: the adapter's name (``rsna``, ``cbis-ddsm``, ``vindr``, ``mias``,
  ``inbreast``, ``cmmd``).
- ``patient_id``, ``image_id``: strings namespaced by dataset, ``f"{dataset}:{own id}"``
  (``mias:12``, ``cbis-ddsm:P_00001``; RSNA's integers keep their decimal form,
  ``rsna:10006``), unique across a mixed set.
- ``study_id``: the exam, namespaced, where the dataset has one (VinDr study, INbreast
  hash + acquisition month); missing elsewhere.
- ``laterality``: ``L`` or ``R``; ``view``: ``CC``, ``MLO``, ... (mammo.contract.View).
- ``prediction_id``: the breast key, ``f"{patient_id}_{laterality}"``, or
  ``f"{study_id}_{laterality}"`` where a patient has several exams (INbreast).
- ``age``: years, float, NaN where unknown.
- ``cancer``: 1, 0 or missing (never a guessed 0), one value per breast (prediction_id).
- ``cancer_source``: how ``cancer`` was decided (:class:`CancerSource`), ``""`` when missing.
- ``pathology``: the worst pathology of the image's lesions (MALIGNANT > BENIGN >
  BENIGN_WITHOUT_CALLBACK), missing where the dataset has none.
- ``abnormality``: the image's lesion categories (:data:`CATEGORIES`), sorted, joined by
  ``+``; missing when none is known.
- ``birads``: the dataset's BI-RADS assessment as text (``0``..``6``, ``4a``..``4c``).
- ``density``: BI-RADS density A-D or missing; ``density_raw``: the dataset's own value
  (CBIS-DDSM ``3``, VinDr ``DENSITY C``, INbreast ACR ``2``, mini-MIAS tissue ``G``).
- ``split_official``: ``train``/``test`` where the dataset ships a split, else missing.
- ``site_id``, ``machine_id``, ``manufacturer``: text, missing where unknown
  (manufacturer is Manufacturer (0008,0070) where the adapter reads headers).
- ``path``: the image file relative to the root; ``format``: :class:`ImageFormat`;
  ``bit_depth``: BitsStored (0028,0101) or the PGM's depth, missing where not read.

``findings`` (one row per annotated lesion): ``dataset``, ``image_id``, ``category``
(:data:`CATEGORIES`), ``category_raw`` (the dataset's own words), ``birads``,
``pathology``, the box ``x0, y0, x1, y1`` in pixels of the full image (top-left origin,
inclusive, clipped to the image; NaN where the dataset gives no place, e.g. a diffuse
mini-MIAS calcification) and ``mask_path`` (a binary mask file relative to the root, or "").

``quarantine``: ``source`` (a relative path or ``"file:line N"``), ``reason``
(mammo.contract.QuarantineReason or :class:`LayoutReason` values), ``detail``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import pandas as pd

from mammo.contract import QuarantineReason


class CancerSource(StrEnum):
    PATHOLOGY = "pathology"  # a pathology report (CBIS-DDSM, CMMD)
    BIOPSY = "biopsy"  # biopsy-proven (RSNA's cancer column, INbreast Bi-Rads 6)
    SEVERITY = "severity"  # mini-MIAS SEVERITY B/M
    BIRADS_PROXY = "birads-proxy"  # BI-RADS 4 or above taken as cancer (VinDr, INbreast)
    MISSING = ""


class ImageFormat(StrEnum):
    DICOM = "dicom"
    PGM = "pgm"
    PNG = "png"
    JPEG = "jpeg"


class LayoutReason(StrEnum):
    """Quarantine reasons of the dataset layer, beside mammo.contract.QuarantineReason."""

    DUPLICATE_ROW = "duplicate_row"  # a label row repeating an earlier row's key
    UNKNOWN_SIDE = "unknown_side"  # no laterality in the header, the name or the pixels
    NO_MASK = "no_mask"  # an abnormality whose ROI files hold no binary full-size mask
    BAD_ANNOTATION = "bad_annotation"  # an annotation file that cannot be parsed
    LABEL_MISMATCH = "label_mismatch"  # label file and file name disagree (side, view)


CATEGORIES: Final = ("mass", "calcification", "asymmetry", "architectural_distortion", "other")
PATHOLOGIES: Final = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")  # worst first

IMAGE_DTYPES: Final[Mapping[str, str]] = {
    "dataset": "string",
    "patient_id": "string",
    "image_id": "string",
    "study_id": "string",
    "laterality": "string",
    "view": "string",
    "prediction_id": "string",
    "age": "float64",
    "cancer": "Int8",
    "cancer_source": "string",
    "pathology": "string",
    "abnormality": "string",
    "birads": "string",
    "density": "string",
    "density_raw": "string",
    "split_official": "string",
    "site_id": "string",
    "machine_id": "string",
    "manufacturer": "string",
    "path": "string",
    "format": "string",
    "bit_depth": "Int8",
}
FINDING_DTYPES: Final[Mapping[str, str]] = {
    "dataset": "string",
    "image_id": "string",
    "category": "string",
    "category_raw": "string",
    "birads": "string",
    "pathology": "string",
    "x0": "float64",
    "y0": "float64",
    "x1": "float64",
    "y1": "float64",
    "mask_path": "string",
}
QUARANTINE_DTYPES: Final[Mapping[str, str]] = {
    "source": "string",
    "reason": "string",
    "detail": "string",
}
IMAGE_COLUMNS: Final = tuple(IMAGE_DTYPES)
FINDING_COLUMNS: Final = tuple(FINDING_DTYPES)
QUARANTINE_COLUMNS: Final = tuple(QUARANTINE_DTYPES)

Record = Mapping[str, object]


@dataclass(frozen=True)
class DatasetTables:
    """What an adapter read from one root: images, findings and quarantine frames."""

    dataset: str
    images: pd.DataFrame
    findings: pd.DataFrame
    quarantine: pd.DataFrame


def _frame(records: Iterable[Record], dtypes: Mapping[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(records), columns=list(dtypes))
    return frame.astype(dict(dtypes))


def images_frame(records: Iterable[Record]) -> pd.DataFrame:
    """Image rows in IMAGE_COLUMNS order, sorted by image_id; absent keys are missing."""
    frame = _frame(records, IMAGE_DTYPES)
    frame["cancer_source"] = frame["cancer_source"].fillna(CancerSource.MISSING.value)
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def findings_frame(records: Iterable[Record]) -> pd.DataFrame:
    frame = _frame(records, FINDING_DTYPES)
    frame["mask_path"] = frame["mask_path"].fillna("")
    return frame.sort_values(["image_id", "x0", "y0"], kind="stable").reset_index(drop=True)


def quarantine_row(source: str, reason: QuarantineReason | LayoutReason, detail: str) -> Record:
    return {"source": source, "reason": reason.value, "detail": detail}


def quarantine_frame(records: Iterable[Record]) -> pd.DataFrame:
    return _frame(records, QUARANTINE_DTYPES).reset_index(drop=True)


def namespaced(dataset: str, own_id: object) -> str:
    """``f"{dataset}:{own_id}"``: an id unique across datasets."""
    return f"{dataset}:{own_id}"


def breast_key(patient_or_study: str, laterality: str) -> str:
    return f"{patient_or_study}_{laterality}"


_CATEGORY_WORDS: Final = (
    ("calc", "calcification"),
    ("cluster", "calcification"),
    ("mass", "mass"),
    ("circ", "mass"),
    ("spic", "mass"),
    ("misc", "mass"),
    ("asym", "asymmetry"),
    ("assym", "asymmetry"),
    ("distortion", "architectural_distortion"),
    ("arch", "architectural_distortion"),
)


def category_of(raw: str) -> str:
    """One of CATEGORIES for a dataset's own lesion words (``CIRC``, ``Suspicious
    Calcification``, ``Spiculated Region``...), by the start of a word (``Suspicious`` is
    no ``spic``); ``other`` when none fits."""
    lower = raw.strip().lower()
    for word, category in _CATEGORY_WORDS:
        if re.search(rf"\b{word}", lower):
            return category
    return "other"


def abnormality_of(categories: Iterable[str]) -> str | None:
    found = sorted({c for c in categories if c})
    return "+".join(found) if found else None


def worst_pathology(values: Iterable[object]) -> str | None:
    present = {str(v) for v in values if isinstance(v, str) and v}
    for pathology in PATHOLOGIES:
        if pathology in present:
            return pathology
    return None


DENSITY_LETTERS: Final = {"1": "A", "2": "B", "3": "C", "4": "D"}


def breast_cancer(images: pd.DataFrame, per_image: pd.Series) -> pd.Series:
    """The breast-level label: the max of ``per_image`` (1/0/NA) over each prediction_id,
    missing only where every image of the breast is missing."""
    values = pd.Series(per_image.to_numpy(), index=images.index, dtype="Int8")
    return values.groupby(images["prediction_id"]).transform("max").astype("Int8")


def clip_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) clipped to the image's pixels [0, width - 1] x [0, height - 1]."""
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), width - 1.0),
        min(max(y0, 0.0), height - 1.0),
        min(max(x1, 0.0), width - 1.0),
        min(max(y1, 0.0), height - 1.0),
    )


NO_BOX: Final = (float("nan"),) * 4
