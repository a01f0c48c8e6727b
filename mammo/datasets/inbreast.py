"""INbreast: ``AllDICOMs/<FileName>_<patientHash>_MG_<L|R>_<CC|ML>_ANON.dcm``, ``AllXML/``
and ``INbreast.csv``.

``INbreast.csv`` is semicolon-separated: ``Patient ID;Patient age;Laterality;View;
Acquisition date;File Name;ACR;Bi-Rads``. Patient ID and age hold ``removed``: the patient
is the hash in the file name, the exam (hash, acquisition month YYYYMM). The CSV says
``MLO`` where the file name says ``ML``: both are the oblique view, written ``MLO``. ACR
1-4 is density A-D (a blank ACR is missing). Bi-Rads 6 is biopsy-proven cancer
(``biopsy``); 4a and above is the proxy cancer label, 1-3 the proxy negative
(``birads-proxy``). ``AllXML/<FileName>.xml`` (not for every image) is an OsiriX property
list ``Images -> ROIs -> {Name, Point_px ["(x, y)", ...]}`` in pixels from the top left;
each ROI's bounding box is a finding.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Final
from xml.parsers.expat import ExpatError

from mammo.contract import QuarantineReason
from mammo.datasets.files import header_or_quarantine, read_csv_rows, relpath, walk_files
from mammo.datasets.registry import Adapter, DatasetError, register_dataset
from mammo.datasets.schema import (
    DENSITY_LETTERS,
    CancerSource,
    DatasetTables,
    ImageFormat,
    LayoutReason,
    Record,
    abnormality_of,
    breast_cancer,
    breast_key,
    category_of,
    clip_box,
    findings_frame,
    images_frame,
    namespaced,
    quarantine_frame,
    quarantine_row,
)

CSV_FILE: Final = "INbreast.csv"
DICOM_DIR, XML_DIR = "AllDICOMs", "AllXML"
REQUIRED: Final = ("Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads")
_NAME = re.compile(r"^(\d+)_([0-9A-Za-z]+)_MG_([LR])_([A-Z]+)_ANON\.dcm$", re.I)
_POINT = re.compile(r"^\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)$")
_VIEWS: Final = {"CC": "CC", "MLO": "MLO", "ML": "MLO"}
BIRADS: Final = ("1", "2", "3", "4a", "4b", "4c", "5", "6")


def _row_problem(row: dict[str, str]) -> str | None:
    if not row.get("File Name", "").isdigit():
        return f"File Name {row.get('File Name', '')[:20]!r} is not a number"
    if row.get("Laterality") not in ("L", "R") or row.get("View") not in _VIEWS:
        return f"Laterality/View {row.get('Laterality')!r}/{row.get('View')!r} unknown"
    if not re.fullmatch(r"\d{6}", row.get("Acquisition date", "")):
        return "Acquisition date is not YYYYMM"
    if row.get("ACR", "") not in ("", *DENSITY_LETTERS):
        return f"ACR {row.get('ACR')!r} is not 1..4"
    if row.get("Bi-Rads", "").lower() not in BIRADS:
        return f"Bi-Rads {row.get('Bi-Rads')!r} is not one of {BIRADS}"
    return None


def roi_boxes(data: bytes) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(Name, (x0, y0, x1, y1)) of every ROI of an OsiriX XML plist; ValueError if malformed."""
    try:
        plist = plistlib.loads(data, fmt=plistlib.FMT_XML)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError) as exc:
        raise ValueError(f"not an XML property list: {exc}") from exc
    out = []
    images = plist.get("Images", []) if isinstance(plist, dict) else None
    if not isinstance(images, list):
        raise ValueError("no Images array")
    for image in images:
        for roi in image.get("ROIs", []) if isinstance(image, dict) else []:
            points = [_POINT.match(str(p).strip()) for p in roi.get("Point_px", [])]
            if not points or not all(points):
                raise ValueError(f"ROI {roi.get('Name')!r} has malformed Point_px")
            xs = [float(m.group(1)) for m in points if m]
            ys = [float(m.group(2)) for m in points if m]
            out.append((str(roi.get("Name", "")), (min(xs), min(ys), max(xs), max(ys))))
    return out


