"""CSV typing, CSV/file join, incremental pending set and the stable shard plan."""

from __future__ import annotations

import pandas as pd
import pytest

from mammo import contract as c
from mammo import inventory as inv

HEADER = ",".join(c.TRAIN_COLUMNS)


def csv_line(
    patient_id: object, image_id: object, laterality: str = "L", cancer: object = 0, **kw: object
) -> str:
    values = {
        c.SITE_ID: 1,
        c.PATIENT_ID: patient_id,
        c.IMAGE_ID: image_id,
        c.LATERALITY: laterality,
        c.VIEW: "CC",
        c.AGE: 61.0,
        c.CANCER: cancer,
        c.BIOPSY: 0,
        c.INVASIVE: 0,
        c.BIRADS: "",
        c.IMPLANT: 0,
        c.DENSITY: "B",
        c.MACHINE_ID: 49,
        c.DIFFICULT_NEGATIVE: "False",
    }
    values.update(kw)
    return ",".join(str(values[col]) for col in c.TRAIN_COLUMNS)


def make_csv(*lines: str) -> bytes:
    return "\n".join([HEADER, *lines]).encode()


def files_for(*pairs: tuple[int, int], size: int = 100, version: str = "v1") -> list[inv.FileInfo]:
    return [inv.FileInfo(c.image_relpath(c.Subset.TRAIN, p, i), size, version) for p, i in pairs]


def test_good_rows_are_typed_and_get_a_prediction_id() -> None:
    rows, quarantine = inv.parse_metadata_csv(
        make_csv(csv_line(10, 100), csv_line(10, 101, "R", 1)), c.Subset.TRAIN
    )
    assert quarantine.empty
    assert list(rows[c.PREDICTION_ID]) == ["10_L", "10_R"]
    assert rows[c.IMAGE_ID].dtype == "Int64" and rows[c.CANCER].tolist() == [0, 1]
    assert rows[c.BIRADS].isna().all()
    assert rows[c.DIFFICULT_NEGATIVE].tolist() == [False, False]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        pytest.param(
            csv_line("../../etc/passwd", 100), "patient_id", id="path-traversal-patient-id"
        ),
        pytest.param(csv_line(10, "12a"), "image_id", id="non-integer-image-id"),
        pytest.param(csv_line(10, "-5"), "image_id", id="negative-image-id"),
        pytest.param(csv_line(10, "1.5"), "image_id", id="fractional-image-id"),
        pytest.param(csv_line(10, 100, laterality="X"), "laterality", id="laterality-not-L-or-R"),
        pytest.param(csv_line(10, 100, cancer="abc"), "cancer", id="cancer-not-a-number"),
        pytest.param(csv_line(10, 100, cancer=""), "cancer", id="required-cancer-empty"),
        pytest.param(csv_line(10, 100, age="old"), "age", id="age-not-a-number"),
    ],
)
def test_unusable_rows_are_quarantined_with_the_column_named(line: str, detail: str) -> None:
    rows, quarantine = inv.parse_metadata_csv(make_csv(csv_line(1, 1), line), c.Subset.TRAIN)
    assert len(rows) == 1 and rows[c.IMAGE_ID].tolist() == [1]
    assert quarantine["reason"].tolist() == [c.QuarantineReason.BAD_CSV_ROW.value]
    assert quarantine["source"].tolist() == ["train.csv:line 3"]
    assert detail in quarantine["detail"].iloc[0]


def test_duplicated_image_id_quarantines_every_row_of_it() -> None:
    rows, quarantine = inv.parse_metadata_csv(
        make_csv(csv_line(1, 7), csv_line(2, 7), csv_line(3, 8)), c.Subset.TRAIN
    )
    assert rows[c.IMAGE_ID].tolist() == [8]
    assert set(quarantine["reason"]) == {c.QuarantineReason.DUPLICATE_IMAGE_ID.value}
    assert sorted(quarantine[c.PATIENT_ID].tolist()) == [1, 2]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"site_id,patient_id\n1,2\n", id="missing-required-columns"),
        pytest.param(b"", id="empty-file"),
        pytest.param(b"\xff\xfe\x00garbage\x00", id="not-text"),
    ],
)
def test_unusable_csv_raises_a_clear_error(data: bytes) -> None:
    with pytest.raises(inv.MetadataError, match=r"train\.csv"):
        inv.parse_metadata_csv(data, c.Subset.TRAIN)


