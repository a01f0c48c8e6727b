"""Fuzzing the header and pixel path: whatever the bytes, decode_and_preprocess returns a
valid image or raises MammoInputError; never another exception, never a hang.

dicomsdl can kill its process on a corrupt codestream (SIGABRT or SIGSEGV on about 1 in 200
random corruptions of JPEG 2000 / SV1 data, and on codestreams that claim more rows or columns
than the header). So the in-process cases decode with pydicom only, and the same kinds of cases go
through the default decoder order in a spawned child process, where a crash is accepted only
when the ingest's safe mode (tasks/ingest.py: the shard again with decoders=("pydicom",))
gives a clean answer for the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import multiprocessing
import signal
import string
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)

from mammo.contract import QuarantineReason
from mammo.dicom import SUPPORTED_TRANSFER_SYNTAXES
from mammo.errors import MammoInputError
from mammo.preprocess import PreprocessConfig, decode_and_preprocess
from mammo.synth.dicom_writer import DicomSpec, encode_dicom
from mammo.synth.faults import base_image

CFG = PreprocessConfig(out_rows=64, out_cols=32)  # default decoders: dicomsdl, then pydicom
SAFE = dataclasses.replace(CFG, decoders=("pydicom",))  # the ingest's safe mode
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NATIVE_CRASHES = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL")
CASE_TIMEOUT_S = 30.0  # one decode of a 96 x 64 image takes milliseconds: longer is a hang
SYNTAXES = {
    "jpeg2000_lossless": JPEG2000Lossless,
    "jpeg_lossless_sv1": JPEGLosslessSV1,
    "explicit_vr_native": ExplicitVRLittleEndian,
}
FUZZ = settings(
    derandomize=True,  # the same examples on every run: no flakiness
    database=None,
    deadline=2000,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow],
)


@functools.cache
def valid_dicom(transfer_syntax: str) -> bytes:
    """A 96 x 64, 12-bit breast-like image with two SIGMOID window pairs."""
    spec = DicomSpec(
        transfer_syntax=transfer_syntax,
        photometric="MONOCHROME1",
        bits_stored=12,
        window_centers=(2000.0, 2200.0),
        window_widths=(1500.0, 1800.0),
        voi_lut_function="SIGMOID",
        uid_seed=5,
    )
    return encode_dicom(base_image(96, 64), spec)


def oversized_jpeg2000_codestream() -> bytes:
    """A JPEG 2000 file whose codestream says it has 6496 rows where the header says 96.

    Byte 14 of the codestream is the third byte of Ysiz in the SIZ marker segment (SOC 2 bytes,
    SIZ marker 2, Lsiz 2, Rsiz 2, Xsiz 4, then Ysiz 4; ISO 15444-1 A.5.1): 0x00 -> 0x19 makes
    Ysiz 0x1960. dicomsdl 0.109.4 kills the process on it (a segmentation fault); the decoder
    registry now refuses it before dicomsdl sees it (mammo.decoders._check_jpeg2000_size).
    """
    data = bytearray(valid_dicom(JPEG2000Lossless))
    start = data.rfind(b"\xff\x4f\xff\x51")  # SOC + SIZ markers
    data[start + 14] = 0x19
    return bytes(data)


def dicomsdl_crash_file() -> bytes:
    """A JPEG Lossless SV1 file with two bytes of its pixel data changed that still kills
    dicomsdl 0.109.4 (the process dies inside pixelData()); pydicom raises on it cleanly.
    Found by searching seeds of random corruptions in child processes (seed 230 of
    1-3 byte overwrites after the first fragment's item tag)."""
    data = bytearray(valid_dicom(JPEGLosslessSV1))
    start = data.rfind(b"\xfe\xff\x00\xe0")  # the first item of the encapsulated data
    for offset, value in ((36, 225), (2263, 36)):
        data[start + offset] = value
    return bytes(data)


def check_outcome(data: bytes, cfg: PreprocessConfig) -> str:
    """Decode in this process; "decoded" or the quarantine reason. Any other exception
    propagates (and fails the test)."""
    try:
        image = decode_and_preprocess(data, cfg)
    except MammoInputError as exc:
        assert isinstance(exc.reason, QuarantineReason)
        assert exc.detail
        return exc.reason.value
    assert image.pixels.shape == (cfg.out_rows, cfg.out_cols)
    assert image.pixels.dtype == np.uint8
    assert image.png.startswith(PNG_SIGNATURE)
    assert 0.0 <= image.pixel_mean <= 1.0
    return "decoded"


# --- mutations (small records, so that a failing example prints readably) ------------

EDIT_KINDS = ("overwrite", "insert", "delete")


@dataclass(frozen=True)
class ByteMutation:
    """Byte edits (kind, offset, bytes) of a valid file, then maybe a cut at ``cut``."""

    transfer_syntax: str
    edits: tuple[tuple[str, int, bytes], ...]
    cut: int | None

    def apply(self) -> bytes:
        data = bytearray(valid_dicom(self.transfer_syntax))
        for kind, at, chunk in self.edits:
            if kind == "overwrite":
                data[at : at + len(chunk)] = chunk
            elif kind == "insert":
                data[at:at] = chunk
            else:
                del data[at : at + len(chunk)]
        if self.cut is not None:
            del data[self.cut :]
        return bytes(data)


def pixel_stream(transfer_syntax: str) -> tuple[int, int]:
    """[start, end) of the pixel bytes of ``valid_dicom(transfer_syntax)``: the codestream
    of its one fragment (after the element header, the empty Basic Offset Table item and the
    fragment's item header, before the sequence delimiter; PS3.5 A.4), or the native values."""
    data = valid_dicom(transfer_syntax)
    value = data.rfind(b"\xe0\x7f\x10\x00") + 12  # (7FE0,0010), VR, reserved, length
    if transfer_syntax == ExplicitVRLittleEndian:
        return value, len(data)
    return value + 8 + 8, len(data) - 8


@st.composite
def byte_mutations(draw: st.DrawFn, transfer_syntax: str) -> ByteMutation:
    """Three times in four, 1..6 overwrites inside the pixel stream (the decoders' input);
    otherwise 1..6 edits anywhere (overwrite, insert, delete) and maybe a cut."""
    size = len(valid_dicom(transfer_syntax))
    start, end = pixel_stream(transfer_syntax)
    structural = draw(st.integers(0, 3)) == 0
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        chunk = draw(st.binary(min_size=1, max_size=8))
        if structural:
            kind, at = draw(st.sampled_from(EDIT_KINDS)), draw(st.integers(0, size - 1))
        else:
            kind, at = "overwrite", draw(st.integers(start, end - len(chunk)))
        edits.append((kind, at, chunk))
    cut = draw(st.integers(1, size - 1)) if structural and draw(st.booleans()) else None
    return ByteMutation(transfer_syntax, tuple(edits), cut)


US = st.integers(0, 65535)  # the range of an unsigned short (VR US)
DS_VALUES = st.lists(
    st.one_of(
        st.floats(-5000.0, 10000.0),
        st.sampled_from([0.0, -1.0, 1.0, 0.5, 1e12, float("nan"), float("inf"), -float("inf")]),
    ),
    min_size=1,
    max_size=3,
)
CS_TEXT = st.text(alphabet=string.ascii_uppercase + string.digits + " _", max_size=16)
HEADER_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Rows": st.one_of(st.sampled_from([0, 1, 95, 96, 97, 65535]), US),
    "Columns": st.one_of(st.sampled_from([0, 1, 63, 64, 65, 65535]), US),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 40),
    "HighBit": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 2),
    "SamplesPerPixel": st.integers(0, 4),
    "PhotometricInterpretation": st.one_of(
        st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL"]),
        CS_TEXT,
    ),
    "WindowCenter": DS_VALUES,
    "WindowWidth": DS_VALUES,
    "VOILUTFunction": st.one_of(
        st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "GAMMA"]), CS_TEXT
    ),
    "NumberOfFrames": st.one_of(st.integers(-2, 4), st.just(2**31 - 1)),
    "RescaleSlope": st.sampled_from([1.0, 0.0, -1.0, 1e-9, float("nan")]),
    "RescaleIntercept": st.sampled_from([0.0, -1024.0, float("inf")]),
}
TRANSFER_SYNTAX_UIDS = st.sampled_from(
    [
        *sorted(SUPPORTED_TRANSFER_SYNTAXES),
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
        "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.100",  # MPEG2
        "1.2.3.4",
        "not-a-uid",
    ]
)


