"""Synthetic RSNA metadata: train.csv, test.csv, the acquisition machines and fake PHI.

Distributions follow the real competition set (DATA_FACTS.md): ~4.6 images per patient
(L/R x CC/MLO, plus repeats and rare views up to 14), age ~ 58.5 in 26..89, about 2.06% of
breasts positive, machine 49 on about 43% of images, SIGMOID machines on about 22%.
A patient is imaged on one machine; labels are constant within a breast
(patient_id + laterality).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from mammo.contract import (
    AGE,
    BIOPSY,
    BIRADS,
    CANCER,
    DENSITIES,
    DENSITY,
    DIFFICULT_NEGATIVE,
    IMAGE_ID,
    IMPLANT,
    INVASIVE,
    LATERALITY,
    MACHINE_ID,
    PATIENT_ID,
    PREDICTION_ID,
    SITE_ID,
    TEST_COLUMNS,
    TRAIN_COLUMNS,
    VIEW,
    Laterality,
    View,
    prediction_id,
)
from mammo.synth.dicom_writer import PlantedPhi

DEFAULT_POSITIVE_RATE: Final = 0.0206  # positive breasts / breasts in the real train.csv
MAX_ID: Final = 2**31 - 1  # real image ids reach ~2.1e9


class MetadataError(ValueError):
    """Parameters from which no metadata can be built (negative counts, rates outside 0..1)."""


class UnknownMachineError(KeyError):
    """A machine_id that is not in the synthetic machine table."""


@dataclass(frozen=True)
class MachineProfile:
    """Acquisition properties shared by every image of one machine.

    ``share`` is the machine's share of train images (0 for machines seen only in test).
    ``voi_lut_function`` is written to (0028,1056), or left out when ``None``; a machine writes
    ``window_pairs`` Window Center/Width pairs (0028,1050)/(0028,1051).
    """

    machine_id: int
    site_id: int
    share: float
    transfer_syntax: str
    photometric: str
    bits_stored: int
    voi_lut_function: str | None
    window_pairs: int
    rows: int
    cols: int

    @property
    def test_only(self) -> bool:
        return self.share == 0.0


_J2K, _SV1 = str(JPEG2000Lossless), str(JPEGLosslessSV1)
_M1, _M2 = "MONOCHROME1", "MONOCHROME2"

# Site 1 ~57% of images; SIGMOID machines (29, 48, 216) ~22%; J2K ~73%, MONOCHROME1 ~21%.
MACHINES: Final = (
    MachineProfile(21, 1, 0.08, _SV1, _M2, 14, None, 1, 3328, 2560),
    MachineProfile(29, 2, 0.10, _J2K, _M1, 12, "SIGMOID", 3, 2776, 2082),
    MachineProfile(48, 2, 0.09, _J2K, _M2, 12, "SIGMOID", 3, 3062, 2394),
    MachineProfile(49, 1, 0.43, _J2K, _M2, 12, "LINEAR", 1, 2776, 2082),
    MachineProfile(93, 1, 0.06, _SV1, _M1, 16, None, 1, 3328, 2560),
    MachineProfile(170, 2, 0.08, _SV1, _M2, 12, "LINEAR", 2, 2816, 2304),
    MachineProfile(190, 2, 0.03, _J2K, _M2, 15, None, 1, 3328, 2560),
    MachineProfile(197, 2, 0.05, _SV1, _M2, 13, "LINEAR", 1, 2776, 2082),
    MachineProfile(210, 2, 0.05, _J2K, _M1, 14, None, 1, 3062, 2394),
    MachineProfile(216, 2, 0.03, _J2K, _M2, 12, "SIGMOID", 3, 3328, 2560),
    # Seen only in test, as in the competition.
    MachineProfile(12, 1, 0.0, _SV1, _M2, 12, "LINEAR", 1, 3328, 2560),
    MachineProfile(251, 2, 0.0, _J2K, _M1, 16, "SIGMOID", 2, 2776, 2082),
)
_BY_ID: Final = {m.machine_id: m for m in MACHINES}
TEST_ONLY_SHARE: Final = 0.25  # share of test patients imaged on a machine unseen in train

_BASE_VIEWS: Final = (
    (Laterality.L, View.CC),
    (Laterality.L, View.MLO),
    (Laterality.R, View.CC),
    (Laterality.R, View.MLO),
)
# Views of the images beyond the first four (real counts: MLO 4077, CC 2939, AT 19, ...).
_EXTRA_VIEWS: Final = (View.MLO, View.CC, View.AT, View.LM, View.ML, View.LMO)
_EXTRA_VIEW_P: Final = np.array([4077, 2939, 19, 10, 8, 1]) / 7054
_EXTRA_PATIENT_P: Final = 0.31  # 8,233 of 11,913 patients have exactly four images
_MAX_IMAGES: Final = 14
_DENSITY_P: Final = (0.10, 0.42, 0.43, 0.05)
_BIRADS_P: Final = (0.25, 0.63, 0.12)  # BIRADS 0, 1, 2 among filled negatives

_LAST_NAMES: Final = (
    "HARTLEY",
    "OKONKWO",
    "BRENNAN",
    "LINDQVIST",
    "MORAES",
    "CHATTERJEE",
    "VASQUEZ",
    "KOWALSKI",
    "FAIRBANKS",
    "NAKAMURA",
    "ABERNATHY",
    "DESROSIERS",
    "HOLLOWAY",
    "PETRENKO",
    "GALLAGHER",
    "SANTORO",
    "WHITFIELD",
    "ADEYEMI",
    "MCALLISTER",
    "TRAN",
    "ROSSELLI",
    "KVIST",
    "ORTEGA",
)
_FIRST_NAMES: Final = (
    "MARGARET",
    "ADAEZE",
    "LINNEA",
    "PRIYA",
    "HELEN",
    "ROSA",
    "AGNIESZKA",
    "DOROTHY",
    "YUKI",
    "BEATRIZ",
    "CONSTANCE",
    "OKSANA",
    "MAUREEN",
    "FOLAKE",
    "IRENE",
    "THUY",
    "GRETA",
    "LUCIA",
)
_PHYSICIAN_FIRST: Final = ("ALAN", "SUSAN", "RAJ", "INGRID", "TOMAS", "NADIA", "GEORGE", "MEI")
_INSTITUTIONS: Final = {
    1: "LAKESIDE BREAST IMAGING CENTER",
    2: "NORTHGATE WOMENS HEALTH CLINIC",
}
_STUDY_YEAR: Final = 2020  # nominal year of every synthetic screening study


@dataclass(frozen=True)
class SynthMetadata:
    """The CSVs of one synthetic set.

    ``train`` has TRAIN_COLUMNS, ``test`` TEST_COLUMNS; ``test_truth`` is the hidden side of
    the test set (TRAIN_COLUMNS + prediction_id), used to draw the test images.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    test_truth: pd.DataFrame