def join(lines: list[str], files: list[inv.FileInfo]) -> inv.Inventory:
    rows, quarantine = inv.parse_metadata_csv(make_csv(*lines), c.Subset.TRAIN)
    return inv.join_inventory(rows, files, c.Subset.TRAIN, quarantine)


def test_join_accounts_for_every_row_and_every_file() -> None:
    files = [
        *files_for((1, 10), (1, 11), (3, 30), (4, 99)),
        inv.FileInfo("train_images/1/notes.txt", 5, "v"),
        inv.FileInfo("train_images/x/12.dcm", 5, "v"),
    ]
    result = join([csv_line(1, 10), csv_line(1, 11), csv_line(2, 20), csv_line(4, 40)], files)
    assert result.candidates[c.IMAGE_ID].tolist() == [10, 11]
    reasons = dict(zip(result.quarantine["source"], result.quarantine["reason"], strict=True))
    assert reasons == {
        "train.csv:line 4": "missing_file",  # image 20: no file
        "train.csv:line 5": "missing_file",  # image 40: no file
        "train_images/3/30.dcm": "no_csv_row",
        "train_images/4/99.dcm": "no_csv_row",
        "train_images/1/notes.txt": "unexpected_path",
        "train_images/x/12.dcm": "unexpected_path",
    }
    assert result.csv_rows == 4


def test_file_under_another_patient_is_a_mismatch_and_its_row_missing() -> None:
    result = join([csv_line(1, 10)], files_for((2, 10)))
    assert result.candidates.empty
    assert sorted(result.quarantine["reason"]) == ["missing_file", "patient_mismatch"]


def test_fingerprint_changes_with_the_file_not_with_the_row() -> None:
    base = join([csv_line(1, 10)], files_for((1, 10)))
    resized = join([csv_line(1, 10)], files_for((1, 10), size=101))
    touched = join([csv_line(1, 10)], files_for((1, 10), version="v2"))
    relabelled = join([csv_line(1, 10, cancer=1)], files_for((1, 10)))
    prints = [frame.candidates[c.FINGERPRINT].iloc[0] for frame in (base, resized, touched)]
    assert len(set(prints)) == 3
    assert relabelled.candidates[c.FINGERPRINT].iloc[0] == prints[0]  # no re-decode
    assert relabelled.candidates[c.CANCER].tolist() == [1]


def test_select_patients_keeps_the_smallest_ids_and_ignores_other_files() -> None:
    rows, quarantine = inv.parse_metadata_csv(
        make_csv(csv_line(5, 50), csv_line(3, 30), csv_line(9, 90)), c.Subset.TRAIN
    )
    rows, quarantine, scope = inv.select_patients(rows, quarantine, 2)
    assert scope == {3, 5}
    result = inv.join_inventory(
        rows, files_for((3, 30), (5, 50), (9, 90), (11, 110)), c.Subset.TRAIN, quarantine, scope
    )
    assert result.candidates[c.IMAGE_ID].tolist() == [30, 50]
    assert result.quarantine.empty


def candidates(n: int) -> pd.DataFrame:
    return join(
        [csv_line(p, p * 10 + k) for p in range(1, n + 1) for k in range(2)],
        files_for(*[(p, p * 10 + k) for p in range(1, n + 1) for k in range(2)]),
    ).candidates


def test_pending_drops_what_is_done_with_the_same_fingerprint_only() -> None:
    items = candidates(3)
    done = items.iloc[:2][[c.IMAGE_ID, c.FINGERPRINT]].copy()
    assert inv.pending_items(items, done)[c.IMAGE_ID].tolist() == items[c.IMAGE_ID].tolist()[2:]
    stale = done.assign(**{c.FINGERPRINT: "other"})
    assert len(inv.pending_items(items, stale)) == len(items)


