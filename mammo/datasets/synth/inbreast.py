"""A synthetic INbreast copy: ``AllDICOMs/``, ``AllXML/`` and a semicolon ``INbreast.csv``.

Three patients of one exam of four images, one of them with a second exam (two images);
112x96, 14 bits, no window tags. Traps present: semicolons, ``removed`` in Patient ID and
age, ``MLO`` in the CSV where the file name says ``ML``, a blank ACR, Bi-Rads as strings
(``4a``, ``6``), a lesion image without its XML. Bad inputs: a row naming no file, a file
name of another form, an XML that is no property list.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np

from mammo.datasets.synth.common import (
    Planted,
    PlantedFinding,
    PlantedImage,
    breast,
    circle_points,
    dicom_bytes,
    hex_id,
    lesion_site,
    polygon_box,
    to_bits,
    write,
)

ROWS, COLS, BITS = 112, 96, 14
HEADER = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
# (patient, date, side, Bi-Rads, ACR); each breast has a CC and an ML image
_BREASTS = (
    (0, "201001", "L", "6", "2"),
    (0, "201001", "R", "2", "2"),
    (1, "200905", "L", "1", ""),
    (1, "200905", "R", "4c", ""),
    (2, "201003", "L", "3", "4"),
    (2, "201003", "R", "5", "4"),
    (0, "201112", "R", "4a", "3"),
)


def _plist(points: list[tuple[float, float]], name: str) -> bytes:
    roi = {
        "Name": name,
        "NumberOfPoints": len(points),
        "Point_px": [f"({x}, {y})" for x, y in points],
    }
    return plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [roi]}]})


def write_inbreast(root: Path, seed: int = 0) -> Planted:
    rng = np.random.default_rng([seed, 2])
    planted = Planted("inbreast")
    hashes = [hex_id(rng, 16) for _ in range(3)]
    lines = [HEADER]
    file_number = 20586900 + int(rng.integers(0, 50))
    for p, date, side, birads, acr in _BREASTS:
        site = lesion_site(rng, ROWS, COLS, side)
        lesion = birads >= "4"
        for view in ("CC", "ML"):
            file_number += 7
            name = f"{file_number}_{hashes[p]}_MG_{side}_{view}_ANON.dcm"
            img = breast(
                rng,
                ROWS,
                COLS,
                laterality=side,
                view=view,
                lesions=((site, True),) if lesion else (),
            )
            write(
                root / "AllDICOMs" / name,
                dicom_bytes(to_bits(img, BITS), bits=BITS, uid_seed=file_number),
            )
            csv_view = "MLO" if view == "ML" else "CC"  # the CSV says MLO, the name ML
            lines.append(f"removed;removed;{side};{csv_view};{date};{file_number};{acr};{birads}")
            image_id = f"inbreast:{file_number}"
            planted.images.append(
                PlantedImage(
                    image_id,
                    f"inbreast:{hashes[p]}",
                    side,
                    "MLO" if view == "ML" else "CC",
                    int(lesion),
                    "biopsy" if birads == "6" else "birads-proxy",
                    f"AllDICOMs/{name}",
                )
            )
            if lesion and not (birads == "5" and view == "ML"):  # that one has no XML
                points = circle_points(site)
                write(root / "AllXML" / f"{file_number}.xml", _plist(points, "Mass"))
                planted.findings.append(PlantedFinding(image_id, "mass", polygon_box(points)))
            elif birads == "2" and view == "CC":
                point = [(float(site.cx), float(site.cy))]
                write(root / "AllXML" / f"{file_number}.xml", _plist(point, "Calcification"))
                planted.findings.append(
                    PlantedFinding(image_id, "calcification", polygon_box(point))
                )
    last = planted.images[-1].image_id.split(":")[1]
    write(root / "AllXML" / f"{last}.xml", b"<plist><dict><key>Images</key><array>")
    planted.bad[f"AllXML/{last}.xml"] = "bad_annotation"
    planted.findings = [f for f in planted.findings if f.image_id != f"inbreast:{last}"]
    lines.append("removed;removed;L;CC;201001;99999999;2;1")
    planted.bad[f"INbreast.csv:line {len(lines)}"] = "missing_file"
    stray = "AllDICOMs/scan_0001.dcm"
    write(root / stray, (root / planted.images[0].path).read_bytes())
    planted.bad[stray] = "unexpected_path"
    write(root / "INbreast.csv", ("\n".join(lines) + "\n").encode())
    return planted
