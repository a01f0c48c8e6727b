"""Synthetic RSNA-layout data for tests, generated (never downloaded)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pydicom

from mammo import contract as c
from mammo.synth.faults import FAULT_PHI, FAULTS
from mammo.synth.generate import SynthConfig, generate


def make_raw(root: Path, patients: int = 8, seed: int = 1, **kw: object) -> Path:
    """Write a small RSNA-layout set (256x208 images) under ``root`` and return it."""
    generate(root, SynthConfig(patients=patients, seed=seed, workers=1, **kw))  # type: ignore[arg-type]
    return root


def copy_raw(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def add_fault_files(raw: Path) -> dict[int, str | None]:
    """Add one CSV row + file per entry of FAULTS; returns image_id -> expected reason."""
    csv = pd.read_csv(raw / "train.csv")
    template = csv.iloc[0].to_dict()
    expected: dict[int, str | None] = {}
    rows = []
    for offset, fault in enumerate(FAULTS.values()):
        patient_id, image_id = 900_000_000 + offset, 910_000_000 + offset
        path = raw / c.image_relpath(c.Subset.TRAIN, patient_id, image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fault.make())
        rows.append({**template, c.PATIENT_ID: patient_id, c.IMAGE_ID: image_id})
        expected[image_id] = None if fault.expected is None else fault.expected.value
    pd.concat([csv, pd.DataFrame(rows)]).to_csv(raw / "train.csv", index=False)
    return expected


def planted_phi(raw: Path) -> set[str]:
    """Every PHI value written into the DICOMs under ``raw`` (and the fault files' PHI)."""
    values = set(FAULT_PHI.values())
    for path in raw.rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - fault files are not all readable DICOMs
            continue
        for keyword in (
            "PatientName",
            "PatientBirthDate",
            "InstitutionName",
            "AccessionNumber",
            "ReferringPhysicianName",
        ):
            value = str(ds.get(keyword, "") or "")
            if value:
                values.add(value)
    return values


def phi_hits(root: Path, values: set[str]) -> list[tuple[str, str]]:
    """(file, value) for every PHI value found in any file under ``root``.

    Birth dates (8 digits) are only matched as whole tokens, since image ids are long digit
    strings that may contain any 8-digit run by chance.
    """
    import re

    patterns = []
    for value in values:
        for variant in {value, value.replace("^", " ")}:
            escaped = re.escape(variant.encode())
            if variant.isdigit():
                escaped = rb"(?<![0-9])" + escaped + rb"(?![0-9])"
            patterns.append((value, re.compile(escaped)))
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits.extend((str(path), value) for value, pattern in patterns if pattern.search(data))
    return hits


def tree_digest(root: Path, pattern: str = "*") -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob(pattern))
        if p.is_file()
    }
