"""VinDr-Mammo (PhysioNet): ``images/<study_id>/<image_id>.dicom`` and two label CSVs.

``breast-level_annotations.csv``: one row per image (``study_id, series_id, image_id,
laterality, view_position, height, width, breast_birads, breast_density, split``; values
``BI-RADS 1``..``5``, ``DENSITY A``..``D``, ``training``/``test``).
``finding_annotations.csv``: the same plus ``finding_categories`` (a Python list written as
a string, read with ``ast.literal_eval``; ``['No Finding']`` with empty boxes is no
finding), ``finding_birads`` (empty outside BI-RADS) and float boxes in original pixels,
clipped to the image (they can be slightly negative). No pathology: cancer is the proxy
breast BI-RADS 4 or 5 (``birads-proxy``). The study is the patient (one exam each); the
DICOMs keep no PatientID and none is read.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Final

from mammo.contract import QuarantineReason, View
from mammo.datasets.files import Header, header_or_quarantine, read_csv_rows, relpath, walk_files
from mammo.datasets.registry import Adapter, DatasetError, register_dataset
from mammo.datasets.schema import (
    NO_BOX,
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

BREAST_FILE: Final = "breast-level_annotations.csv"
FINDING_FILE: Final = "finding_annotations.csv"
IMAGES_DIR: Final = "images"
REQUIRED: Final = ("study_id", "image_id", "laterality", "view_position", "breast_birads")
_BIRADS = re.compile(r"^BI-RADS\s*([0-6])$", re.I)
_DENSITY = re.compile(r"^DENSITY\s*([A-D])$", re.I)
_ID = re.compile(r"^[0-9A-Za-z._-]+$")
SPLITS: Final = {"training": "train", "train": "train", "test": "test"}


def birads_of(text: str) -> str | None:
    match = _BIRADS.match(text.strip())
    return match.group(1) if match else None


def _row_problem(row: dict[str, str]) -> str | None:
    for col in ("study_id", "image_id"):
        if not _ID.match(row.get(col, "")):
            return f"{col} {row.get(col, '')[:40]!r} is not an id"
    if row.get("laterality") not in ("L", "R"):
        return f"laterality {row.get('laterality')!r} is not L or R"
    if row.get("view_position") not in View.__members__:
        return f"view_position {row.get('view_position')!r} is not a view"
    if row.get("breast_birads") and birads_of(row["breast_birads"]) is None:
        return f"breast_birads {row['breast_birads']!r} is not BI-RADS 0..6"
    return None


@register_dataset("vindr")
class VindrAdapter(Adapter):
    markers = f"{BREAST_FILE} beside {IMAGES_DIR}/<study_id>/<image_id>.dicom"

    def found(self, root: Path) -> str | None:
        if (root / BREAST_FILE).is_file() and (root / IMAGES_DIR).is_dir():
            return f"{BREAST_FILE} and {IMAGES_DIR}/"
        return None

    def read(self, root: Path) -> DatasetTables:
        header, rows = read_csv_rows(root / BREAST_FILE)
        missing = [col for col in REQUIRED if col not in header]
        if missing:
            raise DatasetError(f"{BREAST_FILE} lacks column(s) {missing}; found {header}")
        quarantine: list[Record] = []
        files = {relpath(p, root): p for p in walk_files(root / IMAGES_DIR, (".dicom", ".dcm"))}
        used: set[str] = set()
        images: list[Record] = []
        headers: dict[str, Header] = {}
        for line, row in rows:
            source = f"{BREAST_FILE}:line {line}"
            problem = _row_problem(row)
            if problem is not None:
                quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, problem))
                continue
            image_id = namespaced(self.name, row["image_id"])
            path = f"{IMAGES_DIR}/{row['study_id']}/{row['image_id']}.dicom"
            if image_id in headers or path in used:
                detail = f"image_id {row['image_id']} is on an earlier row"
                quarantine.append(quarantine_row(source, LayoutReason.DUPLICATE_ROW, detail))
                continue
            if path not in files:
                detail = f"no file {path}"
                quarantine.append(quarantine_row(source, QuarantineReason.MISSING_FILE, detail))
                continue
            used.add(path)
            head = header_or_quarantine(files[path], path, quarantine)
            if head is None:
                continue
            headers[image_id] = head
            images.append(self._image(row, image_id, path, head))
        for path in sorted(set(files) - used):
            detail = f"no row of {BREAST_FILE} names this file"
            quarantine.append(quarantine_row(path, QuarantineReason.NO_CSV_ROW, detail))

        findings = self._findings(root, headers, quarantine)
        frame = images_frame(images)
        found_in = {str(f["image_id"]): [] for f in findings}  # type: dict[str, list[str]]
        for f in findings:
            found_in[str(f["image_id"])].append(str(f["category"]))
        frame["abnormality"] = (
            frame["image_id"]
            .map(
                lambda i: abnormality_of(c for cats in found_in.get(i, []) for c in cats.split("+"))
            )
            .astype("string")
        )
        frame["cancer"] = breast_cancer(frame, frame["cancer"])
        frame.loc[frame["cancer"].isna(), "cancer_source"] = CancerSource.MISSING.value
        return DatasetTables(
            self.name, frame, findings_frame(findings), quarantine_frame(quarantine)
        )

    def _image(self, row: dict[str, str], image_id: str, path: str, head: Header) -> Record:
        study = namespaced(self.name, row["study_id"])
        birads = birads_of(row.get("breast_birads", ""))
        density = _DENSITY.match(row.get("breast_density", "").strip())
        return {
            "dataset": self.name,
            "patient_id": study,
            "image_id": image_id,
            "study_id": study,
            "laterality": row["laterality"],
            "view": row["view_position"],
            "prediction_id": breast_key(study, row["laterality"]),
            "cancer": None if birads is None else int(birads in ("4", "5")),
            "cancer_source": CancerSource.BIRADS_PROXY.value,
            "birads": birads,
            "density": density.group(1).upper() if density else None,
            "density_raw": row.get("breast_density") or None,
            "split_official": SPLITS.get(row.get("split", "").lower()),
            "manufacturer": head.manufacturer,
            "path": path,
            "format": ImageFormat.DICOM.value,
            "bit_depth": head.bits_stored,
        }

    def _findings(
        self, root: Path, headers: dict[str, Header], quarantine: list[Record]
    ) -> list[Record]:
        if not (root / FINDING_FILE).is_file():
            return []
        _, rows = read_csv_rows(root / FINDING_FILE)
        out: list[Record] = []
        for line, row in rows:
            source = f"{FINDING_FILE}:line {line}"
            parsed = _finding(row)
            if isinstance(parsed, str):
                quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, parsed))
                continue
            if parsed is None:
                continue
            categories, box = parsed
            image_id = namespaced(self.name, row.get("image_id", ""))
            head = headers.get(image_id)
            if head is None:
                detail = f"image_id {row.get('image_id', '')[:40]!r} is no usable image"
                quarantine.append(quarantine_row(source, QuarantineReason.NO_CSV_ROW, detail))
                continue
            if not math.isnan(box[0]):
                box = clip_box(box, head.cols, head.rows)
            out.append(
                {
                    "dataset": self.name,
                    "image_id": image_id,
                    "category": "+".join(sorted({category_of(c) for c in categories})),
                    "category_raw": "; ".join(categories),
                    "birads": birads_of(row.get("finding_birads", "")),
                    **dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
                }
            )
        return out


def _finding(
    row: dict[str, str],
) -> tuple[list[str], tuple[float, float, float, float]] | str | None:
    """(categories, box) of one finding row; None for ``['No Finding']``; else why not."""
    try:
        categories = ast.literal_eval(row.get("finding_categories", ""))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return "finding_categories is not a list literal"
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        return "finding_categories is not a list of strings"
    categories = [c for c in categories if c.strip().lower() != "no finding"]
    cells = [row.get(col, "") for col in ("xmin", "ymin", "xmax", "ymax")]
    if not categories:
        return None
    if not any(cells):
        return categories, NO_BOX
    try:
        x0, y0, x1, y1 = (float(cell) for cell in cells)
    except ValueError:
        return f"box {cells} is not four numbers"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        return f"box {cells} is not a box"
    return categories, (x0, y0, x1, y1)
