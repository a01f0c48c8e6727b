"""Data validation with Great Expectations 1.x: the raw train.csv and the decoded set.

Suites are built in code from :mod:`mammo.contract`, run on in-memory pandas frames in an
ephemeral GX context (no files, no analytics, no progress bars, no network), and summarised
in a :class:`ValidationReport`: a plain frozen dataclass that serialises to JSON and markdown.

GX checks one frame per batch, so a suite is a set of tables, one GX ``ExpectationSuite`` each:

* raw metadata: ``csv_rows`` (every cell as the text the CSV holds, for types and domains),
  ``csv_values`` (the same rows parsed as numbers, for ranges and the positive rate) and
  ``breasts`` (one row per patient_id + laterality, for label consistency);
* decoded set: ``manifest`` (one row per decoded image) and ``summary`` (one row of counts).

Offending values reach a report only from whitelisted metadata columns, five at most.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity

from mammo.contract import (
    AGE,
    AGE_RANGE,
    BIOPSY,
    BIRADS,
    BIRADS_VALUES,
    CANCER,
    COLS,
    DENSITIES,
    DENSITY,
    ID_PATTERN,
    IMAGE_ID,
    IMPLANT,
    INVASIVE,
    LATERALITY,
    MACHINE_ID,
    MANIFEST_SCHEMA,
    MAX_ID_DIGITS,
    METADATA_COLUMNS,
    MODALITY_PATH,
    PATIENT_ID,
    PIXEL_MEAN,
    PIXEL_STD,
    PREDICTION_ID,
    REQUIRED_COLUMNS,
    ROWS,
    SITE_ID,
    TRAIN_COLUMNS,
    VIEW,
    VOI_PATH,
    Laterality,
    ModalityPath,
    Subset,
    View,
    VoiPath,
    prediction_id,
)
from mammo.validation import InvalidValidationInput, ValidationConfig
from tasks import gx_context

__all__ = [
    "CANCER_LABELS",
    "EXAMPLE_COLUMNS",
    "MAX_EXAMPLES",
    "QUARANTINE_RATE",
    "DataValidationError",
    "ExpectationOutcome",
    "InvalidValidationInput",  # from mammo.validation, re-exported
    "ValidationConfig",  # from mammo.validation, re-exported
    "ValidationReport",
    "decoded_set_suite",
    "raw_metadata_suite",
    "save_report",
    "validate_decoded_set",
    "validate_raw_metadata",
]

# Derived columns of the breast and summary tables.
CANCER_LABELS = "distinct_cancer_labels"
QUARANTINE_RATE = "quarantine_rate"

# The only columns whose values may appear as examples in a report (no PHI is among them).
EXAMPLE_COLUMNS = frozenset(
    {
        *METADATA_COLUMNS,
        ROWS,
        COLS,
        PIXEL_MEAN,
        PIXEL_STD,
        MODALITY_PATH,
        VOI_PATH,
        CANCER_LABELS,
        QUARANTINE_RATE,
    }
)
MAX_EXAMPLES = 5
_MAX_EXAMPLE_CHARS = 40
_INTEGER = rf"^{ID_PATTERN}$"  # an id as written: contract.ID_PATTERN (fits an int64)
_NUMBER = r"^[0-9]+(?:\.[0-9]+)?$"  # a non-negative decimal number as written
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}


class DataValidationError(RuntimeError):
    """Data failed validation; carries the failed reports, names every failed expectation."""

    def __init__(self, *reports: ValidationReport) -> None:
        super().__init__("\n\n".join(report.failure_message() for report in reports))
        self.reports = reports


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result, reduced to what a person needs to act on it."""

    table: str
    expectation: str  # GX type, e.g. "expect_column_values_to_be_in_set"
    columns: tuple[str, ...]
    expected: str
    success: bool
    observed: str | int | float | None
    unexpected_count: int | None = None
    examples: tuple[str, ...] = ()  # at most MAX_EXAMPLES, whitelisted columns only
    error: str | None = None  # set when GX could not evaluate the expectation
    severity: str = "critical"  # "warning": a failure is reported and stops nothing

    def line(self) -> str:
        where = f"{self.table}.{','.join(self.columns)}" if self.columns else self.table
        text = f"{self.expectation} on {where} ({self.expected}): observed {self.observed}"
        if self.examples:
            text += f"; e.g. {', '.join(self.examples)}"
        return text + (f"; error: {self.error}" if self.error else "")


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    results: tuple[ExpectationOutcome, ...]
    config: ValidationConfig = field(default_factory=ValidationConfig)

    @property
    def success(self) -> bool:
        """Every critical expectation met (a warning-level one may fail)."""
        return not self.failures

    @property
    def statistics(self) -> dict[str, int]:
        successful = sum(r.success for r in self.results)
        return {
            "evaluated": len(self.results),
            "successful": successful,
            "unsuccessful": len(self.results) - successful,
            "warnings": len(self.warnings),
        }

    @property
    def failures(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(r for r in self.results if not r.success and r.severity == "critical")

    @property
    def warnings(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(r for r in self.results if not r.success and r.severity != "critical")

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "statistics": self.statistics,
            "config": asdict(self.config),
            "results": [asdict(r) for r in self.results],
        }

    def to_markdown(self) -> str:
        """One table line per expectation: ✅/❌, table, column(s), expected, observed, examples."""
        stats = self.statistics
        lines = [
            f"### Validation `{self.suite}`: {'passed' if self.success else 'FAILED'} "
            f"({stats['successful']}/{stats['evaluated']} expectations met)",
            "",
            "| | table | column(s) | expected | observed | examples |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            observed = f"{r.observed}" + (f" (error: {r.error})" if r.error else "")
            cells = (
                "✅" if r.success else "❌" if r.severity == "critical" else "⚠️",
                r.table,
                ", ".join(r.columns),
                r.expected,
                observed,
                ", ".join(r.examples),
            )
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def failure_message(self) -> str:
        """Names every failed expectation with example offending values; empty when it passed."""
        if self.success:
            return ""
        failed = self.failures
        head = f"validation suite {self.suite!r} failed {len(failed)} of {len(self.results)}"
        return "\n".join([f"{head} expectations:", *(f"- {r.line()}" for r in failed)])

    def raise_if_failed(self) -> None:
        if not self.success:
            raise DataValidationError(self)


def save_report(report: ValidationReport, path: Path) -> None:
    """Write ``report.to_dict()`` as indented JSON, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


# --- suites --------------------------------------------------------------------------------
def raw_metadata_suite(cfg: ValidationConfig) -> dict[str, list[Expectation]]:
    """Expectations on train.csv, by table: csv_rows (text), csv_values (numbers), breasts.

    Required columns must exist and be filled; other columns may be absent or empty. A check
    on a column that a table lacks is left out when it runs (``expect_column_to_exist``
    reports a missing required column once).
    """
    required = REQUIRED_COLUMNS[Subset.TRAIN]
    domains: list[tuple[str, list[str]]] = [
        (LATERALITY, [v.value for v in Laterality]),
        (VIEW, [v.value for v in View]),
        (DENSITY, list(DENSITIES)),
        (BIRADS, [str(v) for v in BIRADS_VALUES]),
        *((name, ["0", "1"]) for name in (CANCER, BIOPSY, INVASIVE, IMPLANT)),
    ]
    rows: list[Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, description="at least one row"),
        *(gxe.ExpectColumnToExist(column=c, description="present") for c in required),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c, description="no missing") for c in required),
        *(_in_set(c, allowed) for c, allowed in domains),
        *(
            _matches(c, _INTEGER, f"an id of at most {MAX_ID_DIGITS} digits")
            for c in (SITE_ID, PATIENT_ID, IMAGE_ID, MACHINE_ID)
        ),
        _matches(AGE, _NUMBER, "a number or missing"),
        _unique(PATIENT_ID, IMAGE_ID),
    ]
    low, high = cfg.positive_rate_band
    values: list[Expectation] = [
        _between(AGE, *AGE_RANGE, text=f"within [{AGE_RANGE[0]:g}, {AGE_RANGE[1]:g}] or missing"),
        gxe.ExpectColumnMeanToBeBetween(
            column=CANCER,
            min_value=low,
            max_value=high,
            description=f"positive rate within [{low:g}, {high:g}]",
        ),
    ]
    breasts = [_between(CANCER_LABELS, None, 1, text="one cancer label per breast")]
    return {"csv_rows": rows, "csv_values": values, "breasts": breasts}


def decoded_set_suite(
    expected_images: int, cfg: ValidationConfig, known: Mapping[str, list[Any]] | None = None
) -> dict[str, list[Expectation]]:
    """Expectations on the manifest (one row per decoded image) and the one-row summary;
    ``known`` (column -> the values the champion was trained on) adds warning-level
    expectations: a new machine or site is reported, and stops nothing."""
    limit = cfg.max_quarantine_rate
    manifest: list[Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=list(MANIFEST_SCHEMA.names),
            exact_match=True,
            description="the columns of MANIFEST_SCHEMA",
        ),
        gxe.ExpectTableRowCountToEqual(
            value=expected_images, description=f"{expected_images} rows (CSV rows - quarantined)"
        ),
        _unique(PATIENT_ID, IMAGE_ID),
        _in_set(ROWS, [cfg.expected_rows]),
        _in_set(COLS, [cfg.expected_cols]),
        gxe.ExpectColumnValuesToNotBeNull(column=PIXEL_STD, description="no missing"),
        _between(PIXEL_STD, 0.0, None, text="> 0 (not constant)", strict=True),
        gxe.ExpectColumnValuesToNotBeNull(column=PIXEL_MEAN, description="no missing"),
        _between(PIXEL_MEAN, 0.0, 1.0, text="in (0, 1): not all black or white", strict=True),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=column, description="no missing")
            for column in (MODALITY_PATH, VOI_PATH)
        ),
        _in_set(MODALITY_PATH, [v.value for v in ModalityPath]),
        _in_set(VOI_PATH, [v.value for v in VoiPath]),
        *(
            gxe.ExpectColumnValuesToBeInSet(
                column=column,
                value_set=values,
                description="seen in the champion's training data (a warning)",
                severity=FailureSeverity.WARNING,
            )
            for column, values in (known or {}).items()
        ),
    ]
    summary: list[Expectation] = [
        gxe.ExpectColumnMaxToBeBetween(
            column=QUARANTINE_RATE, min_value=0.0, max_value=limit, description=f"<= {limit:g}"
        )
    ]
    return {"manifest": manifest, "summary": summary}


def _in_set(column: str, allowed: list[Any]) -> Expectation:
    text = "in {" + ", ".join(map(str, allowed)) + "}"
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=allowed, description=text)


def _matches(column: str, regex: str, text: str) -> Expectation:
    return gxe.ExpectColumnValuesToMatchRegex(column=column, regex=regex, description=text)


def _between(
    column: str, low: float | None, high: float | None, *, text: str, strict: bool = False
) -> Expectation:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=low,
        max_value=high,
        strict_min=strict,
        strict_max=strict,
        description=text,
    )


def _unique(*columns: str) -> Expectation:
    return gxe.ExpectCompoundColumnsToBeUnique(
        column_list=list(columns), description="each (" + ", ".join(columns) + ") once"
    )


def _columns_of(expectation: Expectation) -> list[str]:
    column_list = getattr(expectation, "column_list", None)
    column = getattr(expectation, "column", None)
    return list(column_list) if column_list else [column] if column else []


# --- validation ----------------------------------------------------------------------------
def validate_raw_metadata(df: pd.DataFrame, cfg: ValidationConfig) -> ValidationReport:
    """Validate train.csv as read by pandas (``dtype=str`` preferred; inferred dtypes work).

    Order: cells to text (so a wrong type shows as the offending text), the text parsed to
    numbers, then one row per breast (patient_id + laterality) counting distinct labels.
    """
    df = df.reset_index(drop=True)  # a named index would be taken for example values
    cells = pd.DataFrame({c: _as_text(df[c]) for c in TRAIN_COLUMNS if c in df.columns})
    cells.index = df.index
    values = pd.DataFrame(
        {c: pd.to_numeric(cells[c], errors="coerce") for c in (AGE, CANCER) if c in cells},
        index=df.index,
    )
    frames = {"csv_rows": cells, "csv_values": values, "breasts": _breast_labels(cells)}
    return _run("raw_metadata", raw_metadata_suite(cfg), frames, cfg)


def validate_decoded_set(
    manifest: pd.DataFrame,
    n_csv_rows: int,
    n_quarantined: int,
    cfg: ValidationConfig,
    known: Mapping[str, list[Any]] | None = None,
) -> ValidationReport:
    """Validate the manifest against the CSV: one row per CSV row that was not quarantined.

    ``n_quarantined`` counts quarantined CSV rows only (not files without a CSV row).
    """
    if n_csv_rows < 1 or not 0 <= n_quarantined <= n_csv_rows:
        raise InvalidValidationInput(f"{n_quarantined} quarantined of {n_csv_rows} CSV rows")
    manifest = manifest.reset_index(drop=True)  # a named index would be taken for examples
    summary = pd.DataFrame({QUARANTINE_RATE: [n_quarantined / n_csv_rows]})
    suites = decoded_set_suite(n_csv_rows - n_quarantined, cfg, known)
    return _run("decoded_set", suites, {"manifest": manifest, "summary": summary}, cfg)


def _as_text(column: pd.Series) -> pd.Series:
    """Cells as text, integral decimals shortened ("2.0" -> "2": pandas widens ints for a NaN)."""
    return column.astype("string").str.replace(r"^([0-9]+)\.0+$", r"\1", regex=True)


def _breast_labels(cells: pd.DataFrame) -> pd.DataFrame:
    """(images,) text rows -> (breasts,) distinct cancer labels, indexed by prediction_id."""
    keys = pd.Index([], name=PREDICTION_ID, dtype="string")
    if not {PATIENT_ID, LATERALITY, CANCER} <= set(cells.columns):
        return pd.DataFrame({CANCER_LABELS: pd.Series([], dtype="int64")}, index=keys)
    usable = cells[cells[PATIENT_ID].str.fullmatch(_INTEGER).fillna(False).astype(bool)]
    labels = usable.groupby([PATIENT_ID, LATERALITY])[CANCER].nunique()
    keys = pd.Index([prediction_id(int(p), lat) for p, lat in labels.index], name=PREDICTION_ID)
    return pd.DataFrame({CANCER_LABELS: labels.to_numpy()}, index=keys)


def _run(
    name: str,
    suites: Mapping[str, list[Expectation]],
    frames: Mapping[str, pd.DataFrame],
    cfg: ValidationConfig,
) -> ValidationReport:
    """Run each table's expectations on its frame in a fresh in-memory context."""
    context, run_name = gx_context.context()
    source = context.data_sources.add_pandas(name)
    outcomes: list[ExpectationOutcome] = []
    for table, expectations in suites.items():
        frame = frames[table]
        kept = [
            e
            for e in expectations
            if isinstance(e, gxe.ExpectColumnToExist) or set(_columns_of(e)) <= set(frame.columns)
        ]
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}.{table}", expectations=kept))
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        definition = gx.ValidationDefinition(name=f"{name}.{table}", data=batch, suite=suite)
        result = gx_context.run(context, definition, frame, _RESULT_FORMAT, run_name)
        order = {e.id: i for i, e in enumerate(suite.expectations)}
        ranked = sorted(
            result.results, key=lambda r: order.get(getattr(r.expectation_config, "id", None), 0)
        )
        outcomes += [_outcome(table, r, frame.index.name) for r in ranked]
    return ValidationReport(suite=name, results=tuple(outcomes), config=cfg)


def _outcome(table: str, result: Any, index_name: str | None) -> ExpectationOutcome:
    config = result.expectation_config
    kwargs = config.kwargs
    columns = tuple(kwargs.get("column_list") or ([kwargs["column"]] if "column" in kwargs else []))
    details = result.result or {}
    count = details.get("unexpected_count")
    observed: str | int | float | None = None
    if "observed_value" in details:
        observed = _observed(details["observed_value"], details.get("details"))
    elif count is not None:
        observed = f"{count} of {details.get('element_count')} unexpected"
    elif config.type == "expect_column_to_exist":
        observed = "present" if result.success else "absent"
    return ExpectationOutcome(
        table=table,
        expectation=config.type,
        columns=columns,
        expected=config.description or config.type,
        success=bool(result.success),
        observed=observed,
        unexpected_count=None if count is None else int(count),
        examples=_examples(details, columns, index_name),
        error=_error(result.exception_info),
        severity=str(getattr(config.severity, "value", config.severity) or "critical"),
    )


def _observed(value: Any, details: Any) -> str | int | float | None:
    mismatch = (details or {}).get("mismatched") if isinstance(details, dict) else None
    if mismatch:
        return "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in mismatch.items() if v)
    if isinstance(value, list | tuple):  # the table's column names
        return f"{len(value)} columns"
    if hasattr(value, "item"):  # numpy scalar -> Python scalar
        value = value.item()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _examples(
    details: Mapping[str, Any], columns: Sequence[str], index_name: str | None
) -> tuple[str, ...]:
    """Up to MAX_EXAMPLES distinct offending values, only from whitelisted columns.

    Tables with a named index (the breast table) report the index labels of offending rows.
    """
    if index_name is not None:
        if index_name not in EXAMPLE_COLUMNS:
            return ()
        rows = details.get("partial_unexpected_index_list") or []
        raw = [row.get(index_name) for row in rows]
    elif columns and set(columns) <= EXAMPLE_COLUMNS:
        counted = details.get("partial_unexpected_counts") or []
        raw = [c["value"] for c in counted] or details.get("partial_unexpected_list") or []
    else:
        return ()
    shown = dict.fromkeys(_example_text(v) for v in raw if v is not None and v is not pd.NA)
    return tuple(shown)[:MAX_EXAMPLES]  # distinct, in GX's order


def _example_text(value: Any) -> str:
    if isinstance(value, dict):  # one row of a multicolumn expectation
        value = tuple(value.values())
    if isinstance(value, tuple | list):
        text = "(" + ", ".join(str(v) for v in value) + ")"
    else:
        text = str(value.item() if hasattr(value, "item") else value)  # numpy -> Python
    return text[:_MAX_EXAMPLE_CHARS]


def _error(info: Any) -> str | None:
    """GX's exception_info is one record or a dict of records keyed by metric."""
    if not isinstance(info, dict):
        return None
    records = [info] if "raised_exception" in info else list(info.values())
    messages = [str(r.get("exception_message")) for r in records if r.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages)) or None


def _md_cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|"))
