"""CBIS-DDSM (TCIA): four case-description CSVs beside ``CBIS-DDSM/<case>/<study>/<series>/``.

CSVs: ``mass_case_description_{train,test}_set.csv`` and ``calc_...``; one row per
abnormality (a full image repeats over abnormality ids: images are deduplicated).
Column names are compared with spaces and underscores alike (``breast_density`` in the
mass files, ``breast density`` in the calc files). The CSV paths
(``<case>/<StudyUID>/<SeriesUID>/000000.dcm``, some with an embedded newline, stripped)
never resolve as written: a file is matched on its case folder (the path's first part)
and the Series Instance UID (0020,000E) of its header. The case folder is
``<Mass|Calc>-<Training|Test>_<patient>_<LEFT|RIGHT>_<CC|MLO>[_<abnormality id>]``; the
DICOM PatientID is that folder name and is not read. The ROI series of an abnormality
hold a binary mask and a crop under names that do not tell which is which: the mask is
the file with two values (0 and one other) at the full image's size, found by content.
cancer = any abnormality of the breast (patient, side, over all four CSVs: a patient
can be in the Mass and the Calc sets) with pathology MALIGNANT (``pathology``);
BENIGN_WITHOUT_CALLBACK is benign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo.contract import QuarantineReason
from mammo.datasets.files import (
    Header,
    header_or_quarantine,
    read_csv_rows,
    read_pixels,
    relpath,
    walk_files,
)
from mammo.datasets.registry import Adapter, DatasetError, register_dataset
from mammo.datasets.schema import (
    DENSITY_LETTERS,
    NO_BOX,
    PATHOLOGIES,
    CancerSource,
    DatasetTables,
    ImageFormat,
    LayoutReason,
    Record,
    abnormality_of,
    breast_key,
    findings_frame,
    images_frame,
    namespaced,
    quarantine_frame,
    quarantine_row,
    worst_pathology,
)
from mammo.errors import MammoInputError

IMAGES_DIR: Final = "CBIS-DDSM"
CSV_GLOB: Final = "*_case_description_*_set.csv"
_CSV_NAME = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$")
REQUIRED: Final = (
    "patient id",
    "left or right breast",
    "image view",
    "abnormality type",
    "pathology",
    "assessment",
    "image file path",
    "cropped image file path",
    "roi mask file path",
)
_PATIENT = re.compile(r"^P_\d+$")
CATEGORY: Final = {"mass": "mass", "calcification": "calcification"}


def column_key(name: str) -> str:
    """``breast_density`` and ``breast density`` alike: lower case, one space."""
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def csv_path_key(text: str) -> tuple[str, str] | None:
    """(case folder, Series Instance UID) of a CSV path ``case/study/series/file``."""
    parts = [p for p in text.strip().replace("\\", "/").split("/") if p]
    return (parts[0], parts[2]) if len(parts) >= 3 else None


@dataclass
class _Image:
    record: dict[str, object]
    rows: list[dict[str, str]] = field(default_factory=list)


def _problem(r: dict[str, str]) -> str | None:
    if not _PATIENT.match(r["patient id"]):
        return f"patient id {r['patient id'][:20]!r} is not P_NNNNN"
    if r["left or right breast"] not in ("LEFT", "RIGHT") or r["image view"] not in ("CC", "MLO"):
        return f"side/view {r['left or right breast']!r}/{r['image view']!r} unknown"
    if r["pathology"] not in PATHOLOGIES or r["abnormality type"] not in CATEGORY:
        return f"pathology/type {r['pathology']!r}/{r['abnormality type']!r} unknown"
    if r["assessment"] not in tuple("012345"):
        return f"assessment {r['assessment']!r} is not BI-RADS 0..5"
    if csv_path_key(r["image file path"]) is None:
        return "image file path is not <case>/<study>/<series>/<file>"
    return None


def is_mask(pixels: npt.NDArray[np.generic], full: Header) -> bool:
    """Binary (0 and one other value) and the size of the full image: a ROI mask."""
    if pixels.shape != (full.rows, full.cols):
        return False
    values = np.unique(pixels)
    return values.size == 2 and int(values[0]) == 0


@register_dataset("cbis-ddsm")
class CbisDdsmAdapter(Adapter):
    markers = f"{CSV_GLOB.replace('*', '<mass|calc>', 1)} beside {IMAGES_DIR}/"

    def found(self, root: Path) -> str | None:
        csvs = sorted(p.name for p in root.glob(CSV_GLOB))
        if csvs and (root / IMAGES_DIR).is_dir():
            return f"{', '.join(csvs)} and {IMAGES_DIR}/"
        return None

    def read(self, root: Path) -> DatasetTables:
        quarantine: list[Record] = []
        index: dict[tuple[str, str], list[Path]] = {}
        headers: dict[Path, Header] = {}
        for path in walk_files(root / IMAGES_DIR, (".dcm",)):
            head = header_or_quarantine(path, relpath(path, root), quarantine)
            if head is None:
                continue
            headers[path] = head
            case = path.relative_to(root / IMAGES_DIR).parts[0]
            index.setdefault((case, head.series_uid), []).append(path)
        images: dict[Path, _Image] = {}
        findings: list[Record] = []
        used: set[Path] = set()
        for csv in sorted(root.glob(CSV_GLOB)):
            match = _CSV_NAME.match(csv.name)
            header, rows = read_csv_rows(csv)
            keys = {column_key(h) for h in header}
            if match is None or [k for k in REQUIRED if k not in keys]:
                lacking = [k for k in REQUIRED if k not in keys]
                raise DatasetError(f"{csv.name}: unexpected name or missing columns {lacking}")
            for line, raw in rows:
                r = {column_key(k): v for k, v in raw.items()}
                source = f"{csv.name}:line {line}"
                problem = _problem(r)
                if problem is not None:
                    quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, problem))
                    continue
                key = csv_path_key(r["image file path"])
                case = key[0] if key else ""
                if not case.endswith(
                    f"_{r['patient id']}_{r['left or right breast']}_{r['image view']}"
                ):
                    detail = f"case folder {case[:60]!r} is not this row's patient, side and view"
                    quarantine.append(quarantine_row(source, LayoutReason.LABEL_MISMATCH, detail))
                    continue
                full = sorted(index.get(key, [])) if key else []
                if not full:
                    detail = f"no file of case {case} with the Series Instance UID of its path"
                    quarantine.append(quarantine_row(source, QuarantineReason.MISSING_FILE, detail))
                    continue
                used.add(full[0])
                image = images.get(full[0])
                if image is None:
                    image = images[full[0]] = _Image(self._record(root, full[0], r, match, headers))
                image.rows.append(r)
                findings.append(
                    self._finding(root, r, image, headers[full[0]], used, index, source, quarantine)
                )
        for path in sorted(set(headers) - used):
            detail = "no CSV row refers to this file (case folder and Series Instance UID)"
            quarantine.append(
                quarantine_row(relpath(path, root), QuarantineReason.NO_CSV_ROW, detail)
            )
        return DatasetTables(
            self.name, self._images(images), findings_frame(findings), quarantine_frame(quarantine)
        )

    def _record(
        self,
        root: Path,
        path: Path,
        r: dict[str, str],
        match: re.Match[str],
        headers: dict[Path, Header],
    ) -> dict[str, object]:
        patient = namespaced(self.name, r["patient id"])
        side = r["left or right breast"][0]
        density = r.get("breast density", "")
        case = path.relative_to(root / IMAGES_DIR).parts[0]
        return {
            "dataset": self.name,
            "patient_id": patient,
            "image_id": namespaced(self.name, case),
            "laterality": side,
            "view": r["image view"],
            "prediction_id": breast_key(patient, side),
            "cancer_source": CancerSource.PATHOLOGY.value,
            "density": DENSITY_LETTERS.get(density),
            "density_raw": density or None,
            "split_official": match.group(2),
            "manufacturer": headers[path].manufacturer,
            "path": relpath(path, root),
            "format": ImageFormat.DICOM.value,
            "bit_depth": headers[path].bits_stored,
        }

    def _finding(
        self,
        root: Path,
        r: dict[str, str],
        image: _Image,
        full: Header,
        used: set[Path],
        index: dict[tuple[str, str], list[Path]],
        source: str,
        quarantine: list[Record],
    ) -> Record:
        candidates: list[Path] = []
        for col in ("cropped image file path", "roi mask file path"):
            key = csv_path_key(r[col])
            candidates += [p for p in index.get(key, []) if p not in candidates] if key else []
        used.update(candidates)
        masks = []
        for path in sorted(candidates):
            try:
                pixels = read_pixels(path)
            except MammoInputError as exc:
                quarantine.append(quarantine_row(relpath(path, root), exc.reason, exc.detail))
                continue
            if is_mask(pixels, full):
                masks.append((path, pixels))
        box, mask_path = NO_BOX, ""
        if masks:
            path, pixels = masks[0]
            ys, xs = np.nonzero(pixels)
            box, mask_path = (
                (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
                relpath(path, root),
            )
        else:
            detail = f"{len(candidates)} ROI file(s), none binary at {full.rows}x{full.cols}"
            quarantine.append(quarantine_row(source, LayoutReason.NO_MASK, detail))
        return {
            "dataset": self.name,
            "image_id": image.record["image_id"],
            "category": CATEGORY[r["abnormality type"]],
            "category_raw": r["abnormality type"],
            "birads": r["assessment"],
            "pathology": r["pathology"],
            **dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
            "mask_path": mask_path,
        }

    def _images(self, images: dict[Path, _Image]) -> pd.DataFrame:
        records = []
        for image in images.values():
            rows = image.rows
            records.append(
                {
                    **image.record,
                    "pathology": worst_pathology(r["pathology"] for r in rows),
                    "abnormality": abnormality_of(CATEGORY[r["abnormality type"]] for r in rows),
                    "birads": max(r["assessment"] for r in rows),
                }
            )
        frame = images_frame(records)
        malignant = (frame["pathology"] == "MALIGNANT").astype("Int8")
        frame["cancer"] = malignant.groupby(frame["prediction_id"]).transform("max").astype("Int8")
        return frame
