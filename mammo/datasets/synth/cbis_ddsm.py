"""A synthetic CBIS-DDSM copy: the four case-description CSVs and ``CBIS-DDSM/`` folders
as the current downloader writes them (8-bit scans rescaled to 16 bits, 128x96).

Traps present: CSV paths ``<case>/<StudyUID>/<SeriesUID>/000000.dcm`` that resolve to
nothing as written, a quoted path ending in an embedded newline, mask and crop under
``1-1.dcm``/``1-2.dcm`` in either order (and a crop in a separate ``cropped images``
series), a full image repeated over two abnormality ids, ``breast_density`` in the mass
files and ``breast density`` in the calc files, a patient in both the Mass and the Calc
sets, PatientID the case folder. Bad inputs: a row whose case folder is absent, a full
image cut inside its header, a full image no row refers to.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mammo.datasets.synth.common import (
    Planted,
    PlantedFinding,
    PlantedImage,
    breast,
    dicom_bytes,
    lesion_site,
    to_uint8,
    truncated,
    write,
)

ROWS, COLS = 128, 96
MASS = [
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
CALC = [
    c.replace("breast_density", "breast density")
    .replace("mass shape", "calc type")
    .replace("mass margins", "calc distribution")
    for c in MASS
]
# (set, split, patient, side, view, [(pathology, assessment)])
_CASES = (
    ("Mass", "Training", "P_00001", "LEFT", "CC", [("MALIGNANT", "4"), ("BENIGN", "3")]),
    ("Mass", "Training", "P_00001", "LEFT", "MLO", [("MALIGNANT", "4")]),
    ("Calc", "Training", "P_00001", "RIGHT", "CC", [("BENIGN", "2")]),
    ("Calc", "Test", "P_00004", "LEFT", "MLO", [("BENIGN_WITHOUT_CALLBACK", "2")]),
    ("Mass", "Test", "P_00005", "RIGHT", "CC", [("BENIGN", "3")]),
    ("Calc", "Training", "P_00007", "LEFT", "CC", [("MALIGNANT", "5")]),
)


def _uid(*parts: int) -> str:
    return "1.3.6.1.4.1.9590.100.1.2." + ".".join(str(p) for p in parts)


def _dicom(pixels8: npt.NDArray[np.uint8], case: str, study: str, series: str, seed: int) -> bytes:
    return dicom_bytes(
        (pixels8.astype(np.uint16) * 257).astype(np.uint16),
        bits=16,
        uid_seed=seed,
        set_attrs={"PatientID": case, "StudyInstanceUID": study, "SeriesInstanceUID": series},
    )


def write_cbis_ddsm(root: Path, seed: int = 0) -> Planted:
    rng = np.random.default_rng([seed, 5])
    planted = Planted("cbis-ddsm")
    tables: dict[str, list[list[object]]] = {}
    for k, (kind, split, patient, side, view, lesions) in enumerate(_CASES):
        case = f"{kind}-{split}_{patient}_{side}_{view}"
        study, series = _uid(4221127 + k, 10000 + k), _uid(3423861 + k, 20000 + k)
        sites = [lesion_site(rng, ROWS, COLS, side[0]) for _ in lesions]
        sites = [type(s)(s.cx, s.cy + 2.4 * s.r * i, s.r) for i, s in enumerate(sites)]
        img = breast(
            rng,
            ROWS,
            COLS,
            laterality=side[0],
            view=view,
            lesions=tuple(
                (site, p == "MALIGNANT") for site, (p, _) in zip(sites, lesions, strict=True)
            ),
        )
        full = to_uint8(img)
        full_path = (
            f"CBIS-DDSM/{case}/07-20-2016-DDSM-NA-{study[-5:]}/"
            f"1.000000-full mammogram images-{series[-5:]}/1-1.dcm"
        )
        write(root / full_path, _dicom(full, case, study, series, k))
        cancer = int(
            any(
                p == "MALIGNANT"
                for c in _CASES
                if c[2] == patient and c[3] == side
                for p, _ in c[5]
            )
        )
        planted.images.append(
            PlantedImage(
                f"cbis-ddsm:{case}",
                f"cbis-ddsm:{patient}",
                side[0],
                view,
                cancer,
                "pathology",
                full_path,
            )
        )
        name = (
            f"{kind.lower()}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
        )
        table = tables.setdefault(name, [])
        for n, ((pathology, assessment), site) in enumerate(
            zip(lesions, sites, strict=True), start=1
        ):
            roi_case = f"{case}_{n}"
            roi_study, roi_series = (
                _uid(5000 + k, 100000 + 10 * k + n),
                _uid(6000 + k, 200000 + 10 * k + n),
            )
            yy, xx = np.mgrid[0:ROWS, 0:COLS]
            mask = ((np.hypot(xx - site.cx, yy - site.cy) <= site.r) * 255).astype(np.uint8)
            ys, xs = np.nonzero(mask)
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            crop = full[y0 : y1 + 1, x0 : x1 + 1]
            folder = f"CBIS-DDSM/{roi_case}/07-21-2016-DDSM-NA-{roi_study[-5:]}"
            mask_first = (k + n) % 2 == 0
            roi = f"{folder}/1.000000-ROI mask images-{roi_series[-5:]}"
            mask_path = f"{roi}/1-{1 if mask_first else 2}.dcm"
            crop_series = roi_series
            if kind == "Calc" and patient == "P_00007":  # the crop in a series of its own
                crop_series = _uid(7000 + k, 300000 + 10 * k + n)
                crop_path = f"{folder}/1.000000-cropped images-{crop_series[-5:]}/1-1.dcm"
            else:
                crop_path = f"{roi}/1-{2 if mask_first else 1}.dcm"
            write(root / mask_path, _dicom(mask, roi_case, roi_study, roi_series, 100 + k * 10 + n))
            write(
                root / crop_path, _dicom(crop, roi_case, roi_study, crop_series, 200 + k * 10 + n)
            )
            planted.findings.append(
                PlantedFinding(
                    f"cbis-ddsm:{case}",
                    "mass" if kind == "Mass" else "calcification",
                    (float(x0), float(y0), float(x1), float(y1)),
                    mask_path,
                )
            )
            tail = "\n" if n == 1 and k == 1 else ""
            table.append(
                [
                    patient,
                    2 + k % 3,
                    side,
                    view,
                    n,
                    "mass" if kind == "Mass" else "calcification",
                    "IRREGULAR-ARCHITECTURAL_DISTORTION",
                    "N/A",
                    assessment,
                    pathology,
                    3,
                    f"{case}/{study}/{series}/000000.dcm{tail}",
                    f"{roi_case}/{roi_study}/{crop_series}/00000{1 if mask_first else 0}.dcm",
                    f"{roi_case}/{roi_study}/{roi_series}/00000{0 if mask_first else 1}.dcm{tail}",
                ]
            )
    gone = "Mass-Training_P_00009_LEFT_CC"
    tables["mass_case_description_train_set.csv"].append(
        [
            "P_00009",
            2,
            "LEFT",
            "CC",
            1,
            "mass",
            "OVAL",
            "CIRCUMSCRIBED",
            "3",
            "BENIGN",
            2,
            f"{gone}/{_uid(1, 1)}/{_uid(1, 2)}/000000.dcm",
            f"{gone}_1/{_uid(1, 3)}/{_uid(1, 4)}/000000.dcm",
            f"{gone}_1/{_uid(1, 3)}/{_uid(1, 4)}/000001.dcm",
        ]
    )
    mass_train = "mass_case_description_train_set.csv"
    planted.bad[f"{mass_train}:line {_line(tables, mass_train)}"] = "missing_file"
    broken = planted.images.pop(4)  # P_00005: its full image cut inside the header
    write(root / broken.path, truncated((root / broken.path).read_bytes()))
    planted.bad[broken.path] = ""
    planted.bad["mass_case_description_test_set.csv:line 2"] = "missing_file"
    planted.findings = [f for f in planted.findings if f.image_id != broken.image_id]
    stray = (
        "CBIS-DDSM/Mass-Test_P_00010_RIGHT_MLO/07-20-2016-DDSM-NA-11111/"
        "1.000000-full mammogram images-22222/1-1.dcm"
    )
    write(root / stray, (root / planted.images[0].path).read_bytes())
    planted.bad[stray] = "no_csv_row"
    for name, rows in tables.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MASS if name.startswith("mass") else CALC)
        writer.writerows(rows)
        write(root / name, buffer.getvalue().encode())
    return planted


def _line(tables: dict[str, list[list[object]]], name: str) -> int:
    """The line the last row of ``name`` starts on (embedded newlines count)."""
    rows = tables[name]
    return 2 + sum(sum(str(cell).count("\n") for cell in row) + 1 for row in rows[:-1])
