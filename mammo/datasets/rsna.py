"""RSNA Screening Mammography: ``train.csv`` (and ``test.csv``) beside
``{subset}_images/<patient_id>/<image_id>.dcm``, integer ids.

Delegates to mammo.inventory: :func:`~mammo.inventory.parse_metadata_csv` types the rows
and :func:`~mammo.inventory.join_inventory` pairs them with the listed files, so the
quarantine reasons are those of today's ingest. Ids keep their decimal form
(``rsna:10006``); ``cancer`` is the competition's biopsy-confirmed label (``biopsy``),
missing for test.csv rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammo import contract as c
from mammo.datasets.files import relpath, walk_files
from mammo.datasets.registry import Adapter, DatasetError, register_dataset
from mammo.datasets.schema import (
    CancerSource,
    DatasetTables,
    ImageFormat,
    Record,
    findings_frame,
    images_frame,
    quarantine_frame,
    quarantine_row,
)
from mammo.inventory import FileInfo, MetadataError, join_inventory, parse_metadata_csv


def _text(value: object) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


@register_dataset("rsna")
class RsnaAdapter(Adapter):
    markers = "train.csv beside train_images/"

    def found(self, root: Path) -> str | None:
        if (root / "train.csv").is_file() and (root / "train_images").is_dir():
            return "train.csv and train_images/"
        return None

    def read(self, root: Path) -> DatasetTables:
        images: list[Record] = []
        quarantine: list[Record] = []
        for subset in c.Subset:
            csv = root / c.csv_name(subset)
            if not csv.is_file():
                continue
            try:
                rows, csv_quarantine = parse_metadata_csv(csv.read_bytes(), subset)
            except MetadataError as exc:
                raise DatasetError(str(exc)) from exc
            files = [
                FileInfo(relpath(p, root), p.stat().st_size, str(p.stat().st_mtime_ns))
                for p in walk_files(root / c.images_dir(subset), (".dcm",))
            ]
            inventory = join_inventory(rows, files, subset, csv_quarantine)
            for q in inventory.quarantine.itertuples(index=False):
                quarantine.append(
                    quarantine_row(str(q.source), c.QuarantineReason(q.reason), str(q.detail))
                )
            for row in inventory.candidates.to_dict("records"):
                images.append(self._image(row, subset))
        return DatasetTables(
            self.name, images_frame(images), findings_frame([]), quarantine_frame(quarantine)
        )

    def _image(self, row: dict[str, object], subset: c.Subset) -> Record:
        patient = f"rsna:{int(str(row[c.PATIENT_ID]))}"
        cancer = row.get(c.CANCER)
        known = cancer is not None and not pd.isna(cancer) and subset is c.Subset.TRAIN
        return {
            "dataset": self.name,
            "patient_id": patient,
            "image_id": f"rsna:{int(str(row[c.IMAGE_ID]))}",
            "laterality": row[c.LATERALITY],
            "view": row[c.VIEW],
            "prediction_id": f"{patient}_{row[c.LATERALITY]}",
            "age": None if pd.isna(row[c.AGE]) else float(str(row[c.AGE])),
            "cancer": int(str(cancer)) if known else None,
            "cancer_source": CancerSource.BIOPSY.value if known else "",
            "birads": _text(row[c.BIRADS]),
            "density": _text(row[c.DENSITY]),
            "density_raw": _text(row[c.DENSITY]),
            "split_official": subset.value,
            "site_id": _text(row[c.SITE_ID]),
            "machine_id": _text(row[c.MACHINE_ID]),
            "path": row[c.SOURCE_PATH],
            "format": ImageFormat.DICOM.value,
        }
