"""Ingest against its ceiling: the real ingest flow on full-size files, as a share of what
decoding alone allows on this machine, and against the peer baseline on the same files.

Order, in one process:
1. the realistic set (the generator's machine mix, each machine's detector size) is written
   once under the cache directory;
2. start-up: ingest of a tiny 64x64 set (a shard per image) starts Prefect (a temporary
   server without PREFECT_API_URL), Ray and a worker per core; reported apart, never in
   the steady-state figure;
3. the timed ingest of the set into a fresh output (Prefect + Ray: decode, window, crop, flip,
   resize, PNG, Parquet, manifest);
4. the ceiling, measured now on the same files: each file decoded by every decoder
   (stored values only, one process, after one untimed decode per decoder);
5. decode only, in parallel: a Pool of `cores` processes (started and warmed before the
   clock) decodes the same files with the product's decoder order, nothing else; it shows
   how far `cores` decoders running at once fall short of `cores` times one decoder;
6. the peer baseline (benchmarks.peer_baseline) on the same files, unless --no-peer.

    ingest images/s     = images in the manifest / wall seconds of the flow call
    ceiling images/s    = cores / mean over files of (fastest decoder's seconds for that file)
    fraction of ceiling = ingest images/s / ceiling images/s          (target >= 0.85)
    parallel decode     = files / wall seconds of the Pool's decode-only pass
    vs peer             = ingest images/s / peer images/s              (target >= 1.0)

    python -m benchmarks.ingest_vs_ceiling --patients 20
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import peer_baseline
from benchmarks.common import (
    BenchmarkError,
    Result,
    add_realistic_set_arguments,
    base_parser,
    dicom_files,
    finish,
    prepare_environment,
    ray_cores,
    realistic_set,
    run_ingest,
    warm_up_ingest,
)
from benchmarks.decode_ceiling import (
    MAX_PIXELS,
    available_decoders,
    best_decode_seconds,
    syntax_name,
)
from mammo.decoders import decode_pixels
from mammo.dicom import read_header
from mammo.preprocess import PreprocessConfig

NAME = "ingest_vs_ceiling"


def shard_size_for(files: int, cores: int) -> int:
    """About four shards per core, so that the last wave of shards leaves cores idle briefly."""
    return max(1, math.ceil(files / (4 * cores)))


def ceiling(files: Sequence[Path], cores: int, repeats: int) -> dict[str, Any]:
    """Decode-only ceiling of exactly these files: cores / mean of each file's best time.
    Each decoder first decodes the first file of each transfer syntax once, untimed
    (libraries load, caches fill)."""
    decoders = available_decoders()
    best: list[float] = []
    winners: Counter[str] = Counter()
    syntaxes: Counter[str] = Counter()
    for path in files:
        data = path.read_bytes()
        header, _ = read_header(data, MAX_PIXELS)
        name = syntax_name(header.transfer_syntax)
        first = name not in syntaxes  # warm each decoder up once on this syntax, untimed
        syntaxes[name] += 1
        seconds, decoder = best_decode_seconds(data, decoders, repeats, warmup=int(first))
        best.append(seconds)
        winners[decoder] += 1
    mean = sum(best) / len(best)
    return {
        "decoders": list(decoders),
        "mean_best_ms": mean * 1e3,
        "images_per_s": cores / mean,
        "fastest_decoder_counts": dict(winners),
        "syntax_mix": dict(sorted(syntaxes.items())),
    }


def _decode_only(path: Path) -> None:
    data = path.read_bytes()
    header, ds = read_header(data, MAX_PIXELS)
    decode_pixels(data, ds, header, PreprocessConfig().decoders)


def parallel_decode(files: Sequence[Path], cores: int) -> dict[str, Any]:
    """Decode only, ``cores`` processes at once, in the product's decoder order. Each process
    decodes the first file once before the clock starts (libraries load)."""
    # spawn, not fork: the driver holds Prefect and Ray threads, and a forked child can
    # inherit a lock one of them held and wait on it for ever
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        pool.map(_decode_only, [files[0]] * cores, chunksize=1)
        started = time.perf_counter()
        pool.map(_decode_only, files, chunksize=1)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "images_per_s": len(files) / seconds}


def measure(
    raw: Path,
    cache_dir: Path,
    shard_size: int | None,
    repeats: int,
    with_peer: bool,
    smoke: bool,
) -> Result:
    files = dicom_files(raw)
    if not files:
        raise BenchmarkError(f"no DICOM files under {raw}")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        startup = warm_up_ingest(cache_dir, work)
        cores = ray_cores()
        shards = shard_size or shard_size_for(len(files), cores)
        run = run_ingest(raw, work / "out", shards)
        images = int(run.summary["manifest_rows"])
        if images != len(files) or run.summary["quarantined"]:
            raise BenchmarkError(
                f"ingest kept {images} of {len(files)} files and quarantined "
                f"{run.summary['quarantined']}: the figures would not compare like with like"
            )
        limit = ceiling(files, cores, repeats)
        parallel = parallel_decode(files, cores)
        peer = peer_baseline.run(files, work / "peer", cores) if with_peer else None
    ingest_rate = images / run.seconds
    decode: dict[str, Any] = run.summary["decode"]
    summary: dict[str, Any] = {
        "ingest_images_per_s": ingest_rate,
        "ceiling_images_per_s": limit["images_per_s"],
        "fraction_of_ceiling": ingest_rate / limit["images_per_s"],
        "parallel_decode_images_per_s": parallel["images_per_s"],
        "parallel_decode_vs_ceiling": parallel["images_per_s"] / limit["images_per_s"],
        "ingest_vs_parallel_decode": ingest_rate / parallel["images_per_s"],
        "startup_s": startup,
        "syntax_mix": limit["syntax_mix"],
    }
    table = [
        {
            "what": "ingest flow",
            "images": images,
            "seconds": run.seconds,
            "images_per_s": ingest_rate,
        },
        {
            "what": "ingest decode task (Ray wall)",
            "images": decode["images"],
            "seconds": decode["wall_seconds"],
            "images_per_s": decode["images"] / decode["wall_seconds"],
        },
        {
            "what": "decode ceiling",
            "images": len(files),
            "seconds": len(files) / limit["images_per_s"],
            "images_per_s": limit["images_per_s"],
        },
        {
            "what": f"decode only, {cores} processes at once",
            "images": len(files),
            "seconds": parallel["seconds"],
            "images_per_s": parallel["images_per_s"],
        },
    ]
    if peer is not None:
        if peer["failed"]:
            raise BenchmarkError(
                f"the peer baseline failed on {peer['failed']} files: {peer['errors']}"
            )
        summary["peer_images_per_s"] = peer["images_per_s"]
        summary["ingest_vs_peer"] = ingest_rate / peer["images_per_s"]
        table.append(
            {
                "what": "peer baseline (Pool)",
                "images": peer["images"],
                "seconds": peer["seconds"],
                "images_per_s": peer["images_per_s"],
            }
        )
    return Result(
        name=NAME,
        smoke=smoke,
        params={
            "raw": str(raw),
            "files": len(files),
            "cores": cores,
            "shard_size": shards,
            "shards": run.summary["shards"],
            "ceiling_repeats": repeats,
            "ceiling_decoders": limit["decoders"],
        },
        table=table,
        summary={
            **summary,
            "decode_work_s": decode["decode_seconds"],
            "fastest_decoder_counts": limit["fastest_decoder_counts"],
        },
        formulas={
            "ingest_images_per_s": "manifest rows / wall seconds of the timed flow call "
            "(after the start-up run)",
            "ceiling_images_per_s": "cores / mean over files of min over decoders of the "
            "median decode-only seconds",
            "fraction_of_ceiling": "ingest_images_per_s / ceiling_images_per_s (target >= 0.85)",
            "ingest_vs_peer": "ingest_images_per_s / peer_images_per_s (target >= 1.0)",
            "parallel_decode_images_per_s": "files / wall seconds of a decode-only pass of "
            "Pool(cores) over the files (product decoder order, header parse included)",
            "parallel_decode_vs_ceiling": "parallel_decode_images_per_s / ceiling_images_per_s: "
            "how close decoders running at once come to cores x one decoder",
            "ingest_vs_parallel_decode": "ingest_images_per_s / parallel_decode_images_per_s",
        },
        notes=[
            "cores = CPUs of the Ray cluster the flow ran on (MAMMO_RAY_NUM_CPUS or all).",
            "startup_s = the whole first flow call, on a tiny 64x64 set with a shard per "
            "image: Prefect, Ray and a worker per core start there.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, "Ingest flow throughput as a fraction of the decode ceiling.")
    add_realistic_set_arguments(parser)
    parser.add_argument(
        "--shard-size", type=int, default=None, help="default: about 4 shards per core"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed decodes per file and decoder")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer baseline")
    args = parser.parse_args(argv)
    prepare_environment()
    raw = realistic_set(args)
    result = measure(
        raw, args.cache_dir, args.shard_size, args.repeats, not args.no_peer, args.smoke
    )
    return finish(result, args.results_dir)


if __name__ == "__main__":
    main()
