"""CMMD (TCIA): ``CMMD/<ID1>/<date>-NA-NA-<n>/1.000000-NA-<n>/1-1.dcm`` .. ``1-4.dcm`` and
``CMMD_clinicaldata_revision.xlsx`` (``ID1, LeftRight, Age, number, abnormality,
classification, subtype``: one row per breast with a lesion; a ``.csv`` export of it is
read the same way).

Neither the names nor the folders say side or view: Image Laterality (0020,0062) and the
View Code Sequence (0054,0220; 399162004 CC, 399368009 MLO) are read from each header.
Rows are keyed on (ID1, side), so a patient with both breasts is two rows, never a
duplicated merge. cancer = classification Malignant (``pathology``); there are no normal
exams, so a breast without a row is unknown (missing), never 0. Age is per patient.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from mammo.contract import QuarantineReason
from mammo.datasets.files import header_or_quarantine, read_csv_rows, relpath, walk_files
from mammo.datasets.registry import Adapter, DatasetError, register_dataset
from mammo.datasets.schema import (
    CancerSource,
    DatasetTables,
    ImageFormat,
    LayoutReason,
    Record,
    breast_key,
    findings_frame,
    images_frame,
    namespaced,
    quarantine_frame,
    quarantine_row,
)
from mammo.datasets.xlsx import WorkbookError, read_first_sheet

IMAGES_DIR: Final = "CMMD"
CLINICAL_STEM: Final = "CMMD_clinicaldata_revision"
REQUIRED: Final = ("ID1", "LeftRight", "classification")
_ID1 = re.compile(r"^D\d-\d{4}$")
ABNORMALITY: Final = {"mass": "mass", "calcification": "calcification"}
ABNORMALITY["both"] = "calcification+mass"


def clinical_file(root: Path) -> Path | None:
    for suffix in (".xlsx", ".csv"):
        if (root / f"{CLINICAL_STEM}{suffix}").is_file():
            return root / f"{CLINICAL_STEM}{suffix}"
    return None


def read_clinical(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(row number, {column: text})]) of the clinical table, .xlsx or .csv."""
    if path.suffix == ".csv":
        return read_csv_rows(path)
    try:
        sheet = read_first_sheet(path.read_bytes())
    except WorkbookError as exc:
        raise DatasetError(f"{path.name}: {exc}") from exc
    if not sheet:
        raise DatasetError(f"{path.name} has no rows")
    header = [cell.strip() for cell in sheet[0]]
    rows = [
        (n, dict(zip(header, [c.strip() for c in cells] + [""] * len(header), strict=False)))
        for n, cells in enumerate(sheet[1:], start=2)
        if any(c.strip() for c in cells)
    ]
    return header, rows


def _age(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@register_dataset("cmmd")
class CmmdAdapter(Adapter):
    markers = f"{IMAGES_DIR}/ beside {CLINICAL_STEM}.xlsx (or .csv)"

    def found(self, root: Path) -> str | None:
        clinical = clinical_file(root)
        if clinical is not None and (root / IMAGES_DIR).is_dir():
            return f"{clinical.name} and {IMAGES_DIR}/"
        return None

    def read(self, root: Path) -> DatasetTables:
        clinical = clinical_file(root)
        if clinical is None:
            raise DatasetError(f"no {CLINICAL_STEM}.xlsx or .csv in {root}")
        header, rows = read_clinical(clinical)
        missing = [col for col in REQUIRED if col not in header]
        if missing:
            raise DatasetError(f"{clinical.name} lacks column(s) {missing}; found {header}")
        quarantine: list[Record] = []
        labels: dict[tuple[str, str], dict[str, str]] = {}
        ages: dict[str, float] = {}
        for line, row in rows:
            source = f"{clinical.name}:row {line}"
            id1, side = row["ID1"], row["LeftRight"].upper()[:1]
            klass = row["classification"].lower()
            if (
                not _ID1.match(id1)
                or side not in ("L", "R")
                or klass not in ("benign", "malignant")
            ):
                detail = f"ID1/LeftRight/classification {id1[:12]!r}/{row['LeftRight']!r}/{klass!r}"
                quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, detail))
                continue
            if (id1, side) in labels:
                detail = f"{id1} {side} is on an earlier row"
                quarantine.append(quarantine_row(source, LayoutReason.DUPLICATE_ROW, detail))
                continue
            labels[(id1, side)] = {**row, "line": str(line)}
            if (age := _age(row.get("Age", ""))) is not None:
                ages.setdefault(id1, age)

        images: list[Record] = []
        breasts: set[tuple[str, str]] = set()
        for path in walk_files(root / IMAGES_DIR, (".dcm",)):
            rel = relpath(path, root)
            parts = path.relative_to(root / IMAGES_DIR).parts
            if len(parts) < 2 or not _ID1.match(parts[0]):
                detail = f"not under {IMAGES_DIR}/<ID1>/"
                quarantine.append(quarantine_row(rel, QuarantineReason.UNEXPECTED_PATH, detail))
                continue
            head = header_or_quarantine(path, rel, quarantine)
            if head is None:
                continue
            side = (head.laterality or "").upper()
            if side not in ("L", "R"):
                detail = "no L/R in Image Laterality (0020,0062) or Laterality (0020,0060)"
                quarantine.append(quarantine_row(rel, LayoutReason.UNKNOWN_SIDE, detail))
                continue
            id1 = parts[0]
            breasts.add((id1, side))
            patient = namespaced(self.name, id1)
            label = labels.get((id1, side))
            malignant = None if label is None else label["classification"].lower() == "malignant"
            images.append(
                {
                    "dataset": self.name,
                    "patient_id": patient,
                    "image_id": namespaced(self.name, rel.removeprefix(f"{IMAGES_DIR}/")[:-4]),
                    "laterality": side,
                    "view": head.view,
                    "prediction_id": breast_key(patient, side),
                    "age": ages.get(id1),
                    "cancer": None if malignant is None else int(malignant),
                    "cancer_source": "" if label is None else CancerSource.PATHOLOGY.value,
                    "pathology": None
                    if malignant is None
                    else "MALIGNANT"
                    if malignant
                    else "BENIGN",
                    "abnormality": None
                    if label is None
                    else ABNORMALITY.get(label.get("abnormality", "").lower()),
                    "manufacturer": head.manufacturer,
                    "path": rel,
                    "format": ImageFormat.DICOM.value,
                    "bit_depth": head.bits_stored,
                }
            )
        for (id1, side), label in sorted(labels.items()):
            if (id1, side) not in breasts:
                detail = f"no {side} image of {id1} under {IMAGES_DIR}/{id1}/"
                source = f"{clinical.name}:row {label['line']}"
                quarantine.append(quarantine_row(source, QuarantineReason.MISSING_FILE, detail))
        return DatasetTables(
            self.name, images_frame(images), findings_frame([]), quarantine_frame(quarantine)
        )
