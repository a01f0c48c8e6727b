"""Decode ceiling: milliseconds per image of each decoder, decode only, one process.

For every (transfer syntax, image size) one realistic synthetic file is written with the
project's generator (the phantom + encode_dicom, header of a train machine of that syntax),
then each decoder decodes it ``warmup`` times untimed and ``repeats`` times timed. Only the
decoder call is timed (stored values, before any LUT): the header is parsed before each call,
outside the timer, because pydicom caches the decoded array on its Dataset.

    ceiling images/s = cores / (best decoder's median seconds per image)

    python -m benchmarks.decode_ceiling                       # 2776x2082 and 3328x2560
    python -m benchmarks.decode_ceiling --repeats 9 --cores 16
"""

from __future__ import annotations

import importlib.util
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from benchmarks.common import (
    BenchmarkError,
    Result,
    base_parser,
    finish,
    prepare_environment,
    usable_cores,
)
from mammo.contract import Subset
from mammo.decoders import UnsupportedSyntax, get_decoder, list_decoders
from mammo.dicom import DicomHeader, read_header
from mammo.synth.generate import ImageJob, explicit_size, synth_dicom, write_atomic
from mammo.synth.metadata import MACHINES, MachineProfile

NAME = "decode_ceiling"
SYNTAXES = {"jpeg2000-lossless": str(JPEG2000Lossless), "jpeg-lossless-sv1": str(JPEGLosslessSV1)}
FULL_SIZES = ("2776x2082", "3328x2560")
SMOKE_SIZES = ("64x64", "256x208")
GDCM = "gdcm"
MAX_PIXELS = 50_000_000
DecodeFn = Callable[[bytes, Dataset, DicomHeader], npt.NDArray[Any]]


class DecoderUnavailable(BenchmarkError):
    """A decoder whose package is not installed here."""


def syntax_name(uid: str) -> str:
    """Short name of a transfer syntax UID (the UID itself when it is not benchmarked)."""
    return next((name for name, value in SYNTAXES.items() if value == uid), uid)


def case_machine(syntax_uid: str, rows: int, cols: int) -> MachineProfile:
    """The train machine that writes ``syntax_uid``: one with this detector size if any,
    then the one with the largest share of images (its bits, photometric and windows)."""
    machines = [m for m in MACHINES if m.transfer_syntax == syntax_uid and not m.test_only]
    if not machines:
        raise BenchmarkError(f"no synthetic machine writes {syntax_uid}")
    return max(machines, key=lambda m: ((m.rows, m.cols) == (rows, cols), m.share))


def case_dicom(syntax: str, image_size: str, seed: int) -> bytes:
    """The bytes of one realistic MLO image of ``image_size`` ("RxC") in ``syntax``."""
    rows, cols = explicit_size(image_size)
    machine = case_machine(SYNTAXES[syntax], rows, cols)
    job = ImageJob(
        subset=Subset.TRAIN,
        patient_id=10_000 + seed,
        image_id=20_000 + seed,
        laterality="L",
        view="MLO",
        age=58.0,
        site_id=machine.site_id,
        machine_id=machine.machine_id,
        cancer=False,
        density="C",
        implant=False,
    )
    return synth_dicom(job, seed, image_size)


def case_file(cache_dir: Path, syntax: str, image_size: str, seed: int) -> Path:
    """:func:`case_dicom` written once under ``cache_dir/decode`` and reused."""
    path = cache_dir / "decode" / f"{syntax}-{image_size}-s{seed}.dcm"
    if not path.is_file():
        write_atomic(path, case_dicom(syntax, image_size, seed))
    return path


def _gdcm(data: bytes, ds: Dataset, header: DicomHeader) -> npt.NDArray[Any]:
    from pydicom.pixels.utils import pixel_array

    return pixel_array(io.BytesIO(data), decoding_plugin=GDCM)


def decoder_names() -> tuple[str, ...]:
    """The registered decoders (mammo.decoders), then gdcm (through pydicom) if it exists."""
    return (*list_decoders(), GDCM)


def decode_fn(name: str) -> DecodeFn:
    """The decode function called ``name``; DecoderUnavailable when its package is missing."""
    if name == GDCM:
        if importlib.util.find_spec("gdcm") is None:
            raise DecoderUnavailable("not installed")
        return _gdcm
    return get_decoder(name)


def available_decoders() -> tuple[str, ...]:
    names = []
    for name in decoder_names():
        try:
            decode_fn(name)
        except DecoderUnavailable:
            continue
        names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class Timing:
    """Wall and process-CPU seconds of each timed decode, and the last decoded array."""

    seconds: list[float]
    cpu_seconds: list[float]
    pixels: npt.NDArray[Any]


