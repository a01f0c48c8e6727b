"""A synthetic mini-MIAS copy: ``mdbNNN.pgm`` (P5, 8-bit) and ``Info.txt``, with its traps.

Six patients, twelve films of 128x128 (even numbers left, as the documentation says; the
adapter must find the side from the pixels). Traps present: NORM rows ending in a space,
a refnum on two rows, a diffuse calcification without X/Y/RADIUS, Y from the bottom left.
Bad inputs: a truncated PGM, a row naming no file, a malformed row (its film then has no
row), an exact repeat of a row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mammo.datasets.pgm import encode_pgm
from mammo.datasets.synth.common import (
    Circle,
    Planted,
    PlantedFinding,
    PlantedImage,
    breast,
    lesion_site,
    to_uint8,
    write,
)

SIZE = 128
# film -> (BG, [(CLASS, SEVERITY or None, placed?)]); films not listed are NORM
_LESIONS: dict[int, tuple[str, list[tuple[str, str | None, bool]]]] = {
    3: ("F", [("SPIC", "M", True)]),
    5: ("D", [("CIRC", "B", True)]),
    7: ("G", [("CIRC", "B", True), ("SPIC", "M", True)]),
    9: ("D", [("CALC", "M", False)]),
    10: ("F", [("MISC", "B", True)]),
}


def write_mias(root: Path, seed: int = 0) -> Planted:
    rng = np.random.default_rng([seed, 3])
    planted = Planted("mias")
    lines = ["REFNUM BG CLASS SEVERITY X Y RADIUS"]
    for n in range(1, 13):
        refnum, side = f"mdb{n:03d}", "L" if n % 2 == 0 else "R"
        bg, lesions = _LESIONS.get(n, ("G", []))
        circles = []
        for k, (klass, severity, placed) in enumerate(lesions):
            site = lesion_site(rng, SIZE, SIZE, side)
            if k:  # a second lesion of the same film, lower down
                site = Circle(site.cx, round(site.cy + 2.6 * site.r), site.r)
            circles.append((site, severity == "M"))
            if placed:
                x, y, r = int(site.cx), SIZE - int(site.cy), int(site.r)
                lines.append(f"{refnum} {bg} {klass} {severity} {x} {y} {r}")
            else:
                lines.append(f"{refnum} {bg} {klass} {severity}")
            if n not in (11, 12):
                box = site.box if placed else None
                category = "calcification" if klass == "CALC" else "mass"
                planted.findings.append(PlantedFinding(f"mias:{refnum}", category, box))
        if not lesions:
            lines.append(f"{refnum} {bg} NORM ")  # the trailing space of the real file
        img = to_uint8(breast(rng, SIZE, SIZE, laterality=side, view="MLO", lesions=tuple(circles)))
        data = encode_pgm(img)
        if n == 11:
            data = data[: len(data) // 2]
            planted.bad[f"{refnum}.pgm"] = "truncated"
        elif n != 12:
            cancer = int(any(s == "M" for _, s, _ in lesions))
            planted.images.append(
                PlantedImage(
                    f"mias:{refnum}",
                    f"mias:{(n + 1) // 2}",
                    side,
                    "MLO",
                    cancer,
                    "severity",
                    f"{refnum}.pgm",
                )
            )
        write(root / f"{refnum}.pgm", data)
    malformed = lines.index("mdb012 G NORM ")
    lines[malformed] = "mdb012 G XXXX"
    planted.bad[f"Info.txt:line {malformed + 1}"] = "bad_csv_row"
    planted.bad["mdb012.pgm"] = "no_csv_row"
    lines.append(lines[1])
    planted.bad[f"Info.txt:line {len(lines)}"] = "duplicate_row"
    lines.append("mdb013 G NORM ")
    planted.bad[f"Info.txt:line {len(lines)}"] = "missing_file"
    write(root / "Info.txt", ("\n".join(lines) + "\n").encode())
    return planted
