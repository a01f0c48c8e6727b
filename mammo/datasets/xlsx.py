"""The first sheet of an Office Open XML workbook (.xlsx) as rows of text, and a writer.

CMMD's clinical table ships as ``CMMD_clinicaldata_revision.xlsx``. An .xlsx is a zip:
``xl/workbook.xml`` lists the sheets, ``xl/_rels/workbook.xml.rels`` maps them to
``xl/worksheets/sheetN.xml``, whose cells ``<c r="B2" t="s|inlineStr|str|n"><v>..</v>``
refer to ``xl/sharedStrings.xml`` for ``t="s"``. Only the standard library is used.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from xml.etree import ElementTree

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")


class WorkbookError(ValueError):
    """A file that is not a readable .xlsx workbook."""


def _column_index(letters: str) -> int:
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("A") + 1
    return index - 1


def _text(element: ElementTree.Element) -> str:
    return "".join(t.text or "" for t in element.iter(f"{{{_NS['m']}}}t"))


def _first_sheet(book: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(book.read("xl/workbook.xml"))
    sheet = workbook.find("m:sheets/m:sheet", _NS)
    if sheet is None:
        raise WorkbookError("the workbook has no sheet")
    rel_id = sheet.get(_REL_NS)
    rels = ElementTree.fromstring(book.read("xl/_rels/workbook.xml.rels"))
    for rel in rels:
        if rel.get("Id") == rel_id:
            target = str(rel.get("Target", "")).lstrip("/")
            return target if target.startswith("xl/") else f"xl/{target}"
    raise WorkbookError("the first sheet has no part")


def read_first_sheet(data: bytes) -> list[list[str]]:
    """Every row of the first sheet, cells as text ("" where empty), in sheet order."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            shared: list[str] = []
            if "xl/sharedStrings.xml" in book.namelist():
                root = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
                shared = [_text(si) for si in root.findall("m:si", _NS)]
            sheet = ElementTree.fromstring(book.read(_first_sheet(book)))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise WorkbookError(f"not a readable .xlsx workbook: {exc}") from exc
    rows: list[list[str]] = []
    for row in sheet.iter(f"{{{_NS['m']}}}row"):
        cells: dict[int, str] = {}
        for cell in row.findall("m:c", _NS):
            match = _CELL_REF.match(cell.get("r", ""))
            col = _column_index(match.group(1)) if match else len(cells)
            kind, value = cell.get("t", "n"), cell.find("m:v", _NS)
            if kind == "inlineStr":
                text = _text(cell)
            elif kind == "s" and value is not None and (value.text or "").isdigit():
                text = shared[int(value.text or 0)] if int(value.text or 0) < len(shared) else ""
            else:
                text = "" if value is None else value.text or ""
            cells[col] = text
        rows.append([cells.get(i, "") for i in range(max(cells) + 1)] if cells else [])
    return rows


def write_workbook(rows: Sequence[Sequence[object]]) -> bytes:
    """A one-sheet .xlsx: strings as inline strings, ints and floats as numbers."""
    body = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_letters(c)}{r}"
            if isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            else:
                text = str(value).replace("&", "&amp;").replace("<", "&lt;")
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>')
        body.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = _NS["m"]
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    types = "http://schemas.openxmlformats.org/package/2006/content-types"
    office = "application/vnd.openxmlformats"
    sheet_ct = f"{office}-officedocument.spreadsheetml"
    parts = {
        "[Content_Types].xml": (
            f'<Types xmlns="{types}">'
            f'<Default Extension="rels" ContentType="{office}-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{sheet_ct}.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{sheet_ct}.worksheet+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{main}"><sheetData>{"".join(body)}</sheetData></worksheet>'
        ),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as book:
        for name, xml in parts.items():
            book.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), xml)
    return buffer.getvalue()


def _letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters
