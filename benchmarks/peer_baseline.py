"""Peer baseline: the preprocessing script a Kaggle competitor writes, timed on the same files.

multiprocessing.Pool(cores) over the files; per file: dicomsdl decode (storedvalue=True),
Rescale Slope/Intercept and the first Window Center/Width pair applied in float32 numpy with
the VOI LUT Function's formula (LINEAR or SIGMOID, DICOM PS3.3 C.11.2.1.2; min-max without a
window), MONOCHROME1 inverted, Otsu threshold + largest contour crop with cv2, flip so that
the breast is on the left, cv2.resize keeping the aspect ratio and zero padding to
1024x512, cv2.imwrite of an 8-bit PNG per file. Written plainly on purpose: it is the
baseline that mammo's LUT path must beat, so it reuses nothing of mammo.

    images/s = files written / seconds from submitting the first file to the last PNG
    (the pool's processes are started and warmed up before the clock starts)

    python -m benchmarks.peer_baseline --patients 20        # full-size machine mix
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import dicomsdl
import numpy as np

from benchmarks.common import (
    BenchmarkError,
    Result,
    add_realistic_set_arguments,
    base_parser,
    dicom_files,
    finish,
    prepare_environment,
    realistic_set,
    usable_cores,
)

NAME = "peer_baseline"
OUT_HEIGHT, OUT_WIDTH = 1024, 512


def first(value: Any) -> Any:
    """First item of a multi-valued DICOM attribute, or the value itself."""
    return value[0] if isinstance(value, list | tuple) else value


def window(img: np.ndarray, dcm: Any) -> np.ndarray:
    """Stored values -> uint8 with the first window, as the competition notebooks did it."""
    img = img.astype(np.float32)
    slope, intercept = dcm.RescaleSlope, dcm.RescaleIntercept
    if slope is not None and intercept is not None:
        img = img * float(slope) + float(intercept)
    center, width = first(dcm.WindowCenter), first(dcm.WindowWidth)
    function = dcm.VOILUTFunction or "LINEAR"
    if center is None or width is None:
        img = (img - img.min()) / max(float(img.max() - img.min()), 1.0)
    elif function == "SIGMOID":
        img = 1.0 / (1.0 + np.exp(-4.0 * (img - float(center)) / float(width)))
    else:
        center, width = float(center), float(width)
        img = (img - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5
        img = np.clip(img, 0.0, 1.0)
    if dcm.PhotometricInterpretation == "MONOCHROME1":
        img = 1.0 - img
    return (img * 255.0).astype(np.uint8)


def crop(img: np.ndarray) -> np.ndarray:
    """Bounding box of the largest contour of the Otsu mask (whole image if none)."""
    _, mask = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return img
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return img[y : y + h, x : x + w]


def flip_left(img: np.ndarray) -> np.ndarray:
    """Mirror so that more of the mass lies in the left half."""
    half = img.shape[1] // 2
    if img[:, :half].sum() < img[:, -half:].sum():
        img = cv2.flip(img, 1)
    return img


def resize_pad(img: np.ndarray) -> np.ndarray:
    """Keep the aspect ratio, fit into OUT_HEIGHT x OUT_WIDTH, pad with zeros right/bottom."""
    h, w = img.shape
    scale = min(OUT_HEIGHT / h, OUT_WIDTH / w)
    new_w, new_h = (
        max(1, min(OUT_WIDTH, round(w * scale))),
        max(1, min(OUT_HEIGHT, round(h * scale))),
    )
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((OUT_HEIGHT, OUT_WIDTH), dtype=np.uint8)
    out[:new_h, :new_w] = img
    return out


def process_file(job: tuple[str, str]) -> str | None:
    """One DICOM -> ``out_dir/{patient_id}/{image_id}.png``; the error text, or None."""
    path, out_dir = job
    try:
        dcm = dicomsdl.open(path)
        img = dcm.pixelData(storedvalue=True)
        img = resize_pad(flip_left(crop(window(img, dcm))))
        target = os.path.join(out_dir, os.path.basename(os.path.dirname(path)))
        os.makedirs(target, exist_ok=True)
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        if not cv2.imwrite(os.path.join(target, name), img):
            return f"{path}: cv2.imwrite failed"
    except Exception as exc:  # noqa: BLE001 - the script logs and goes on, as such scripts do
        return f"{path}: {type(exc).__name__}: {exc}"
    return None


def _ready(_: int) -> int:
    return os.getpid()


def run(files: Sequence[Path], out_dir: Path, processes: int) -> dict[str, Any]:
    """Preprocess ``files`` into ``out_dir`` with a pool of ``processes``; images/s and counts.

    The pool is spawned (safe in a process that already runs threads, such as Ray's driver)
    and every process is started before the clock starts; the clock stops when the last PNG
    has been written.
    """
    if processes < 1 or not files:
        raise BenchmarkError(f"need files and processes >= 1, got {len(files)}, {processes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(path), str(out_dir)) for path in files]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_ready, range(processes * 4), chunksize=1)  # start every process now
        started = time.perf_counter()
        errors = [e for e in pool.imap_unordered(process_file, jobs, chunksize=1) if e]
        seconds = time.perf_counter() - started
    written = len(jobs) - len(errors)
    return {
        "files": len(jobs),
        "images": written,
        "failed": len(errors),
        "errors": errors[:5],
        "processes": processes,
        "seconds": seconds,
        "images_per_s": written / seconds,
        "out_rows": OUT_HEIGHT,
        "out_cols": OUT_WIDTH,
    }


def measure(raw: Path, out_dir: Path, processes: int, smoke: bool) -> Result:
    files = dicom_files(raw)
    stats = run(files, out_dir, processes)
    return Result(
        name=NAME,
        smoke=smoke,
        params={"raw": str(raw), "files": len(files), "processes": processes},
        table=[{k: v for k, v in stats.items() if k != "errors"}],
        summary={"images_per_s": stats["images_per_s"], "errors": stats["errors"]},
        formulas={
            "images_per_s": "PNGs written / seconds from the first submit to the last PNG "
            "(pool processes started before the clock)"
        },
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Peer baseline: a plain multiprocessing.Pool preprocessing script.")
    add_realistic_set_arguments(parser)
    parser.add_argument("--processes", type=int, default=None, help="default: usable cores")
    args = parser.parse_args(argv)
    prepare_environment()
    raw = realistic_set(args)
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        result = measure(raw, Path(tmp) / "png", args.processes or usable_cores(), args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
