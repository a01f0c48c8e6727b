"""The GX suites: good data passes; each family of expectations fails on data that breaks it."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from itertools import product
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mammo.contract import (
    AGE,
    BIOPSY,
    BIRADS,
    CANCER,
    CONFIG_HASH,
    DENSITY,
    DIFFICULT_NEGATIVE,
    FINGERPRINT,
    IMAGE_ID,
    IMPLANT,
    INVASIVE,
    LATERALITY,
    MACHINE_ID,
    MANIFEST_SCHEMA,
    MAX_ID_DIGITS,
    MODALITY_PATH,
    PATIENT_ID,
    PNG_PATH,
    PREDICTION_ID,
    SHARD,
    SITE_ID,
    SOURCE_PATH,
    VIEW,
    VOI_PATH,
    Subset,
    image_relpath,
    png_relpath,
)
from tasks.validate_gx import (
    CANCER_LABELS,
    COLS,
    MAX_EXAMPLES,
    PIXEL_MEAN,
    PIXEL_STD,
    QUARANTINE_RATE,
    ROWS,
    DataValidationError,
    InvalidValidationInput,
    ValidationConfig,
    ValidationReport,
    _examples,
    save_report,
    validate_decoded_set,
    validate_raw_metadata,
)

CFG = ValidationConfig(positive_rate_band=(0.0, 0.2), max_quarantine_rate=0.05,
                       expected_rows=64, expected_cols=32)  # fmt: skip
N_PATIENTS = 10  # 4 images each: L/R x CC/MLO


def good_csv() -> pd.DataFrame:
    """40 rows as pandas infers train.csv; the left breast of patient 10000 is positive (5%)."""
    rows = []
    for p in range(N_PATIENTS):
        patient = 10_000 + p
        for i, (side, view) in enumerate(product("LR", ("CC", "MLO"))):
            cancer = int(p == 0 and side == "L")
            rows.append({
                SITE_ID: 1 + p % 2, PATIENT_ID: patient, IMAGE_ID: patient * 10 + i,
                LATERALITY: side, VIEW: view, AGE: None if p == 9 else 40.0 + 3 * p,
                CANCER: cancer, BIOPSY: cancer, INVASIVE: 0, BIRADS: [0, 1, 2, None][p % 4],
                IMPLANT: int(p == 3), DENSITY: None if p == 5 else "ABCD"[p % 4],
                MACHINE_ID: [49, 21][p % 2], DIFFICULT_NEGATIVE: p == 4,
            })  # fmt: skip
    return pd.DataFrame(rows)


def good_manifest(n_images: int = 4 * N_PATIENTS) -> pd.DataFrame:
    """The manifest as read from Parquet (Arrow types), one row per decoded image."""
    rows = []
    for k in range(n_images):
        patient, image = 10_000 + k // 4, 100_000 + k
        rows.append({
            PATIENT_ID: patient, IMAGE_ID: image, LATERALITY: "LR"[k % 2], VIEW: "CC",
            CANCER: 0, SOURCE_PATH: image_relpath(Subset.TRAIN, patient, image),
            FINGERPRINT: f"fp{k}", ROWS: CFG.expected_rows, COLS: CFG.expected_cols,
            PIXEL_MEAN: 0.3 + k / 1000, PIXEL_STD: 0.1, CONFIG_HASH: "c0ffee",
            PNG_PATH: png_relpath(patient, image), SHARD: "shards/part-00000.parquet",
            MODALITY_PATH: "rescale", VOI_PATH: ["window", "min-max", "voi-lut-sequence"][k % 3],
        })  # fmt: skip
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA).to_pandas()


def csv_read_back(df: pd.DataFrame, **read_csv_kwargs: object) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(df.to_csv(index=False)), **read_csv_kwargs)


def set_cell(row: int, column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.astype({column: object})
        df.loc[row, column] = value
        return df

    return change


def make_patients_positive(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[df[PATIENT_ID].isin([10_001, 10_002, 10_003]), CANCER] = 1  # 14 of 40 positive
    return df


def failed(report: ValidationReport) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(r.table, r.expectation, r.columns) for r in report.failures}


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda df: df, id="frame-with-python-types"),
        pytest.param(lambda df: csv_read_back(df), id="csv-read-with-dtype-inference"),
        pytest.param(lambda df: csv_read_back(df, dtype=str), id="csv-read-as-strings"),
    ],
)
def test_good_metadata_passes_every_expectation(
    read: Callable[[pd.DataFrame], pd.DataFrame],
) -> None:
    report = validate_raw_metadata(read(good_csv()), CFG)
    assert report.failure_message() == ""
    assert report.success
    assert report.statistics["evaluated"] >= 20
    assert report.statistics["unsuccessful"] == 0
    assert {r.table for r in report.results} == {"csv_rows", "csv_values", "breasts"}
    positive_rate = next(r for r in report.results if r.expectation.endswith("mean_to_be_between"))
    assert positive_rate.observed == pytest.approx(2 / 40)


RAW_CASES = [
    pytest.param(set_cell(5, LATERALITY, "X"), "csv_rows", "expect_column_values_to_be_in_set",
                 (LATERALITY,), "X", id="laterality-not-L-or-R"),
    pytest.param(set_cell(5, VIEW, "XCC"), "csv_rows", "expect_column_values_to_be_in_set",
                 (VIEW,), "XCC", id="unknown-view"),
    pytest.param(set_cell(5, AGE, 150.0), "csv_values", "expect_column_values_to_be_between",
                 (AGE,), "150", id="age-150"),
    pytest.param(set_cell(5, CANCER, 2), "csv_rows", "expect_column_values_to_be_in_set",
                 (CANCER,), "2", id="cancer-2"),
    pytest.param(set_cell(5, DENSITY, "E"), "csv_rows", "expect_column_values_to_be_in_set",
                 (DENSITY,), "E", id="density-E"),
    pytest.param(set_cell(5, BIRADS, 5), "csv_rows", "expect_column_values_to_be_in_set",
                 (BIRADS,), "5", id="birads-5"),
    pytest.param(set_cell(1, IMAGE_ID, 100_000), "csv_rows",
                 "expect_compound_columns_to_be_unique", (PATIENT_ID, IMAGE_ID),
                 "(10000, 100000)", id="duplicated-patient-and-image-id"),
    pytest.param(set_cell(4, CANCER, 1), "breasts", "expect_column_values_to_be_between",
                 (CANCER_LABELS,), "10001_L", id="label-differs-within-a-breast"),
    pytest.param(make_patients_positive, "csv_values", "expect_column_mean_to_be_between",
                 (CANCER,), None, id="positive-rate-above-band"),
    pytest.param(lambda df: df.drop(columns=[LATERALITY]), "csv_rows",
                 "expect_column_to_exist", (LATERALITY,), None, id="required-column-missing"),
    pytest.param(set_cell(5, PATIENT_ID, "abc"), "csv_rows",
                 "expect_column_values_to_match_regex", (PATIENT_ID,), "abc",
                 id="non-integer-patient-id"),
    pytest.param(set_cell(5, PATIENT_ID, None), "csv_rows",
                 "expect_column_values_to_not_be_null", (PATIENT_ID,), None,
                 id="required-value-missing"),
]  # fmt: skip


@pytest.mark.parametrize(("breaks", "table", "expectation", "columns", "example"), RAW_CASES)
def test_broken_metadata_fails_the_expectation_guarding_it(
    breaks: Callable[[pd.DataFrame], pd.DataFrame],
    table: str,
    expectation: str,
    columns: tuple[str, ...],
    example: str | None,
) -> None:
    report = validate_raw_metadata(breaks(good_csv()), CFG)
    assert not report.success
    assert (table, expectation, columns) in failed(report)
    message = report.failure_message()
    assert f"{expectation} on {table}.{','.join(columns)}" in message
    if example is not None:
        outcome = next(
            r for r in report.failures if (r.table, r.expectation) == (table, expectation)
        )
        assert example in outcome.examples
        assert example in message
    with pytest.raises(DataValidationError, match=expectation):
        report.raise_if_failed()


def test_positive_rate_band_is_the_callers() -> None:
    strict = ValidationConfig(positive_rate_band=(0.1, 0.2))
    report = validate_raw_metadata(good_csv(), strict)
    assert failed(report) == {("csv_values", "expect_column_mean_to_be_between", (CANCER,))}
    assert "positive rate within [0.1, 0.2]" in report.failure_message()


def test_a_feed_that_lost_every_label_fails_the_default_band() -> None:
    unlabelled = good_csv().assign(**{CANCER: 0})
    report = validate_raw_metadata(unlabelled, ValidationConfig())
    assert failed(report) == {("csv_values", "expect_column_mean_to_be_between", (CANCER,))}
    assert validate_raw_metadata(good_csv(), ValidationConfig()).success


def test_examples_are_capped_and_distinct() -> None:
    df = good_csv().astype({LATERALITY: object})
    df.loc[:11, LATERALITY] = [f"bad{i % 8}" for i in range(12)]  # 12 rows, 8 distinct
    outcome = next(r for r in validate_raw_metadata(df, CFG).failures if r.columns == (LATERALITY,))
    assert outcome.unexpected_count == 12
    assert len(outcome.examples) == MAX_EXAMPLES
    assert len(set(outcome.examples)) == MAX_EXAMPLES


def test_examples_only_come_from_whitelisted_columns() -> None:
    details = {"partial_unexpected_counts": [{"value": "DOE^JANE", "count": 1}]}
    assert _examples(details, ("PatientName",), None) == ()
    assert _examples(details, (LATERALITY,), None) == ("DOE^JANE",)
    index_rows = {"partial_unexpected_index_list": [{"x": 2, "PatientName": "DOE^JANE"}]}
    assert _examples(index_rows, (CANCER_LABELS,), "PatientName") == ()


def test_good_decoded_set_passes() -> None:
    report = validate_decoded_set(good_manifest(), n_csv_rows=41, n_quarantined=1, cfg=CFG)
    assert report.failure_message() == ""
    assert {r.table for r in report.results} == {"manifest", "summary"}
    rate = next(r for r in report.results if r.columns == (QUARANTINE_RATE,))
    assert rate.success
    assert rate.observed == pytest.approx(1 / 41)


def test_a_value_the_champion_never_saw_warns_and_passes() -> None:
    manifest = good_manifest().assign(**{MACHINE_ID: 49, SITE_ID: 1})
    manifest.loc[manifest.index[:6], MACHINE_ID] = 251
    known = {MACHINE_ID: [21, 49], SITE_ID: [1, 2], VIEW: ["CC", "MLO"]}
    report = validate_decoded_set(manifest, 41, 1, CFG, known)
    assert report.success and report.failure_message() == ""
    (warning,) = report.warnings
    assert (warning.columns, warning.severity, warning.examples) == (
        (MACHINE_ID,),
        "warning",
        ("251",),
    )
    assert warning.unexpected_count == 6
    assert report.statistics["warnings"] == 1
    assert "| ⚠️ | manifest | machine_id |" in report.to_markdown()
    assert (
        validate_decoded_set(manifest, 41, 1, CFG, {**known, MACHINE_ID: [49, 251]}).warnings == ()
    )


def with_manifest_cell(row: int, column: str, value: float | str | None) -> pd.DataFrame:
    manifest = good_manifest()
    manifest.loc[row, column] = value
    return manifest


DECODED_CASES = [
    pytest.param(good_manifest(), 42, 1, "manifest", "expect_table_row_count_to_equal", (), None,
                 id="manifest-row-count-mismatch"),
    pytest.param(with_manifest_cell(3, ROWS, 60), 40, 0, "manifest",
                 "expect_column_values_to_be_in_set", (ROWS,), "60", id="wrong-image-height"),
    pytest.param(with_manifest_cell(3, COLS, 33), 40, 0, "manifest",
                 "expect_column_values_to_be_in_set", (COLS,), "33", id="wrong-image-width"),
    pytest.param(with_manifest_cell(3, PIXEL_STD, 0.0), 40, 0, "manifest",
                 "expect_column_values_to_be_between", (PIXEL_STD,), "0.0", id="constant-image"),
    pytest.param(with_manifest_cell(3, PIXEL_MEAN, 0.0), 40, 0, "manifest",
                 "expect_column_values_to_be_between", (PIXEL_MEAN,), "0.0", id="all-zero-image"),
    pytest.param(with_manifest_cell(3, PIXEL_MEAN, 1.0), 40, 0, "manifest",
                 "expect_column_values_to_be_between", (PIXEL_MEAN,), "1.0", id="all-white-image"),
    pytest.param(with_manifest_cell(3, VOI_PATH, "gamma"), 40, 0, "manifest",
                 "expect_column_values_to_be_in_set", (VOI_PATH,), "gamma",
                 id="unknown-voi-path"),
    pytest.param(with_manifest_cell(3, MODALITY_PATH, "palette"), 40, 0, "manifest",
                 "expect_column_values_to_be_in_set", (MODALITY_PATH,), "palette",
                 id="unknown-modality-path"),
    pytest.param(with_manifest_cell(3, VOI_PATH, None), 40, 0, "manifest",
                 "expect_column_values_to_not_be_null", (VOI_PATH,), None,
                 id="voi-path-missing"),
    pytest.param(good_manifest().drop(columns=[SHARD]), 40, 0, "manifest",
                 "expect_table_columns_to_match_set", (), None, id="manifest-column-missing"),
    pytest.param(good_manifest(), 50, 10, "summary", "expect_column_max_to_be_between",
                 (QUARANTINE_RATE,), None, id="quarantine-rate-too-high"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("manifest", "n_csv", "n_quarantined", "table", "expectation", "columns", "example"),
    DECODED_CASES,
)
def test_broken_decoded_set_fails_the_expectation_guarding_it(
    manifest: pd.DataFrame,
    n_csv: int,
    n_quarantined: int,
    table: str,
    expectation: str,
    columns: tuple[str, ...],
    example: str | None,
) -> None:
    report = validate_decoded_set(manifest, n_csv, n_quarantined, CFG)
    assert (table, expectation, columns) in failed(report)
    where = f"{table}.{','.join(columns)}" if columns else table
    assert f"{expectation} on {where}" in report.failure_message()
    if example is not None:
        outcome = next(r for r in report.failures if (r.table, r.columns) == (table, columns))
        assert example in outcome.examples


@pytest.mark.parametrize(
    ("n_csv", "n_quarantined", "observed", "expected"),
    [pytest.param(42, 1, 40, "41 rows", id="row-count"),
     pytest.param(50, 10, 0.2, "<= 0.05", id="quarantine-rate")],
)  # fmt: skip
def test_count_failures_report_what_was_expected_and_seen(
    n_csv: int, n_quarantined: int, observed: float, expected: str
) -> None:
    report = validate_decoded_set(good_manifest(), n_csv, n_quarantined, cfg=CFG)
    (outcome,) = report.failures
    assert outcome.observed == pytest.approx(observed)
    assert expected in outcome.expected
    assert f"observed {observed}" in report.failure_message()


def test_missing_required_column_is_reported_once_as_absent() -> None:
    report = validate_raw_metadata(good_csv().drop(columns=[LATERALITY]), CFG)
    (outcome,) = report.failures
    assert (outcome.expectation, outcome.columns) == ("expect_column_to_exist", (LATERALITY,))
    assert outcome.observed == "absent"
    assert outcome.error is None


@pytest.mark.parametrize(
    ("n_csv", "n_quarantined"),
    [pytest.param(0, 0, id="no-csv-rows"), pytest.param(10, 11, id="more-quarantined-than-rows"),
     pytest.param(10, -1, id="negative-quarantine")],
)  # fmt: skip
def test_impossible_counts_are_refused(n_csv: int, n_quarantined: int) -> None:
    with pytest.raises(InvalidValidationInput):
        validate_decoded_set(good_manifest(), n_csv, n_quarantined, CFG)


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({"positive_rate_band": (0.3, 0.2)}, id="band-reversed"),
     pytest.param({"max_quarantine_rate": 1.5}, id="quarantine-rate-over-one"),
     pytest.param({"expected_rows": 0}, id="zero-image-size")],
)  # fmt: skip
def test_impossible_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidValidationInput):
        ValidationConfig(**kwargs)  # type: ignore[arg-type]


def test_report_round_trips_through_json_and_renders_markdown(tmp_path: Path) -> None:
    report = validate_raw_metadata(set_cell(5, LATERALITY, "X")(good_csv()), CFG)
    path = tmp_path / "validation" / "raw_metadata.json"
    save_report(report, path)
    saved = json.loads(path.read_text())
    assert saved["suite"] == "raw_metadata"
    assert saved["success"] is False
    assert saved["statistics"]["unsuccessful"] == 1
    assert saved["statistics"]["evaluated"] == len(report.results)
    assert saved["config"]["positive_rate_band"] == list(CFG.positive_rate_band)
    (bad,) = [r for r in saved["results"] if not r["success"]]
    assert (bad["columns"], bad["examples"]) == ([LATERALITY], ["X"])
    lines = report.to_markdown().splitlines()
    rows = [line for line in lines if line.startswith("| ✅") or line.startswith("| ❌")]
    assert len(rows) == len(report.results)
    assert sum(line.startswith("| ❌") for line in rows) == 1


def test_unnamed_image_columns_are_manifest_columns() -> None:
    assert {ROWS, COLS, PIXEL_MEAN, PIXEL_STD} <= set(MANIFEST_SCHEMA.names)
    assert PREDICTION_ID in MANIFEST_SCHEMA.names


def test_the_suite_applies_the_contracts_id_rule() -> None:
    longest, too_long = "9" * MAX_ID_DIGITS, "9" * (MAX_ID_DIGITS + 1)
    assert validate_raw_metadata(set_cell(0, IMAGE_ID, longest)(good_csv()), CFG).success
    report = validate_raw_metadata(set_cell(0, IMAGE_ID, too_long)(good_csv()), CFG)
    assert failed(report) == {("csv_rows", "expect_column_values_to_match_regex", (IMAGE_ID,))}
    assert f"an id of at most {MAX_ID_DIGITS} digits" in report.failure_message()


def test_every_gate_run_joins_one_data_docs_site_under_out(tmp_path: Path) -> None:
    from tasks.data_docs import data_docs

    with data_docs(str(tmp_path), "metadata") as first:
        assert validate_raw_metadata(good_csv(), CFG).success
    with data_docs(str(tmp_path), "data") as second:
        csv_report = validate_raw_metadata(good_csv(), CFG)
        manifest_report = validate_decoded_set(good_manifest(), 41, 1, CFG)
    assert csv_report.success and manifest_report.success  # the same reports as without docs
    index = tmp_path / "validation" / "data-docs" / "index.html"
    assert first == second == [str(index)]
    pages = [p.relative_to(index.parent) for p in index.parent.glob("validations/**/*.html")]
    runs = {page.parts[-3].split("-")[-1] for page in pages}  # .../<run>/<time>/<page>
    assert len(pages) == 8 and runs == {"metadata", "data"}  # 3 tables, then 3 + 2
    text = index.read_text()
    assert "raw_metadata.csv_rows" in text and "decoded_set.manifest" in text
    assert len(list((tmp_path / "validation" / "gx-results").rglob("*.json"))) == 8


def test_the_data_docs_site_keeps_the_last_runs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.data_docs
    from mammo import contract

    monkeypatch.setattr(contract, "DATA_DOCS_RUNS", 2)
    for label in ("one", "two", "three"):
        with tasks.data_docs.data_docs(str(tmp_path), label):
            validate_raw_metadata(good_csv(), CFG)
    site = tmp_path / "validation" / "data-docs"
    runs = {p.parts[-3].split("-")[-1] for p in site.glob("validations/**/*.html")}
    stored = {p.parts[-3].split("-")[-1] for p in (site.parent / "gx-results").rglob("*.json")}
    assert runs == stored == {"two", "three"}
    index = (site / "index.html").read_text()
    assert "-two/" in index and "-three/" in index and "-one/" not in index