@register_dataset("inbreast")
class InbreastAdapter(Adapter):
    markers = f"{CSV_FILE} (semicolon-separated) beside {DICOM_DIR}/"

    def found(self, root: Path) -> str | None:
        if (root / CSV_FILE).is_file() and (root / DICOM_DIR).is_dir():
            return f"{CSV_FILE} and {DICOM_DIR}/"
        return None

    def read(self, root: Path) -> DatasetTables:
        header, rows = read_csv_rows(root / CSV_FILE, delimiter=";")
        missing = [col for col in REQUIRED if col not in header]
        if missing:
            raise DatasetError(f"{CSV_FILE} lacks column(s) {missing}; found {header}")
        quarantine: list[Record] = []
        files: dict[str, tuple[Path, re.Match[str]]] = {}
        for path in walk_files(root / DICOM_DIR, (".dcm",)):
            match = _NAME.match(path.name)
            if match is None:
                detail = "not named <FileName>_<hash>_MG_<L|R>_<view>_ANON.dcm"
                quarantine.append(
                    quarantine_row(relpath(path, root), QuarantineReason.UNEXPECTED_PATH, detail)
                )
            else:
                files[match.group(1)] = (path, match)
        images: list[Record] = []
        findings: list[Record] = []
        used: set[str] = set()
        for line, row in rows:
            source = f"{CSV_FILE}:line {line}"
            problem = _row_problem(row)
            name = row.get("File Name", "")
            if problem is None and name in used:
                problem = f"File Name {name} is on an earlier row"
            if problem is not None:
                quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, problem))
                continue
            if name not in files:
                detail = f"no {DICOM_DIR}/{name}_*.dcm"
                quarantine.append(quarantine_row(source, QuarantineReason.MISSING_FILE, detail))
                continue
            used.add(name)
            path, match = files[name]
            rel = relpath(path, root)
            side, view = match.group(3).upper(), _VIEWS.get(match.group(4).upper())
            if side != row["Laterality"] or view != _VIEWS[row["View"]]:
                detail = f"{CSV_FILE} says {row['Laterality']} {row['View']}, the file name not"
                quarantine.append(quarantine_row(rel, LayoutReason.LABEL_MISMATCH, detail))
                continue
            head = header_or_quarantine(path, rel, quarantine)
            if head is None:
                continue
            image = _image(row, match.group(2), rel, head.bits_stored, head.manufacturer)
            images.append(image)
            xml = root / XML_DIR / f"{name}.xml"
            if not xml.is_file():
                continue
            try:
                boxes = roi_boxes(xml.read_bytes())
            except ValueError as exc:
                detail = str(exc)[:200]
                quarantine.append(
                    quarantine_row(relpath(xml, root), LayoutReason.BAD_ANNOTATION, detail)
                )
                continue
            for roi_name, box in boxes:
                x0, y0, x1, y1 = clip_box(box, head.cols, head.rows)
                findings.append(
                    {
                        "dataset": self.name,
                        "image_id": image["image_id"],
                        "category": category_of(roi_name),
                        "category_raw": roi_name,
                        **{"x0": x0, "y0": y0, "x1": x1, "y1": y1},
                    }
                )
        for name in sorted(set(files) - used):
            detail = f"File Name {name} is not in {CSV_FILE}"
            quarantine.append(
                quarantine_row(relpath(files[name][0], root), QuarantineReason.NO_CSV_ROW, detail)
            )
        frame = images_frame(images)
        lesion_types: dict[str, set[str]] = {}
        for finding in findings:
            lesion_types.setdefault(str(finding["image_id"]), set()).add(str(finding["category"]))
        frame["abnormality"] = (
            frame["image_id"]
            .map(lambda i: abnormality_of(lesion_types.get(i, ())))
            .astype("string")
        )
        biopsy = (frame["birads"] == "6").groupby(frame["prediction_id"]).transform("any")
        frame["cancer"] = breast_cancer(frame, frame["cancer"])
        frame["cancer_source"] = CancerSource.BIRADS_PROXY.value
        frame.loc[biopsy.astype(bool), "cancer_source"] = CancerSource.BIOPSY.value
        return DatasetTables(
            self.name, frame, findings_frame(findings), quarantine_frame(quarantine)
        )


def _image(
    row: dict[str, str], patient_hash: str, path: str, bits: int | None, maker: str | None
) -> Record:
    patient = namespaced("inbreast", patient_hash)
    study = f"{patient}_{row['Acquisition date']}"
    birads = row["Bi-Rads"].lower()
    age = row.get("Patient age", "")
    return {
        "dataset": "inbreast",
        "patient_id": patient,
        "image_id": namespaced("inbreast", row["File Name"]),
        "study_id": study,
        "laterality": row["Laterality"],
        "view": _VIEWS[row["View"]],
        "prediction_id": breast_key(study, row["Laterality"]),
        "age": float(age) if age.replace(".", "", 1).isdigit() else None,
        "cancer": int(birads >= "4"),
        "birads": birads,
        "density": DENSITY_LETTERS.get(row["ACR"]),
        "density_raw": row["ACR"] or None,
        "manufacturer": maker,
        "path": path,
        "format": ImageFormat.DICOM.value,
        "bit_depth": bits,
    }
