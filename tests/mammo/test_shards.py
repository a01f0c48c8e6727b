"""The shard adapter's rows (mammo.shards): which LUT path each image took, and quarantine."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydicom.uid import ExplicitVRLittleEndian

from mammo import contract as c
from mammo.inventory import ITEM_COLUMNS
from mammo.lut import Lut
from mammo.preprocess import PreprocessConfig
from mammo.shards import process_shard
from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.faults import FAULTS, base_image

CFG = PreprocessConfig(out_rows=64, out_cols=32)
RAMP = Lut(first_mapped=0, bits=16, data=tuple(range(0, 4096 * 16, 16)))


def _file(**spec: Any) -> bytes:
    spec.setdefault("photometric", "MONOCHROME2")
    return encode_dicom(base_image(), DicomSpec(ExplicitVRLittleEndian, bits_stored=12, **spec))


FILES = {  # image_id -> bytes
    1: _file(window_centers=(2000.0,), window_widths=(3000.0,), voi_lut_function="SIGMOID"),
    2: _file(modality_lut=RAMP, voi_luts=(RAMP,), presentation_lut_shape="INVERSE"),
    3: FAULTS["window_center_not_a_number"].make(),
    4: _file(photometric="MONOCHROME1"),
    5: FAULTS["high_bit_not_bits_stored_minus_1"].make(),
}


def _items() -> pd.DataFrame:
    rows = [
        {
            **dict.fromkeys(ITEM_COLUMNS),
            c.PATIENT_ID: 10,
            c.IMAGE_ID: image_id,
            c.SOURCE_PATH: c.image_relpath(c.Subset.TRAIN, 10, image_id),
            c.FINGERPRINT: f"fp{image_id}",
        }
        for image_id in FILES
    ]
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS))


def test_rows_record_the_lut_path_and_high_bit_is_quarantined() -> None:
    written: dict[str, bytes] = {}
    result = process_shard(
        _items(),
        read=lambda path: FILES[int(path.rsplit("/", 1)[1].removesuffix(".dcm"))],
        write_png=written.__setitem__,
        cfg=CFG,
    )
    columns = [c.IMAGE_ID, c.MODALITY_PATH, c.VOI_PATH, c.INVERTED, "window_fallback"]
    rows = result.images.select(columns).to_pylist()
    assert [tuple(row.values()) for row in rows] == [
        (1, "rescale", "window", False, False),
        (2, "modality-lut-sequence", "voi-lut-sequence", True, False),
        (3, "rescale", "min-max-fallback", False, True),
        (4, "rescale", "min-max", True, False),
    ]
    assert result.images.schema == c.SHARD_SCHEMA
    quarantine = result.quarantine.to_pylist()
    assert [(q[c.IMAGE_ID], q["reason"]) for q in quarantine] == [
        (5, c.QuarantineReason.INVALID_BITS.value)
    ]
    assert (
        quarantine[0]["detail"] == "HighBit 15 with BitsStored 12: HighBit must be BitsStored - 1"
    )
    assert len(written) == 4
