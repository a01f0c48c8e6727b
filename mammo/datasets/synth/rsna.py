"""A synthetic RSNA copy: mammo.synth.generate's set, plus two bad inputs for the
quarantine (a train.csv row whose DICOM is removed, a DICOM without a row)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mammo.datasets.synth.common import Planted, PlantedImage
from mammo.synth.generate import SynthConfig, generate


def write_rsna(root: Path, seed: int = 0) -> Planted:
    generate(root, SynthConfig(patients=4, seed=seed, image_size="96x80", workers=1))
    train = pd.read_csv(root / "train.csv")
    planted = Planted("rsna")
    for line, row in enumerate(train.itertuples(index=False), start=2):
        path = f"train_images/{row.patient_id}/{row.image_id}.dcm"
        if line == 2:
            (root / path).unlink()
            planted.bad[f"train.csv:line {line}"] = "missing_file"
            continue
        planted.images.append(
            PlantedImage(
                f"rsna:{row.image_id}",
                f"rsna:{row.patient_id}",
                str(row.laterality),
                str(row.view),
                int(row.cancer),
                "biopsy",
                path,
            )
        )
    stray = f"train_images/{train.patient_id.iloc[-1]}/999999.dcm"
    shutil.copyfile(root / planted.images[-1].path, root / stray)
    planted.bad[stray] = "no_csv_row"
    return planted