@dataclass(frozen=True)
class HeaderEdit:
    """New values (None: delete) for some attributes of a valid file, and maybe a file meta
    that claims another transfer syntax for the same dataset bytes."""

    source: str
    values: tuple[tuple[str, Any], ...]
    claimed_syntax: str | None

    def apply(self) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(valid_dicom(self.source)))
        for keyword, value in self.values:
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on odd values: the point here
            ds.save_as(buffer, enforce_file_format=True)
        if self.claimed_syntax is None:
            return buffer.getvalue()
        return with_transfer_syntax(buffer.getvalue(), self.claimed_syntax)


@st.composite
def header_edits(draw: st.DrawFn) -> HeaderEdit:
    """1..4 attributes get random values; one time in four, one attribute is deleted; one
    time in four, the file meta claims another transfer syntax."""
    names = sorted(HEADER_VALUES)
    keys = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    values = [(key, draw(HEADER_VALUES[key])) for key in keys]
    if draw(st.sampled_from(["edit", "edit", "edit", "delete"])) == "delete":
        values.append((draw(st.sampled_from(names)), None))
    claimed = None
    if draw(st.sampled_from(["same", "same", "same", "other"])) == "other":
        claimed = draw(TRANSFER_SYNTAX_UIDS)
    source = draw(st.sampled_from(sorted(SYNTAXES.values())))
    return HeaderEdit(source, tuple(values), claimed)


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same dataset bytes under a file meta that claims Transfer Syntax UID ``uid``.

    File meta: 128-byte preamble, "DICM", then group 0002 in Explicit VR Little Endian led by
    (0002,0000) File Meta Information Group Length (a 12-byte element).
    """
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    meta = ds.file_meta
    dataset_start = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)
    meta.TransferSyntaxUID = UID(uid)
    out = DicomBytesIO()
    out.write(data[:132])
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue() + data[dataset_start:]


# --- in process, pydicom only ----------------------------------------------------------


@pytest.mark.parametrize("transfer_syntax", SYNTAXES.values(), ids=list(SYNTAXES))
@FUZZ
@given(data=st.data())
def test_mutated_bytes_decode_or_quarantine_with_pydicom(
    transfer_syntax: str, data: st.DataObject
) -> None:
    event(check_outcome(data.draw(byte_mutations(transfer_syntax)).apply(), SAFE))


@settings(FUZZ, max_examples=500)
@given(edit=header_edits())
def test_random_header_values_decode_or_quarantine_with_pydicom(edit: HeaderEdit) -> None:
    event(check_outcome(edit.apply(), SAFE))


def _pixel_tag_cut(transfer_syntax: str) -> ByteMutation:
    at = valid_dicom(transfer_syntax).rfind(b"\xe0\x7f\x10\x00")
    return ByteMutation(transfer_syntax, (("delete", at, b"\x00"),), None)


# Cases the fuzz found, kept as a table: each once escaped as another exception.
@pytest.mark.parametrize(
    "mutation, expected",
    [
        # (7FE0,0010) minus its first byte reads as tag (107F,4F00) with VR "W\0": pydicom
        # raised NotImplementedError while read_header looked for where the parse ended
        pytest.param(
            _pixel_tag_cut(ExplicitVRLittleEndian), "unreadable", id="native_pixel_tag_cut"
        ),
        pytest.param(_pixel_tag_cut(JPEG2000Lossless), "unreadable", id="jpeg2000_pixel_tag_cut"),
    ],
)
def test_fuzz_findings_are_quarantined(mutation: ByteMutation, expected: str) -> None:
    assert check_outcome(mutation.apply(), SAFE) == expected
    assert check_outcome(mutation.apply(), CFG) == expected


def test_unmutated_files_decode_with_both_decoder_orders() -> None:
    # the fuzz starts from files that decode: a refusal is the mutation's doing
    for transfer_syntax in SYNTAXES.values():
        assert check_outcome(valid_dicom(transfer_syntax), SAFE) == "decoded"
        assert check_outcome(valid_dicom(transfer_syntax), CFG) == "decoded"


# --- in a child process, default decoder order (dicomsdl first) -------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str  # "decoded", "quarantined", "error" (another exception) or "crashed"
    detail: str  # reason, exception type or signal name


def _decode_loop(conn: Connection, cfg: PreprocessConfig) -> None:
    """The child: decode each received file with ``cfg`` and send back an Outcome."""
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            image = decode_and_preprocess(data, cfg)
        except MammoInputError as exc:
            conn.send(Outcome("quarantined", exc.reason.value))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails
            conn.send(Outcome("error", f"{type(exc).__name__}: {exc}"[:300]))
        else:
            shape = image.pixels.shape == (cfg.out_rows, cfg.out_cols)
            conn.send(Outcome("decoded" if shape else "error", str(image.pixels.shape)))


class ChildDecoder:
    """decode_and_preprocess in a spawned child; a child killed by a native crash is
    replaced before the next file. A file that takes over CASE_TIMEOUT_S fails the test."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded pytest
        self._process: Any = None
        self._conn: Connection | None = None

    def _start(self) -> Connection:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_decode_loop, args=(child, self.cfg), daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        return parent

    def outcome(self, data: bytes) -> Outcome:
        conn = self._conn if self._process is not None else self._start()
        assert conn is not None
        conn.send_bytes(data)
        if not conn.poll(CASE_TIMEOUT_S):
            self.close()
            pytest.fail(f"decoding a {len(data)}-byte file took over {CASE_TIMEOUT_S} s")
        try:
            return conn.recv()  # type: ignore[no-any-return]
        except EOFError:  # the child died
            self._process.join(timeout=10)
            code = self._process.exitcode
            self._process, self._conn = None, None
            conn.close()
            name = signal.Signals(-code).name if code is not None and code < 0 else str(code)
            return Outcome("crashed", name)

    def close(self) -> None:
        if self._process is not None:
            assert self._conn is not None
            self._conn.close()
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
            self._process, self._conn = None, None


