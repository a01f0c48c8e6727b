"""The shard adapter: decode every item of one shard, turning per-item errors into quarantine rows.

The three layers of ingest: :func:`mammo.preprocess.normalize` (one image's pixels),
:func:`mammo.preprocess.decode_and_preprocess` (one file's bytes), and :func:`process_shard`
here, which loops over a shard, catches what is wrong with single inputs, writes each PNG
through a callback and returns the shard's two tables for the caller to write once.
Storage failures are not the input's fault: they propagate, and the shard is retried whole.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from mammo import contract as c
from mammo.errors import MammoInputError
from mammo.preprocess import PreprocessConfig, ProcessedImage, decode_and_preprocess

ReadFn = Callable[[str], bytes]
WriteFn = Callable[[str, bytes], None]
ProgressFn = Callable[[bool], None]  # called once per item: True if decoded, False if quarantined

PREFETCH_DEPTH = 2  # files read ahead of the decoder (I/O overlaps decoding)
MAX_DETAIL = 300


@dataclass(frozen=True)
class ShardResult:
    images: pa.Table  # contract.SHARD_SCHEMA, one row per decoded image
    quarantine: pa.Table  # contract.QUARANTINE_SCHEMA, stage "decode"
    decode_seconds: float  # time spent in decode_and_preprocess (the decode work)
    bytes_read: int


def process_shard(
    items: pd.DataFrame,
    read: ReadFn,
    write_png: WriteFn,
    cfg: PreprocessConfig,
    progress: ProgressFn | None = None,
    decoders: tuple[str, ...] | None = None,
) -> ShardResult:
    """Decode ``items`` (inventory.ITEM_COLUMNS) in order; see the module docstring.

    ``decoders`` overrides the config's decoder order without changing the config's identity
    (decoders give bit-identical pixels): the caller's safe mode after a native crash. Safe
    mode also decodes every image in full (no reduced-resolution JPEG 2000 through Pillow's
    native OpenJPEG); each row's ``decoder`` and ``reduction`` say how it was read.
    """
    config_hash = cfg.config_hash()
    if decoders is not None:
        cfg = dataclasses.replace(cfg, decoders=decoders, decode="exact")
    records = items.to_dict("records")
    images: list[dict[str, object]] = []
    quarantine: list[dict[str, object]] = []
    decode_seconds, bytes_read = 0.0, 0
    paths = [str(r[c.SOURCE_PATH]) for r in records]
    for item, data in zip(records, _prefetch(read, paths), strict=True):
        started = time.perf_counter()
        image_row, quarantine_row = _process_item(item, data, write_png, cfg, config_hash)
        decode_seconds += time.perf_counter() - started
        bytes_read += len(data or b"")
        if image_row is not None:
            images.append(image_row)
        if quarantine_row is not None:
            quarantine.append(quarantine_row)
        if progress:
            progress(image_row is not None)
    return ShardResult(
        images=pa.Table.from_pylist(images, schema=c.SHARD_SCHEMA),
        quarantine=pa.Table.from_pylist(quarantine, schema=c.QUARANTINE_SCHEMA),
        decode_seconds=decode_seconds,
        bytes_read=bytes_read,
    )


def _process_item(
    item: dict[str, object],
    data: bytes | None,
    write_png: WriteFn,
    cfg: PreprocessConfig,
    config_hash: str,
) -> tuple[dict[str, object] | None, dict[str, object] | None]:
    """One item to (image row, None) or (None, quarantine row)."""
    if data is None:
        return None, _quarantined(item, c.QuarantineReason.MISSING_FILE, "file vanished")
    try:
        image = decode_and_preprocess(data, cfg)
    except MammoInputError as exc:
        return None, _quarantined(item, exc.reason, exc.detail)
    except Exception as exc:  # noqa: BLE001 - policy edge: an unforeseen failure on one input
        # Only the class name: a library's message could quote header values.
        detail = f"unexpected {type(exc).__name__} while decoding"
        return None, _quarantined(item, c.QuarantineReason.DECODE_FAILED, detail)
    png_path = c.png_relpath(int(str(item[c.PATIENT_ID])), int(str(item[c.IMAGE_ID])))
    write_png(png_path, image.png)
    return _image_row(item, image, png_path, config_hash), None


def _prefetch(read: ReadFn, paths: Sequence[str]) -> Iterator[bytes | None]:
    """Yield the bytes of each path in order (None if it no longer exists), reading ahead."""

    def fetch(path: str) -> bytes | None:
        try:
            return read(path)
        except FileNotFoundError:
            return None

    with ThreadPoolExecutor(max_workers=PREFETCH_DEPTH, thread_name_prefix="prefetch") as pool:
        window: deque[Future[bytes | None]] = deque()
        pending = iter(paths)
        for path in pending:
            window.append(pool.submit(fetch, path))
            if len(window) > PREFETCH_DEPTH:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _quarantined(
    item: dict[str, object], reason: c.QuarantineReason, detail: str
) -> dict[str, object]:
    return {
        "stage": c.QuarantineStage.DECODE.value,
        "source": item[c.SOURCE_PATH],
        c.PATIENT_ID: item[c.PATIENT_ID],
        c.IMAGE_ID: item[c.IMAGE_ID],
        "reason": reason.value,
        "detail": detail[:MAX_DETAIL],
        c.FINGERPRINT: item[c.FINGERPRINT],
    }


def _image_row(
    item: dict[str, object], image: ProcessedImage, png_path: str, config_hash: str
) -> dict[str, object]:
    header = image.header
    y0, x0, y1, x1 = image.crop_box
    row = {col: _plain(item[col]) for col in (*c.METADATA_COLUMNS, c.SOURCE_PATH, c.FINGERPRINT)}
    row.update(
        {
            "transfer_syntax": header.transfer_syntax,
            "photometric": header.photometric,
            "bits_stored": header.bits_stored,
            "src_rows": header.rows,
            "src_cols": header.cols,
            "voi_lut_function": image.window.function.value if image.window else None,
            "window_center": image.window.center if image.window else None,
            "window_width": image.window.width if image.window else None,
            "decoder": image.decoder,
            c.REDUCTION: image.reduction,
            "window_fallback": image.window_fallback,
            c.MODALITY_PATH: image.modality_path.value,
            c.VOI_PATH: image.voi_path.value,
            c.INVERTED: image.inverted,
            "crop_y0": y0,
            "crop_x0": x0,
            "crop_y1": y1,
            "crop_x1": x1,
            "crop_fallback": image.crop_fallback,
            "flipped": image.flipped,
            c.ROWS: image.pixels.shape[0],
            c.COLS: image.pixels.shape[1],
            c.PIXEL_MEAN: image.pixel_mean,
            c.PIXEL_STD: image.pixel_std,
            c.CONFIG_HASH: config_hash,
            c.PNG_PATH: png_path,
            c.PNG: image.png,
        }
    )
    return row


def _plain(value: object) -> object:
    """pandas nullable scalars (pd.NA) to None for Arrow."""
    return None if value is pd.NA or (isinstance(value, float) and value != value) else value