def machine_profile(machine_id: int) -> MachineProfile:
    """The acquisition properties of ``machine_id``; raises UnknownMachineError."""
    try:
        return _BY_ID[int(machine_id)]
    except KeyError:
        raise UnknownMachineError(f"no synthetic machine {machine_id}") from None


def machine_table() -> pd.DataFrame:
    """One row per machine: id, site, image share, syntax, photometric, bits, VOI, size."""
    return pd.DataFrame([{**vars(m), "test_only": m.test_only} for m in MACHINES])


def build_metadata(
    seed: int,
    train_patients: int,
    test_patients: int = 0,
    positive_rate: float = DEFAULT_POSITIVE_RATE,
) -> SynthMetadata:
    """Draw train.csv and test.csv for ``train_patients`` + ``test_patients`` patients.

    Order: patient ids, image layouts (views per patient), image ids, then per-patient
    attributes, then per-breast labels. Ids are unique across both sets. Deterministic for
    ``seed``. Positive breasts: ``round(positive_rate * breasts)``, at least one when the
    rate is above zero.
    """
    if train_patients < 1 or test_patients < 0:
        raise MetadataError(f"need >= 1 train patient, got {train_patients}/{test_patients}")
    if not 0.0 <= positive_rate <= 1.0:
        raise MetadataError(f"positive_rate must be in [0, 1], got {positive_rate}")
    rng = np.random.default_rng([seed, 0x5EED])
    n = train_patients + test_patients
    patient_ids = _unique_ids(rng, n)
    layouts = [_image_layout(rng) for _ in range(n)]
    image_ids = _unique_ids(rng, sum(len(layout) for layout in layouts))
    split = sum(len(layout) for layout in layouts[:train_patients])
    train = _cohort(
        rng,
        patient_ids[:train_patients],
        layouts[:train_patients],
        image_ids[:split],
        _train_machines(rng, train_patients),
        positive_rate,
    )
    truth = _cohort(
        rng,
        patient_ids[train_patients:],
        layouts[train_patients:],
        image_ids[split:],
        _test_machines(rng, test_patients),
        positive_rate,
    )
    truth[PREDICTION_ID] = pd.array(
        [
            prediction_id(p, lat)
            for p, lat in zip(truth[PATIENT_ID], truth[LATERALITY], strict=True)
        ],
        dtype="str",
    )
    return SynthMetadata(train=train, test=truth[list(TEST_COLUMNS)].copy(), test_truth=truth)