def test_shard_plan_is_stable_when_finished_shards_are_removed() -> None:
    items = candidates(10)  # 20 items
    full = inv.plan_shards(items, 3, "cfg")
    assert [len(s.items) for s in full] == [3, 3, 3, 3, 3, 3, 2]
    finished = {full[1].name, full[4].name, full[6].name}
    done = pd.concat([s.items for s in full if s.name in finished])
    resumed = inv.plan_shards(inv.pending_items(items, done), 3, "cfg")
    assert [s.name for s in resumed] == [s.name for s in full if s.name not in finished]


@pytest.mark.parametrize("pending", [1, 7, 24, 300, 5000, 54706])
@pytest.mark.parametrize("cores", [1, 2, 16, 64])
def test_auto_shard_size_gives_every_core_a_few_shards_and_caps_the_size(
    pending: int, cores: int
) -> None:
    size = inv.auto_shard_size(pending, cores)
    target = cores * inv.SHARDS_PER_CORE
    # brute force: the smallest size that makes at most SHARDS_PER_CORE shards per core
    smallest = min(s for s in range(1, pending + 1) if -(-pending // s) <= target)
    assert size == min(smallest, inv.MAX_SHARD_SIZE)
    shards = -(-pending // size)
    assert shards >= min(pending, target // 2) or size == inv.MAX_SHARD_SIZE  # cores kept busy


def test_the_costliest_shards_come_first() -> None:
    items = candidates(6)  # 12 items of 100 bytes
    items.loc[items[c.IMAGE_ID] == items[c.IMAGE_ID].max(), c.FINGERPRINT] = "90000-v1"
    shards = inv.plan_shards(items, 4, "cfg")
    costs = [inv.expected_cost(s.items) for s in shards]
    assert costs == sorted(costs, reverse=True) and costs[0] == 90000 + 300
    assert shards[0].items[c.IMAGE_ID].max() == items[c.IMAGE_ID].max()  # the last by id


def test_shard_names_depend_on_config_and_content() -> None:
    items = candidates(2)
    assert inv.plan_shards(items, 10, "a")[0].name == inv.plan_shards(items, 10, "a")[0].name
    assert inv.plan_shards(items, 10, "a")[0].name != inv.plan_shards(items, 10, "b")[0].name
    assert (
        inv.plan_shards(items, 10, "a")[0].name != inv.plan_shards(items.iloc[1:], 10, "a")[0].name
    )


LONGEST = "9" * c.MAX_ID_DIGITS  # the largest id the contract admits: fits an int64
TOO_LONG = "9" * (c.MAX_ID_DIGITS + 1)  # beyond int64's 9223372036854775807


def test_one_id_rule_for_the_csv_and_the_file_names() -> None:
    rows, quarantine = inv.parse_metadata_csv(
        make_csv(csv_line(LONGEST, 1), csv_line(1, TOO_LONG)), c.Subset.TRAIN
    )
    assert rows[c.PATIENT_ID].tolist() == [int(LONGEST)]
    assert "image_id" in quarantine["detail"].iloc[0]
    assert c.parse_image_relpath(f"train_images/{LONGEST}/{LONGEST}.dcm") is not None
    assert c.parse_image_relpath(f"train_images/{TOO_LONG}/1.dcm") is None


def test_an_oversized_folder_name_reaches_the_quarantine_not_a_crash() -> None:
    files = [
        *files_for((1, 10)),
        inv.FileInfo(f"train_images/{TOO_LONG}/12.dcm", 5, "v"),
        inv.FileInfo(f"train_images/1/{TOO_LONG}.dcm", 5, "v"),
    ]
    result = join([csv_line(1, 10)], files)
    assert result.candidates[c.IMAGE_ID].tolist() == [10]
    quarantined = result.quarantine.set_index("source")
    for name in (f"train_images/{TOO_LONG}/12.dcm", f"train_images/1/{TOO_LONG}.dcm"):
        assert quarantined.loc[name, "reason"] == "unexpected_path"
        assert f"at most {c.MAX_ID_DIGITS} digits" in quarantined.loc[name, "detail"]