@pytest.fixture(scope="module")
def child() -> Any:
    decoder = ChildDecoder(CFG)
    yield decoder
    decoder.close()


def assert_survivable(outcome: Outcome, data: bytes) -> None:
    """Decoded or quarantined in the child; or crashed there, and then the safe mode's
    in-process decode gives a clean answer (a crash in safe mode would fail the shard)."""
    assert outcome.kind != "error", outcome.detail
    if outcome.kind == "crashed":
        assert outcome.detail in NATIVE_CRASHES, outcome
        check_outcome(data, SAFE)


MUTATIONS = st.one_of(header_edits(), *(byte_mutations(syntax) for syntax in SYNTAXES.values()))


@settings(FUZZ, max_examples=1200, deadline=None)  # the child's timeout bounds each case
@given(mutation=MUTATIONS)
def test_mutations_through_dicomsdl_are_decoded_quarantined_or_survivable(
    child: ChildDecoder, mutation: ByteMutation | HeaderEdit
) -> None:
    data = mutation.apply()
    outcome = child.outcome(data)
    event(f"{outcome.kind} {outcome.detail}")
    assert_survivable(outcome, data)


@pytest.fixture(scope="module")
def fast_child() -> Any:
    decoder = ChildDecoder(dataclasses.replace(CFG, decode="fast"))  # imagecodecs first
    yield decoder
    decoder.close()