def planted_phi(seed: int, patient_id: int, site_id: int, age: float | None) -> PlantedPhi:
    """Fake but realistic PHI of one patient, deterministic for (seed, patient_id).

    PatientBirthDate (0010,0030) gives exactly ``age`` on 2020-06-30 (a nominal study date);
    InstitutionName (0008,0080) depends on the site only.
    """
    rng = np.random.default_rng([seed, patient_id, 0x9E1])
    years = int(age) if age is not None and np.isfinite(age) else int(rng.integers(40, 75))
    birth = np.datetime64(f"{_STUDY_YEAR - years - 1}-07-01") + rng.integers(0, 365)
    last, first = rng.choice(_LAST_NAMES), rng.choice(_FIRST_NAMES)
    middle = chr(ord("A") + int(rng.integers(0, 26)))
    doctor = f"{rng.choice(_LAST_NAMES)}^{rng.choice(_PHYSICIAN_FIRST)}^^DR"
    return PlantedPhi(
        patient_name=f"{last}^{first}^{middle}",
        patient_birth_date=str(birth).replace("-", ""),
        institution_name=_INSTITUTIONS.get(site_id, f"SITE {site_id} IMAGING"),
        accession_number=f"A{site_id}{int(rng.integers(10**7, 10**8))}",
        referring_physician_name=doctor,
    )


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random integers in [10_000, MAX_ID], in draw order."""
    ids = np.empty(0, dtype=np.int64)
    while len(ids) < n:
        draw = rng.integers(10_000, MAX_ID, size=n + 16, endpoint=True)
        merged = np.concatenate([ids, draw])
        _, first = np.unique(merged, return_index=True)
        ids = merged[np.sort(first)]
    return ids[:n]


def _image_layout(rng: np.random.Generator) -> list[tuple[Laterality, View]]:
    """The (laterality, view) of each image of one patient: four, sometimes up to 14."""
    layout = list(_BASE_VIEWS)
    if rng.random() < _EXTRA_PATIENT_P:
        extra = min(1 + int(rng.poisson(0.9)), _MAX_IMAGES - len(layout))
        for _ in range(extra):
            lat = Laterality.L if rng.random() < 0.5 else Laterality.R
            layout.append((lat, _EXTRA_VIEWS[rng.choice(len(_EXTRA_VIEWS), p=_EXTRA_VIEW_P)]))
    return layout


def _train_machines(rng: np.random.Generator, n: int) -> np.ndarray:
    seen = [m for m in MACHINES if not m.test_only]
    shares = np.array([m.share for m in seen])
    return np.array([m.machine_id for m in seen])[rng.choice(len(seen), n, p=shares / shares.sum())]


def _test_machines(rng: np.random.Generator, n: int) -> np.ndarray:
    """Train machines by share, a TEST_ONLY_SHARE on unseen ones, and at least one unseen."""
    unseen = np.array([m.machine_id for m in MACHINES if m.test_only])
    machines = _train_machines(rng, n)
    new = rng.random(n) < TEST_ONLY_SHARE
    machines[new] = rng.choice(unseen, int(new.sum()))
    if n and not new.any():
        machines[0] = unseen[0]
    return machines


def _cohort(
    rng: np.random.Generator,
    patient_ids: np.ndarray,
    layouts: list[list[tuple[Laterality, View]]],
    image_ids: np.ndarray,
    machine_ids: np.ndarray,
    positive_rate: float,
) -> pd.DataFrame:
    """All TRAIN_COLUMNS for these patients, one row per image, sorted by patient_id."""
    n = len(patient_ids)
    age = np.clip(np.round(rng.normal(58.5, 10.0, n)), 26, 89)
    age[rng.random(n) < 0.0007] = np.nan  # 37 of 54,706 rows
    implant = (rng.random(n) < 0.027).astype(np.int64)
    density = np.array(DENSITIES, dtype=object)[rng.choice(4, n, p=_DENSITY_P)]
    density[rng.random(n) >= 0.54] = None  # ~54% filled
    # Breast b is patient b // 2, laterality "LR"[b % 2].
    cancer = np.zeros(2 * n, dtype=np.int64)
    n_pos = round(positive_rate * 2 * n)
    if positive_rate > 0 and n:
        cancer[rng.choice(2 * n, max(1, n_pos), replace=False)] = 1
    invasive = (cancer * (rng.random(2 * n) < 0.71)).astype(np.int64)
    biopsy = np.maximum(cancer, rng.random(2 * n) < 0.034).astype(np.int64)
    filled = rng.random(2 * n) < 0.48
    birads = np.where(
        cancer == 1,
        np.where(rng.random(2 * n) < 0.9, 0, 1),
        np.where(biopsy == 1, 0, rng.choice(3, 2 * n, p=_BIRADS_P)),
    )
    birads_col = pd.array(np.where(filled, birads, 0), dtype="Int64")
    birads_col[~filled] = pd.NA
    difficult = (cancer == 0) & ((biopsy == 1) | (filled & (birads == 0)))

    # One entry per image: its patient index p and breast index b.
    p = np.array([i for i, layout in enumerate(layouts) for _ in layout], dtype=np.int64)
    lat = [lat.value for layout in layouts for lat, _ in layout]
    b = 2 * p + (np.array(lat, dtype=object) == Laterality.R.value)
    sites = np.array([machine_profile(int(m)).site_id for m in machine_ids], dtype=np.int64)
    frame = pd.DataFrame(
        {
            SITE_ID: sites[p],
            PATIENT_ID: patient_ids[p],
            IMAGE_ID: image_ids,
            LATERALITY: pd.array(lat, dtype="str"),
            VIEW: pd.array([view.value for layout in layouts for _, view in layout], dtype="str"),
            AGE: age[p],
            CANCER: cancer[b],
            BIOPSY: biopsy[b],
            INVASIVE: invasive[b],
            BIRADS: birads_col[b],
            IMPLANT: implant[p],
            DENSITY: pd.array(density[p], dtype="str"),
            MACHINE_ID: machine_ids[p].astype(np.int64),
            DIFFICULT_NEGATIVE: difficult[b],
        }
    )
    frame = frame.sort_values(PATIENT_ID, kind="stable", ignore_index=True)
    return frame[list(TRAIN_COLUMNS)]
