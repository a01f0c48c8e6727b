"""Facts about a decoded data set that travel with every model trained on it.

The manifest hash (SHA-256 of ``manifest.parquet``) names one exact state of OUT. Each
validation writes its outcome under that hash (``OUT/validation/manifests/<hash>/outcome.json``,
with a copy of the suites' reports), so the validation of the data a model trained on is looked up,
never passed along as a parameter: running ingest, validate, train and promote one by one
gives the same answer as the nightly flow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from mammo import contract as c
from mammo.promotion import NOT_VALIDATED, VALIDATION_FAILED, VALIDATION_PASSED
from tasks.storage import join_uri, open_store


@dataclass(frozen=True)
class ValidationFact:
    status: str  # VALIDATION_PASSED, VALIDATION_FAILED or NOT_VALIDATED
    detail: str  # the report's location, or the command to run

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def manifest_hash(data: str) -> str:
    return hashlib.sha256(open_store(data).read_bytes(c.MANIFEST_FILE)).hexdigest()


def record_validation(data: str, data_hash: str, reports: dict[str, tuple[bool, bytes]]) -> str:
    """Write the outcome of validating manifest ``data_hash`` and its reports (suite ->
    (success, report JSON)); returns the outcome's location."""
    store, folder = open_store(data), f"{c.VALIDATION_OUTCOMES_DIR}/{data_hash}"
    for name, (_, report) in reports.items():
        store.write_bytes(f"{folder}/{name}.json", report)
    outcome = {
        "manifest_hash": data_hash,
        "success": all(ok for ok, _ in reports.values()),
        "suites": {
            name: {"success": ok, "report": f"{folder}/{name}.json"}
            for name, (ok, _) in reports.items()
        },
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    relpath = f"{folder}/{c.VALIDATION_OUTCOME_FILE}"
    store.write_bytes(relpath, json.dumps(outcome, indent=2).encode())
    return join_uri(data, relpath)


def validation_fact(data: str, data_hash: str, raw: str = "RAW") -> ValidationFact:
    """What is known of the validation of manifest ``data_hash`` under ``data``."""
    relpath = f"{c.VALIDATION_OUTCOMES_DIR}/{data_hash}/{c.VALIDATION_OUTCOME_FILE}"
    try:
        outcome = json.loads(open_store(data).read_bytes(relpath))
    except FileNotFoundError:
        command = f"mammo validate --raw {raw} --data {data}"
        return ValidationFact(
            NOT_VALIDATED, f"no validation of manifest {data_hash[:12]} in {data}; run `{command}`"
        )
    if outcome.get("success"):
        return ValidationFact(VALIDATION_PASSED, f"outcome {join_uri(data, relpath)}")
    failed = {k: v["report"] for k, v in outcome.get("suites", {}).items() if not v["success"]}
    reports = ", ".join(join_uri(data, path) for path in failed.values())
    return ValidationFact(VALIDATION_FAILED, f"suite(s) {', '.join(failed)} failed: {reports}")