@settings(FUZZ, max_examples=400, deadline=None)
@given(mutation=byte_mutations(JPEGLosslessSV1))
def test_sv1_mutations_through_imagecodecs_are_decoded_quarantined_or_survivable(
    fast_child: ChildDecoder, mutation: ByteMutation
) -> None:
    """decode = "fast" reads JPEG Lossless with libjpeg-turbo (imagecodecs) before dicomsdl."""
    data = mutation.apply()
    outcome = fast_child.outcome(data)
    event(f"{outcome.kind} {outcome.detail}")
    assert_survivable(outcome, data)


@pytest.mark.parametrize(
    "make, expected",
    [
        pytest.param(lambda: valid_dicom(JPEG2000Lossless), "decoded", id="valid_jpeg2000"),
        pytest.param(oversized_jpeg2000_codestream, "quarantined", id="j2k_rows_above_header"),
        pytest.param(dicomsdl_crash_file, "crashed", id="sv1_bytes_that_kill_dicomsdl"),
    ],
)
def test_files_that_kill_dicomsdl_are_survivable(
    child: ChildDecoder, make: Callable[[], bytes], expected: str
) -> None:
    data = make()
    outcome = child.outcome(data)
    assert outcome.kind == expected, outcome
    safe = check_outcome(data, SAFE)
    if expected == "decoded":
        assert safe == "decoded"
        return
    if expected == "crashed":
        assert outcome.detail in NATIVE_CRASHES
    else:  # refused before dicomsdl, in the same process
        assert outcome.detail == QuarantineReason.DECODE_FAILED.value
    assert safe == QuarantineReason.DECODE_FAILED.value
    with pytest.raises(MammoInputError, match=r"^decode_failed: pydicom: "):
        decode_and_preprocess(data, SAFE)
