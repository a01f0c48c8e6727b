"""Write a synthetic RSNA set: train.csv, test.csv and {subset}_images/{patient_id}/{image_id}.dcm.

Three layers: ``synth_image`` draws one image (pure), ``synth_dicom`` turns one CSV row into
DICOM bytes, ``generate`` writes the CSVs and fans chunks of rows out to worker processes
that write files atomically. Every image is seeded from ``(seed, image_id)`` alone, so the
same SynthConfig gives byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd

from mammo.contract import (
    AGE,
    CANCER,
    DENSITY,
    IMAGE_ID,
    IMPLANT,
    LATERALITY,
    MACHINE_ID,
    PATIENT_ID,
    SITE_ID,
    SYNTHETIC_MARKER,
    SYNTHETIC_ORACLE,
    VIEW,
    Subset,
    csv_name,
    image_relpath,
)
from mammo.oracle import ORACLE, oracle_auc
from mammo.synth.dicom_writer import DicomSpec, PlantedPhi, encode_dicom
from mammo.synth.lesion import DIFFICULTIES, conspicuity
from mammo.synth.metadata import (
    DEFAULT_POSITIVE_RATE,
    MachineProfile,
    build_metadata,
    machine_profile,
    planted_phi,
)
from mammo.synth.phantom import display_window, render, to_stored

SMALL_SIZE: Final = (256, 208)  # rows, cols: the aspect of a 3328x2560 detector, for tests
MAX_SIDE: Final = 8192
_SIZE = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_CHUNK_MAX: Final = 64
_DECOY_STREAM: Final = 0xDEC0  # seeds of the streams besides the image's own
_OCCULT_STREAM: Final = 0x0CC1


class SynthConfigError(ValueError):
    """A SynthConfig that cannot be generated (bad size, counts or rate)."""


class OutputNotEmptyError(FileExistsError):
    """``generate`` refuses to mix a new set with files already in out_dir."""


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesize. ``image_size``: "small" (256x208), "full" (each machine's own
    detector size, 2776x2082 .. 3328x2560) or "RxC", e.g. "512x416".

    ``test_patients`` defaults to max(2, patients // 10) and ``workers`` to os.cpu_count().
    """

    patients: int = 100
    seed: int = 0
    positive_rate: float = DEFAULT_POSITIVE_RATE
    image_size: str = "small"
    with_test: bool = False
    test_patients: int | None = None
    workers: int | None = None
    difficulty: str = "easy"  # a preset of mammo/synth/lesion.py: easy, realistic

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES:
            raise SynthConfigError(
                f"difficulty must be one of {sorted(DIFFICULTIES)}, got {self.difficulty!r}"
            )
        if self.patients < 1:
            raise SynthConfigError(f"patients must be >= 1, got {self.patients}")
        if not 0.0 <= self.positive_rate <= 1.0:
            raise SynthConfigError(f"positive_rate must be in [0, 1], got {self.positive_rate}")
        if self.test_patients is not None and self.test_patients < 1:
            raise SynthConfigError(f"test_patients must be >= 1, got {self.test_patients}")
        if self.workers is not None and self.workers < 1:
            raise SynthConfigError(f"workers must be >= 1, got {self.workers}")
        if self.image_size not in ("small", "full"):
            explicit_size(self.image_size)

    @property
    def n_test_patients(self) -> int:
        if not self.with_test:
            return 0
        return self.test_patients or max(2, self.patients // 10)

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote. ``planted_phi`` holds every fake PHI string in the DICOMs."""

    out_dir: Path
    patients: int
    test_patients: int
    images: int
    test_images: int
    positive_images: int  # train images of positive breasts
    positive_breasts: int  # in train
    by_transfer_syntax: Mapping[str, int]  # all images, train and test
    oracle_auc: float | None  # breast-level, train images; None without both classes
    elapsed_s: float
    planted_phi: frozenset[str] = field(repr=False)


@dataclass(frozen=True)
class ImageJob:
    """One CSV row, as much of it as drawing and encoding its image needs."""

    subset: Subset
    patient_id: int
    image_id: int
    laterality: str
    view: str
    age: float | None
    site_id: int
    machine_id: int
    cancer: bool
    density: str | None
    implant: bool


@dataclass(frozen=True)
class SynthImage:
    pixels: npt.NDArray[np.uint16]  # (rows, cols) stored values
    spec: DicomSpec
    oracle: float  # the known-signal observer's statistic (mammo/oracle.py)


def explicit_size(image_size: str) -> tuple[int, int]:
    """Parse "RxC" (rows x columns, 32..MAX_SIDE each); raises SynthConfigError."""
    match = _SIZE.match(image_size)
    if match is None:
        raise SynthConfigError(f'image_size must be "small", "full" or "RxC", got {image_size!r}')
    rows, cols = int(match.group(1)), int(match.group(2))
    if not (32 <= rows <= MAX_SIDE and 32 <= cols <= MAX_SIDE):
        raise SynthConfigError(f"image_size {image_size} outside 32..{MAX_SIDE}")
    return rows, cols


def frame_size(image_size: str, machine: MachineProfile) -> tuple[int, int]:
    """(rows, cols) of an image of ``machine`` for a SynthConfig.image_size."""
    if image_size == "small":
        return SMALL_SIZE
    if image_size == "full":
        return machine.rows, machine.cols
    return explicit_size(image_size)


def image_jobs(subset: Subset, frame: pd.DataFrame) -> Iterator[ImageJob]:
    """One ImageJob per row of a metadata frame (train, or the test truth with labels)."""
    columns = (PATIENT_ID, IMAGE_ID, LATERALITY, VIEW, AGE, SITE_ID, MACHINE_ID)
    rest = (CANCER, DENSITY, IMPLANT)
    for pid, iid, lat, view, age, site, machine, cancer, density, implant in zip(
        *(frame[c] for c in (*columns, *rest)), strict=True
    ):
        yield ImageJob(
            subset=subset,
            patient_id=int(pid),
            image_id=int(iid),
            laterality=str(lat),
            view=str(view),
            age=None if pd.isna(age) else float(age),
            site_id=int(site),
            machine_id=int(machine),
            cancer=bool(cancer),
            density=None if pd.isna(density) else str(density),
            implant=bool(implant),
        )


def synth_image(job: ImageJob, seed: int, image_size: str, difficulty: str = "easy") -> SynthImage:
    """Draw one image and its header. Order: side of the frame (~50/50, independent of
    ImageLaterality), phantom, stored values with noise, window pairs; all from one
    generator seeded with (seed, image_id). Whether the lesion is occult in this view is
    the breast's draw (seeded with the patient and laterality), so a breast's views agree;
    a negative's oracle decoys come from a generator of their own, so they change nothing."""
    machine = machine_profile(job.machine_id)
    rows, cols = frame_size(image_size, machine)
    rng = np.random.default_rng([seed, job.image_id])
    faces_right = bool(rng.random() < 0.5)
    spec = conspicuity(difficulty)
    rendering = render(
        rng,
        rows,
        cols,
        view=job.view,
        density=job.density,
        cancer=job.cancer,
        faces_right=faces_right,
        implant=job.implant,
        spec=spec,
        occult=_occult(job, seed, spec.one_view_rate),
        decoy_rng=np.random.default_rng([seed, job.image_id, _DECOY_STREAM]),
    )
    img = rendering.image
    pixels = to_stored(img, machine.bits_stored, machine.photometric, rng)
    centers, widths = display_window(
        img, machine.bits_stored, machine.photometric, machine.window_pairs
    )
    dicom = DicomSpec(
        transfer_syntax=machine.transfer_syntax,
        photometric=machine.photometric,
        bits_stored=machine.bits_stored,
        window_centers=centers,
        window_widths=widths,
        voi_lut_function=machine.voi_lut_function,
        patient_id=job.patient_id,
        image_laterality=job.laterality,
        view_position=job.view,
        phi=job_phi(job, seed),
        uid_seed=seed * 2**32 + job.image_id,
    )
    return SynthImage(pixels=pixels, spec=dicom, oracle=rendering.oracle)


def _occult(job: ImageJob, seed: int, one_view_rate: float) -> bool:
    """Whether a positive breast's lesion hides in this image's view: the breast draws
    once whether it has an occult view, and which (CC, or the oblique/lateral ones)."""
    if one_view_rate <= 0.0 or not job.cancer:
        return False
    side = 0 if job.laterality == "L" else 1
    rng = np.random.default_rng([seed, job.patient_id, side, _OCCULT_STREAM])
    if rng.random() >= one_view_rate:
        return False
    hides_cc = bool(rng.random() < 0.5)
    return (job.view == "CC") == hides_cc


def job_phi(job: ImageJob, seed: int) -> PlantedPhi:
    """The fake PHI written into the image's header (the same for all of a patient's)."""
    return planted_phi(seed, job.patient_id, job.site_id, job.age)


def synth_dicom(job: ImageJob, seed: int, image_size: str) -> bytes:
    """The DICOM Part 10 bytes of one CSV row (see synth_image)."""
    image = synth_image(job, seed, image_size)
    return encode_dicom(image.pixels, image.spec)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temporary name in the same folder, then os.replace onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate(
    out_dir: Path, cfg: SynthConfig, progress: Callable[[int, int], None] | None = None
) -> SynthSummary:
    """Write a synthetic RSNA set under ``out_dir`` (which must be empty or absent).

    Order: metadata, train.csv (and test.csv), then the images in chunks over
    ``cfg.n_workers`` processes; ``progress(done, total)`` is called after each chunk.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise OutputNotEmptyError(f"{out_dir} is not empty")
    meta = build_metadata(cfg.seed, cfg.patients, cfg.n_test_patients, cfg.positive_rate)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"}
    marker = {"generator": "mammo synth", **settings}  # what was made, not how fast
    write_atomic(out_dir / SYNTHETIC_MARKER, json.dumps(marker, default=str).encode())
    write_atomic(out_dir / csv_name(Subset.TRAIN), meta.train.to_csv(index=False).encode())
    jobs = list(image_jobs(Subset.TRAIN, meta.train))
    if cfg.with_test:
        write_atomic(out_dir / csv_name(Subset.TEST), meta.test.to_csv(index=False).encode())
        jobs += image_jobs(Subset.TEST, meta.test_truth)

    syntaxes: Counter[str] = Counter()
    oracle: dict[int, float] = {}
    done = 0
    for written in _run_chunks(out_dir, cfg, jobs):
        syntaxes.update(syntax for syntax, _, _ in written)
        oracle.update((image_id, score) for _, image_id, score in written)
        done += len(written)
        if progress is not None:
            progress(done, len(jobs))
    scores = oracle_frame(jobs, oracle)
    write_atomic(out_dir / SYNTHETIC_ORACLE, scores.to_csv(index=False).encode())

    train = meta.train
    breasts = train.groupby([PATIENT_ID, LATERALITY])[CANCER].max()
    return SynthSummary(
        out_dir=out_dir,
        patients=int(train[PATIENT_ID].nunique()),
        test_patients=int(meta.test[PATIENT_ID].nunique()),
        images=len(train),
        test_images=len(meta.test),
        positive_images=int(train[CANCER].sum()),
        positive_breasts=int(breasts.sum()),
        by_transfer_syntax=dict(sorted(syntaxes.items())),
        oracle_auc=oracle_auc(scores[scores["subset"] == Subset.TRAIN.value]).auc,
        elapsed_s=time.perf_counter() - start,
        planted_phi=frozenset(
            value
            for job in {job.patient_id: job for job in jobs}.values()
            for value in job_phi(job, cfg.seed).values()
        ),
    )


_Chunk = tuple[str, int, str, str, tuple[ImageJob, ...]]


def oracle_frame(jobs: Iterable[ImageJob], oracle: Mapping[int, float]) -> pd.DataFrame:
    """One row per image: subset, patient, image, laterality, view, cancer, the oracle's
    statistic (what ``synthetic_oracle.csv`` in RAW holds)."""
    rows = [
        (job.subset.value, job.patient_id, job.image_id, job.laterality, job.view, int(job.cancer))
        for job in jobs
    ]
    frame = pd.DataFrame(rows, columns=["subset", PATIENT_ID, IMAGE_ID, LATERALITY, VIEW, CANCER])
    frame[ORACLE] = frame[IMAGE_ID].map(oracle).astype(float)
    return frame


def _write_chunk(chunk: _Chunk) -> list[tuple[str, int, float]]:
    """Worker: draw, encode and write each image of a chunk; return (transfer syntax,
    image id, oracle statistic) per image."""
    out_dir, seed, image_size, difficulty, jobs = chunk
    written = []
    for job in jobs:
        image = synth_image(job, seed, image_size, difficulty)
        path = Path(out_dir) / image_relpath(job.subset, job.patient_id, job.image_id)
        write_atomic(path, encode_dicom(image.pixels, image.spec))
        written.append((image.spec.transfer_syntax, job.image_id, image.oracle))
    return written


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _run_chunks(
    out_dir: Path, cfg: SynthConfig, jobs: list[ImageJob]
) -> Iterable[list[tuple[str, int, float]]]:
    """Chunks of consecutive rows (one patient's images stay together mostly), in order for
    one worker, as they finish for several. Workers are spawned, never forked, so a
    threaded caller (Prefect, Ray) is safe."""
    workers = min(cfg.n_workers, max(1, len(jobs)))
    size = max(1, min(_CHUNK_MAX, len(jobs) // (workers * 8)))
    chunks = [
        (str(out_dir), cfg.seed, cfg.image_size, cfg.difficulty, tuple(jobs[i : i + size]))
        for i in range(0, len(jobs), size)
    ]
    if workers == 1:
        yield from map(_write_chunk, chunks)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_write_chunk, chunks)
