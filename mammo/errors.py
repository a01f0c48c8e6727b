"""Named exceptions of the domain library.

The ingest adapter turns a :class:`MammoInputError` into one quarantine row
(``reason``, ``detail``) and goes on with the next file.
"""

from __future__ import annotations

from mammo.contract import QuarantineReason


class MammoInputError(Exception):
    """An input file that cannot be used, and why.

    ``detail`` ends up in quarantine.parquet: it is built only from whitelisted
    DICOM attributes (mammo.contract.DICOM_WHITELIST) and structural facts, never
    from patient or study attributes.
    """

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"
