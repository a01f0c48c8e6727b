"""Lookup tables a DICOM header carries: Modality LUT Sequence and VOI LUT Sequence items.

An item (PS3.3 C.11.1.1, C.11.2.1.1) holds LUT Descriptor (0028,3002): the number of
entries (0 means 65536), the first input value mapped and the bits per entry; and LUT Data
(0028,3006): one entry per 16-bit word, as VR US numbers or OW bytes. A table maps like
pydicom's ``apply_modality_lut`` / ``apply_voi_lut``: an input below the first mapped value
takes the first entry, an input past the last mapped value takes the last entry.

Only the attributes of ``mammo.contract.DICOM_LUT_ATTRIBUTES`` are read (never LUT
Explanation, free text), and nothing read here is copied into an output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from mammo.contract import DICOM_LUT_ATTRIBUTES

FloatArray = npt.NDArray[np.float64]
MAX_ENTRIES = 1 << 16
ENTRY_BITS = range(8, 17)  # PS3.3: 8 or 16 for a Modality LUT, 8..16 for a VOI LUT


class InvalidLutError(ValueError):
    """A LUT sequence or item that cannot be used; the message holds numbers only."""


@dataclass(frozen=True)
class Lut:
    """One LUT item: ``data[i]`` is the output for input ``first_mapped + i``."""

    first_mapped: int
    bits: int
    data: tuple[int, ...]

    @property
    def out_max(self) -> int:
        """The largest output an entry of ``bits`` bits can hold: 2**bits - 1."""
        return (1 << self.bits) - 1

    def apply(self, x: npt.ArrayLike) -> FloatArray:
        """Map input values (floored, as pydicom truncates) through the table."""
        offset = np.floor(np.asarray(x, dtype=np.float64)) - self.first_mapped
        index = np.clip(offset, 0, len(self.data) - 1).astype(np.intp)
        table: FloatArray = np.asarray(self.data, dtype=np.float64)
        mapped: FloatArray = table[index]
        return mapped


def read_modality_lut(ds: Dataset) -> Lut | None:
    """The first item of (0028,3000) Modality LUT Sequence (PS3.3 allows one, pydicom uses
    the first), None when absent. Raises InvalidLutError when it is present but unusable."""
    items = read_lut_sequence(ds, "ModalityLUTSequence")
    return items[0] if items else None


def read_voi_luts(ds: Dataset) -> tuple[Lut, ...] | None:
    """The items of (0028,3010) VOI LUT Sequence, () when absent, None when unusable."""
    try:
        return read_lut_sequence(ds, "VOILUTSequence")
    except InvalidLutError:
        return None


def read_lut_sequence(ds: Dataset, keyword: str) -> tuple[Lut, ...]:
    """The items of ``keyword`` (ModalityLUTSequence or VOILUTSequence), () when absent."""
    items = _get(ds, keyword)
    if items is None:
        return ()
    if not isinstance(items, Sequence):
        raise InvalidLutError(f"{keyword} is not a sequence")
    return tuple(_read_item(item, keyword) for item in items)


def _read_item(item: Dataset, keyword: str) -> Lut:
    try:
        descriptor = _ints(_get(item, "LUTDescriptor"))
        data = _lut_data(_get(item, "LUTData"))
    except (ValueError, TypeError, OverflowError):
        raise InvalidLutError(f"{keyword}: LUT Descriptor or LUT Data not numeric") from None
    if len(descriptor) != 3:
        raise InvalidLutError(f"{keyword}: LUT Descriptor has {len(descriptor)} values, not 3")
    entries, first_mapped, bits = descriptor
    entries = entries or MAX_ENTRIES
    if not 1 <= entries <= MAX_ENTRIES or bits not in ENTRY_BITS:
        raise InvalidLutError(f"{keyword}: LUT Descriptor {descriptor}")
    if len(data) < entries:
        raise InvalidLutError(f"{keyword}: LUT Data has {len(data)} entries, {entries} declared")
    return Lut(first_mapped=first_mapped, bits=bits, data=data[:entries])


def _get(ds: Dataset, keyword: str) -> Any:
    if keyword not in DICOM_LUT_ATTRIBUTES:
        raise LookupError(f"{keyword} is not a LUT attribute")  # a programming error
    return ds.get(keyword)


def _ints(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return tuple(int(v) for v in value)
    return (int(value),)


def _lut_data(value: Any) -> tuple[int, ...]:
    """LUT Data (0028,3006): US numbers, or OW bytes (little endian, as every supported
    transfer syntax) read as 16-bit words; an odd trailing byte is padding."""
    if isinstance(value, bytes | bytearray):
        words = np.frombuffer(bytes(value[: len(value) // 2 * 2]), dtype="<u2")
        return tuple(int(v) for v in words)
    return _ints(value)
