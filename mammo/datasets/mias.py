"""mini-MIAS: ``mdbNNN.pgm`` (binary PGM, 8-bit, 1024x1024, MLO) beside ``Info.txt``.

``Info.txt`` is whitespace-separated, header ``REFNUM BG CLASS SEVERITY X Y RADIUS``, one
row per abnormality (a refnum may have several rows). Read with ``str.split()``, so the
trailing space of ``NORM`` rows makes no bogus column; a diffuse calcification has no
X/Y/RADIUS (four tokens) and becomes a finding without a box. Y has its origin at the
bottom left: the box's row is ``height - Y``. BG (F/G/D) is the tissue type, kept as
``density_raw`` (no BI-RADS density). Films come in pairs: patient = (n + 1) // 2; the side
is decided from the pixels (chest wall on the image's right: R, as displayed), never from
the number's parity. cancer = any row with SEVERITY M (source ``severity``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from mammo.contract import QuarantineReason
from mammo.datasets.files import relpath
from mammo.datasets.pgm import read_pgm
from mammo.datasets.registry import Adapter, register_dataset
from mammo.datasets.schema import (
    NO_BOX,
    CancerSource,
    DatasetTables,
    ImageFormat,
    LayoutReason,
    Record,
    abnormality_of,
    breast_key,
    category_of,
    clip_box,
    findings_frame,
    images_frame,
    namespaced,
    quarantine_frame,
    quarantine_row,
)
from mammo.errors import MammoInputError
from mammo.geometry import faces_right

INFO_FILE: Final = "Info.txt"
_REFNUM = re.compile(r"^mdb(\d{3})$")
_CLASSES: Final = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
SEVERITY_PATHOLOGY: Final = {"M": "MALIGNANT", "B": "BENIGN"}


def parse_info_line(tokens: list[str]) -> dict[str, object] | str:
    """One Info.txt row as a dict, or why it cannot be used."""
    if not _REFNUM.match(tokens[0]):
        return f"refnum {tokens[0][:20]!r} is not mdbNNN"
    if len(tokens) not in (3, 4, 7):
        return f"{len(tokens)} fields, expected 3 (NORM), 4 (no X/Y/RADIUS) or 7"
    refnum, bg, klass = tokens[:3]
    if bg not in ("F", "G", "D") or klass not in _CLASSES:
        return f"BG {bg!r} or CLASS {klass!r} out of the documented values"
    severity = tokens[3] if len(tokens) > 3 else None
    if (klass == "NORM") != (severity is None) or severity not in (None, "B", "M"):
        return f"SEVERITY {severity!r} does not fit CLASS {klass}"
    place: tuple[int, int, int] | None = None
    if len(tokens) == 7:
        if not all(t.isdigit() for t in tokens[4:]):
            return "X, Y, RADIUS are not non-negative integers"
        place = (int(tokens[4]), int(tokens[5]), int(tokens[6]))
    return {"refnum": refnum, "bg": bg, "class": klass, "severity": severity, "place": place}


@register_dataset("mias")
class MiasAdapter(Adapter):
    markers = f"{INFO_FILE} beside mdbNNN.pgm files"

    def found(self, root: Path) -> str | None:
        pgms = list(root.glob("mdb*.pgm"))
        if (root / INFO_FILE).is_file() and pgms:
            return f"{INFO_FILE} and {len(pgms)} mdb*.pgm files"
        return None

    def read(self, root: Path) -> DatasetTables:
        quarantine: list[Record] = []
        by_refnum: dict[str, list[dict[str, object]]] = {}
        seen: dict[tuple[str, ...], int] = {}
        text = (root / INFO_FILE).read_bytes().decode("latin-1")
        for line_no, line in enumerate(text.splitlines(), start=1):
            tokens = line.split()
            if not tokens or tokens[0].upper() == "REFNUM":
                continue
            source = f"{INFO_FILE}:line {line_no}"
            parsed = parse_info_line(tokens)
            if isinstance(parsed, str):
                quarantine.append(quarantine_row(source, QuarantineReason.BAD_CSV_ROW, parsed))
                continue
            if tuple(tokens) in seen:
                detail = f"repeats line {seen[tuple(tokens)]}"
                quarantine.append(quarantine_row(source, LayoutReason.DUPLICATE_ROW, detail))
                continue
            seen[tuple(tokens)] = line_no
            parsed["line"] = line_no
            by_refnum.setdefault(str(parsed["refnum"]), []).append(parsed)

        images: list[Record] = []
        findings: list[Record] = []
        files = {p.stem: p for p in sorted(root.glob("*.pgm")) if p.is_file()}
        for refnum in sorted(set(files) - set(by_refnum)):
            detail = f"{refnum} has no row in {INFO_FILE}"
            quarantine.append(
                quarantine_row(relpath(files[refnum], root), QuarantineReason.NO_CSV_ROW, detail)
            )
        for refnum, rows in sorted(by_refnum.items()):
            path = files.get(refnum)
            if path is None:
                detail = f"no file {refnum}.pgm for {len(rows)} row(s)"
                source = f"{INFO_FILE}:line {rows[0]['line']}"
                quarantine.append(quarantine_row(source, QuarantineReason.MISSING_FILE, detail))
                continue
            try:
                pixels = read_pgm(path.read_bytes())
            except MammoInputError as exc:
                quarantine.append(quarantine_row(relpath(path, root), exc.reason, exc.detail))
                continue
            height, width = pixels.shape
            image, lesions = _image(refnum, rows, relpath(path, root), faces_right(pixels))
            image["bit_depth"] = 8 if pixels.dtype.itemsize == 1 else 16
            images.append(image)
            for row in lesions:
                place = row["place"]
                box = NO_BOX
                if isinstance(place, tuple):
                    x, y, r = place
                    box = clip_box((x - r, height - y - r, x + r, height - y + r), width, height)
                findings.append(
                    {
                        "dataset": self.name,
                        "image_id": image["image_id"],
                        "category": category_of(str(row["class"])),
                        "category_raw": row["class"],
                        "pathology": SEVERITY_PATHOLOGY[str(row["severity"])],
                        **dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
                    }
                )
        return DatasetTables(
            self.name, images_frame(images), findings_frame(findings), quarantine_frame(quarantine)
        )


def _image(
    refnum: str, rows: list[dict[str, object]], path: str, chest_wall_right: bool
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The image row of one film and its abnormality rows (NORM rows are no finding)."""
    number = int(refnum[3:])
    patient = namespaced("mias", (number + 1) // 2)
    laterality = "R" if chest_wall_right else "L"
    lesions = [row for row in rows if row["class"] != "NORM"]
    severities = {row["severity"] for row in lesions}
    pathology = "MALIGNANT" if "M" in severities else "BENIGN" if "B" in severities else None
    return {
        "dataset": "mias",
        "patient_id": patient,
        "image_id": namespaced("mias", refnum),
        "laterality": laterality,
        "view": "MLO",
        "prediction_id": breast_key(patient, laterality),
        "cancer": int("M" in severities),
        "cancer_source": CancerSource.SEVERITY.value,
        "pathology": pathology,
        "abnormality": abnormality_of(category_of(str(row["class"])) for row in lesions),
        "density_raw": str(rows[0]["bg"]),
        "path": path,
        "format": ImageFormat.PGM.value,
    }, lesions