def time_decode(data: bytes, decoder: str, repeats: int, warmup: int) -> Timing:
    """``repeats`` timed decodes after ``warmup`` untimed ones. Raises DecoderUnavailable,
    or BenchmarkError when the array is not (Rows, Columns)."""
    decode = decode_fn(decoder)
    seconds: list[float] = []
    cpu: list[float] = []
    pixels: npt.NDArray[Any] = np.zeros(0)
    for i in range(warmup + repeats):
        header, ds = read_header(data, MAX_PIXELS)  # a fresh Dataset: no cached pixel array
        started, started_cpu = time.perf_counter(), time.process_time()
        pixels = decode(data, ds, header)
        elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
        if pixels.shape != (header.rows, header.cols):
            raise BenchmarkError(
                f"{decoder} returned {pixels.shape}, not {header.rows, header.cols}"
            )
        if i >= warmup:
            seconds.append(elapsed)
            cpu.append(elapsed_cpu)
    return Timing(seconds, cpu, pixels)


def best_decode_seconds(
    data: bytes, decoders: Sequence[str], repeats: int, warmup: int
) -> tuple[float, str]:
    """The smallest median decode time of ``data`` over the ``decoders`` that take its
    transfer syntax, and its decoder."""
    times = []
    for name in decoders:
        try:
            times.append(
                (statistics.median(time_decode(data, name, repeats, warmup).seconds), name)
            )
        except UnsupportedSyntax:
            continue
    if not times:
        raise BenchmarkError(f"none of {tuple(decoders)} takes this file's transfer syntax")
    return min(times)


@dataclass(frozen=True)
class Case:
    syntax: str
    size: str
    path: Path


def measure(cases: Sequence[Case], repeats: int, warmup: int, cores: int, smoke: bool) -> Result:
    """Time every decoder on every case; the ceiling of a case uses its fastest decoder."""
    if repeats < 1 or warmup < 0 or cores < 1:
        raise BenchmarkError(
            f"need repeats >= 1, warmup >= 0, cores >= 1: {repeats, warmup, cores}"
        )
    table: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"cores": cores}
    for case in cases:
        data = case.path.read_bytes()
        reference: npt.NDArray[Any] | None = None
        best: tuple[float, str] | None = None
        for name in decoder_names():
            row: dict[str, Any] = {"decoder": name, "syntax": case.syntax, "size": case.size}
            try:
                timing = time_decode(data, name, repeats, warmup)
            except DecoderUnavailable as exc:
                table.append({**row, "status": str(exc)})
                continue
            except UnsupportedSyntax:
                table.append({**row, "status": "not this syntax"})
                continue
            except Exception as exc:  # noqa: BLE001 - a codec failure is a result to report
                table.append({**row, "status": f"failed: {type(exc).__name__}: {exc}"[:200]})
                continue
            same = reference is None or bool(np.array_equal(timing.pixels, reference))
            reference = timing.pixels if reference is None else reference
            median = statistics.median(timing.seconds)
            table.append(
                {
                    **row,
                    "status": "ok" if same else "ok, but pixels differ from the first decoder",
                    "median_ms": median * 1e3,
                    "min_ms": min(timing.seconds) * 1e3,
                    "cpu_per_wall": sum(timing.cpu_seconds) / sum(timing.seconds),
                    "repeats": len(timing.seconds),
                }
            )
            if best is None or median < best[0]:
                best = (median, name)
        if best is None:
            raise BenchmarkError(f"no decoder could decode {case.syntax} {case.size}")
        summary[f"ceiling {case.syntax} {case.size}"] = {
            "best_decoder": best[1],
            "ms_per_image": best[0] * 1e3,
            "images_per_s": cores / best[0],
        }
    return Result(
        name=NAME,
        smoke=smoke,
        params={"repeats": repeats, "warmup": warmup, "cores": cores},
        table=table,
        summary=summary,
        formulas={
            "median_ms": "median over the timed repeats of the decoder call alone (stored values)",
            "images_per_s (ceiling)": "cores / (best decoder's median seconds per image)",
            "cpu_per_wall": "process CPU seconds / wall seconds of the timed decodes: about 1 "
            "for a single-threaded decoder; above 1 means cores / time overstates the ceiling",
        },
        notes=[
            "pydicom decodes with the first of its plugins that is installed "
            "(pylibjpeg-openjpeg for JPEG 2000, pylibjpeg-libjpeg for JPEG Lossless).",
            "gdcm is timed through pydicom's gdcm plugin when python-gdcm is importable.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, __doc__.split("\n\n")[0] if __doc__ else NAME)
    parser.add_argument("--sizes", nargs="+", default=None, help=f"RxC (default {FULL_SIZES})")
    parser.add_argument(
        "--syntaxes", nargs="+", default=list(SYNTAXES), choices=list(SYNTAXES), metavar="SYNTAX"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed decodes (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed decodes first")
    parser.add_argument("--cores", type=int, default=None, help="default: usable cores here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prepare_environment()
    sizes = args.sizes or (SMOKE_SIZES if args.smoke else FULL_SIZES)
    repeats = args.repeats or (1 if args.smoke else 5)
    cases = [
        Case(syntax, size, case_file(args.cache_dir, syntax, size, args.seed))
        for size in sizes
        for syntax in args.syntaxes
    ]
    result = measure(cases, repeats, args.warmup, args.cores or usable_cores(), args.smoke)
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
