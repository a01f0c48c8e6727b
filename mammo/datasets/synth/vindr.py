"""A synthetic VinDr-Mammo copy: ``images/<study>/<image>.dicom`` and its two label CSVs.

Four studies of four images (96x80, 12 bits). Traps present: the ``.dicom`` extension,
``finding_categories`` as a list written as a string (two categories on one box),
``['No Finding']`` with empty boxes, an empty ``finding_birads``, a box BI-RADS unlike its
breast's, a negative box corner, MONOCHROME1 with PixelPaddingValue and multi-valued
Window Center, no PatientID. Bad inputs: a row naming no file, a file that is not DICOM,
a file without a row, a finding row whose categories are no list.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from mammo.datasets.synth.common import (
    Planted,
    PlantedFinding,
    PlantedImage,
    breast,
    dicom_bytes,
    hex_id,
    lesion_site,
    to_bits,
    write,
)

ROWS, COLS, BITS = 96, 80, 12
COLUMNS = [
    *("study_id", "series_id", "image_id", "laterality", "view_position", "height", "width"),
    *("breast_birads", "breast_density", "split"),
]
FINDING_COLUMNS = [*COLUMNS, "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax"]
# study -> breast BI-RADS of L, R
_BIRADS = ((1, 4), (2, 2), (5, 3), (1, 1))


def _csv(header: list[str], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_vindr(root: Path, seed: int = 0) -> Planted:
    rng = np.random.default_rng([seed, 1])
    planted = Planted("vindr")
    breast_rows: list[list[object]] = []
    finding_rows: list[list[object]] = []
    for s, birads_lr in enumerate(_BIRADS):
        study, series = hex_id(rng), hex_id(rng)
        mono1 = s == 2
        for side, birads in zip("LR", birads_lr, strict=True):
            site = lesion_site(rng, ROWS, COLS, side)
            for view in ("CC", "MLO"):
                image = hex_id(rng)
                lesion = birads >= 4
                img = breast(
                    rng,
                    ROWS,
                    COLS,
                    laterality=side,
                    view=view,
                    lesions=((site, True),) if lesion else (),
                )
                attrs: dict[str, object] = {"Manufacturer": "SIEMENS" if s % 2 else "IMS"}
                if mono1:
                    attrs["PixelPaddingValue"] = 2**BITS - 1
                data = dicom_bytes(
                    to_bits(img, BITS, monochrome1=mono1),
                    bits=BITS,
                    photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                    windows=((1800.0, 2000.0), (3000.0, 3500.0)) if mono1 else ((), ()),
                    uid_seed=seed * 1000 + len(breast_rows),
                    set_attrs=attrs,
                    drop=("PatientID",),
                )
                path = f"images/{study}/{image}.dicom"
                base: list[object] = [
                    study,
                    series,
                    image,
                    side,
                    view,
                    ROWS,
                    COLS,
                    f"BI-RADS {birads}",
                    f"DENSITY {'ABCD'[s]}",
                    "test" if s == 3 else "training",
                ]
                breast_rows.append(base)
                write(root / path, data)
                planted.images.append(
                    PlantedImage(
                        f"vindr:{image}",
                        f"vindr:{study}",
                        side,
                        view,
                        int(max(birads_lr[0 if side == "L" else 1], 0) >= 4),
                        "birads-proxy",
                        path,
                    )
                )
                if lesion:
                    x0, y0, x1, y1 = site.box
                    if s == 0 and view == "CC":
                        x0 = -1.7  # slightly negative, to clip
                    box_birads = "BI-RADS 3" if s == 0 else f"BI-RADS {birads}"
                    cats = "['Mass', 'Suspicious Calcification']" if s == 2 else "['Mass']"
                    finding_rows.append([*base, cats, box_birads, x0 + 0.25, y0 + 0.5, x1, y1])
                    box = (max(0.0, x0 + 0.25), y0 + 0.5, x1, y1)
                    category = "calcification+mass" if s == 2 else "mass"
                    planted.findings.append(PlantedFinding(f"vindr:{image}", category, box))
                elif s == 1 and side == "R" and view == "MLO":
                    finding_rows.append(
                        [*base, "['Suspicious Lymph Node']", "", 5.0, 6.0, 20.5, 22.0]
                    )
                    planted.findings.append(
                        PlantedFinding(f"vindr:{image}", "other", (5.0, 6.0, 20.5, 22.0))
                    )
                else:
                    finding_rows.append([*base, "['No Finding']", "", "", "", "", ""])
    study = str(breast_rows[0][0])
    breast_rows.append(
        [study, "s", "f" * 32, "L", "CC", ROWS, COLS, "BI-RADS 1", "DENSITY A", "training"]
    )
    planted.bad[f"breast-level_annotations.csv:line {len(breast_rows) + 1}"] = "missing_file"
    garbage = f"images/{study}/{'e' * 32}.dicom"
    write(root / garbage, b"not a dicom file at all, " * 20)
    breast_rows.append(
        [study, "s", "e" * 32, "R", "CC", ROWS, COLS, "BI-RADS 1", "DENSITY A", "training"]
    )
    planted.bad[garbage] = "not_dicom"
    stray = f"images/{study}/{'d' * 32}.dicom"
    write(root / stray, (root / str(planted.images[0].path)).read_bytes())
    planted.bad[stray] = "no_csv_row"
    finding_rows.append([*breast_rows[0][:10], "Mass", "", 1, 1, 2, 2])
    planted.bad[f"finding_annotations.csv:line {len(finding_rows) + 1}"] = "bad_csv_row"
    write(root / "breast-level_annotations.csv", _csv(COLUMNS, breast_rows))
    write(root / "finding_annotations.csv", _csv(FINDING_COLUMNS, finding_rows))
    return planted
