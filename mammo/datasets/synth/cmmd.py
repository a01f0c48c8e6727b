"""A synthetic CMMD copy: ``CMMD/<ID1>/<study>/<series>/1-N.dcm``, the clinical workbook
``CMMD_clinicaldata_revision.xlsx`` and the downloader's ``metadata.csv``.

Five patients of 2 or 4 images (96x80, 12 bits). Traps present: no side or view in any
name (only Image Laterality (0020,0062) and View Code Sequence (0054,0220), no View
Position), a patient with both breasts on two rows, a breast without a row (unknown),
two manufacturers. Bad inputs: a row for a patient without images, a row with side ``X``,
a DICOM cut inside its header.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo.datasets.synth.common import (
    Planted,
    PlantedImage,
    breast,
    dicom_bytes,
    lesion_site,
    to_bits,
    truncated,
    view_code_item,
    write,
)
from mammo.datasets.xlsx import write_workbook

ROWS, COLS, BITS = 96, 80, 12
HEADER = ["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
# patient -> breasts imaged; clinical rows (side, abnormality, classification)
_PATIENTS: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "D1-0001": ("LR", [("L", "mass", "Malignant")]),
    "D1-0002": ("LR", [("L", "calcification", "Benign"), ("R", "both", "Malignant")]),
    "D1-0003": ("LR", [("R", "mass", "Benign")]),
    "D1-0004": ("L", [("L", "both", "Malignant")]),
    "D2-0005": ("R", [("R", "calcification", "Benign")]),
}


def write_cmmd(root: Path, seed: int = 0) -> Planted:
    rng = np.random.default_rng([seed, 4])
    planted = Planted("cmmd")
    rows: list[list[object]] = [list(HEADER)]
    meta = ["Series UID,Subject ID,Number of Images,File Location"]
    for p, (id1, (sides, labels)) in enumerate(_PATIENTS.items()):
        by_side = {side: klass for side, _, klass in labels}
        age = 40 + 3 * p
        for side, abnormality, klass in labels:
            rows.append(
                [id1, side, age, 1, abnormality, klass, "" if klass == "Benign" else "LumA"]
            )
        study = f"07-1{p}-2010-NA-NA-{79377 + p}"
        series = f"1.000000-NA-{70244 + p}"
        n = 0
        for side in sides:
            site = lesion_site(rng, ROWS, COLS, side)
            label = by_side.get(side)
            for view in ("CC", "MLO"):
                n += 1
                lesions = ((site, label == "Malignant"),) if label else ()
                img = breast(rng, ROWS, COLS, laterality=side, view=view, lesions=lesions)
                attrs: dict[str, object] = {
                    "ImageLaterality": side,
                    "ViewCodeSequence": [view_code_item(view)],
                    "Manufacturer": "GE MEDICAL SYSTEMS" if id1.startswith("D1") else "SIEMENS",
                    "PatientID": id1,
                }
                data = dicom_bytes(
                    to_bits(img, BITS),
                    bits=BITS,
                    uid_seed=p * 10 + n,
                    set_attrs=attrs,
                    drop=("ViewPosition",),
                )
                path = f"CMMD/{id1}/{study}/{series}/1-{n}.dcm"
                write(root / path, data)
                cancer = None if label is None else int(label == "Malignant")
                planted.images.append(
                    PlantedImage(
                        f"cmmd:{path[5:-4]}",
                        f"cmmd:{id1}",
                        side,
                        view,
                        cancer,
                        "" if label is None else "pathology",
                        path,
                    )
                )
        meta.append(f"1.2.{p},{id1},{n},./CMMD/{id1}/{study}/{series}")
    bad = "CMMD/D1-0003/07-12-2010-NA-NA-79379/1.000000-NA-70246/1-9.dcm"
    write(root / bad, truncated((root / planted.images[0].path).read_bytes()))
    planted.bad[bad] = ""
    rows.append(["D1-0009", "L", 50, 1, "mass", "Malignant", ""])
    planted.bad[f"CMMD_clinicaldata_revision.xlsx:row {len(rows)}"] = "missing_file"
    rows.append(["D1-0004", "X", 50, 1, "mass", "Malignant", ""])
    planted.bad[f"CMMD_clinicaldata_revision.xlsx:row {len(rows)}"] = "bad_csv_row"
    write(root / "CMMD_clinicaldata_revision.xlsx", write_workbook(rows))
    write(root / "metadata.csv", ("\n".join(meta) + "\n").encode())
    return planted
