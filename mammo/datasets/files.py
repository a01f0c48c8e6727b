"""Reading the files of a layout: listings, CSV text, DICOM headers, pixel arrays.

Header reads use pydicom's ``dcmread(..., stop_before_pixels=True)``; only the attributes
of :data:`HEADER_ATTRIBUTES` are taken from a header, never a patient attribute. A file
that cannot be read raises :class:`~mammo.errors.MammoInputError` with its reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.errors import InvalidDicomError

from mammo.contract import QuarantineReason
from mammo.datasets.schema import Record, quarantine_row
from mammo.errors import MammoInputError

# Image Laterality (0020,0062), Laterality (0020,0060), View Code Sequence (0054,0220),
# View Position (0018,5101), Manufacturer (0008,0070), Rows/Columns (0028,0010/0011),
# BitsStored (0028,0101), PhotometricInterpretation (0028,0004), and the Study/Series
# Instance UIDs (0020,000D/000E), which only match CBIS-DDSM files and are never output.
HEADER_ATTRIBUTES: Final = (
    "ImageLaterality",
    "Laterality",
    "ViewCodeSequence",
    "ViewPosition",
    "Manufacturer",
    "Rows",
    "Columns",
    "BitsStored",
    "PhotometricInterpretation",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
# SNOMED CT codes of View Code Sequence (0054,0220) Code Value (0008,0100).
VIEW_CODES: Final = {"399162004": "CC", "399368009": "MLO"}


@dataclass(frozen=True)
class Header:
    laterality: str | None
    view: str | None
    manufacturer: str | None
    rows: int
    cols: int
    bits_stored: int | None
    photometric: str | None
    study_uid: str
    series_uid: str


def relpath(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def walk_files(folder: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Files under ``folder`` whose lower-cased name ends with one of ``suffixes``, sorted;
    hidden files (a leading dot) are skipped."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if (
            path.is_file()
            and not path.name.startswith(".")
            and path.name.lower().endswith(suffixes)
        ):
            yield path


def read_csv_rows(
    path: Path, delimiter: str = ","
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV as distributed through the csv module (quoted fields may hold newlines):
    (header, [(line of the record's start, {column: stripped cell})]). A BOM is dropped."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    previous = 0
    for record in reader:
        start, previous = previous + 1, reader.line_num
        if not header:
            header = [cell.strip() for cell in record]
            continue
        if not any(cell.strip() for cell in record):
            continue
        cells = [cell.strip() for cell in record] + [""] * (len(header) - len(record))
        rows.append((start, dict(zip(header, cells, strict=False))))
    return header, rows


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    text = str(value).strip() if value is not None else ""
    return text or None


def view_of(ds: pydicom.Dataset) -> str | None:
    """The view from View Code Sequence (0054,0220) Code Value, else View Position."""
    for item in ds.get("ViewCodeSequence", []) or []:
        code = str(item.get("CodeValue", "")).strip()
        if code in VIEW_CODES:
            return VIEW_CODES[code]
    return _text(ds, "ViewPosition")


def header_or_quarantine(path: Path, source: str, quarantine: list[Record]) -> Header | None:
    """:func:`read_header` of ``path``, or None with a quarantine row for ``source``."""
    try:
        return read_header(path)
    except MammoInputError as exc:
        quarantine.append(quarantine_row(source, exc.reason, exc.detail))
        return None


def read_header(path: Path) -> Header:
    """The whitelisted header attributes of one DICOM file, pixels not read."""
    if path.stat().st_size == 0:
        raise MammoInputError(QuarantineReason.EMPTY_FILE, "the file is empty")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise MammoInputError(QuarantineReason.NOT_DICOM, f"not a DICOM file: {exc}") from exc
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise MammoInputError(
            QuarantineReason.UNREADABLE, f"header cannot be parsed: {exc}"
        ) from exc
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows is None or cols is None:
        raise MammoInputError(QuarantineReason.NO_PIXEL_DATA, "no Rows/Columns in the header")
    bits = ds.get("BitsStored")
    return Header(
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        view=view_of(ds),
        manufacturer=_text(ds, "Manufacturer"),
        rows=int(rows),
        cols=int(cols),
        bits_stored=None if bits is None else int(bits),
        photometric=_text(ds, "PhotometricInterpretation"),
        study_uid=_text(ds, "StudyInstanceUID") or "",
        series_uid=_text(ds, "SeriesInstanceUID") or "",
    )


def read_pixels(path: Path) -> npt.NDArray[np.generic]:
    """The stored values of an uncompressed (or pydicom-decodable) single-frame DICOM."""
    try:
        ds = pydicom.dcmread(path)
        pixels: npt.NDArray[np.generic] = ds.pixel_array
    except InvalidDicomError as exc:
        raise MammoInputError(QuarantineReason.NOT_DICOM, f"not a DICOM file: {exc}") from exc
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        AttributeError,
        RuntimeError,
    ) as exc:
        raise MammoInputError(QuarantineReason.TRUNCATED, f"pixels cannot be read: {exc}") from exc
    return pixels
