"""Outputs written before an image column existed stay readable: the column comes as nulls."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from mammo import contract as c
from tasks.storage import open_store, read_parquet, write_parquet


def test_a_shard_from_before_the_reduction_column_reads_with_nulls(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    old = pa.table({c.IMAGE_ID: pa.array([1, 2], pa.int64()), "decoder": ["dicomsdl"] * 2})
    write_parquet(store, "shards/part-old.parquet", old)
    wanted = [c.IMAGE_ID, "decoder", c.REDUCTION]

    table = read_parquet(store, "shards/part-old.parquet", wanted)

    assert table.column_names == wanted
    assert table.schema.field(c.REDUCTION).type == pa.int8()
    assert table[c.REDUCTION].null_count == 2
    assert read_parquet(store, "shards/part-old.parquet").equals(old)  # nothing added unasked


def test_a_column_that_never_existed_is_still_an_error(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    write_parquet(store, "t.parquet", pa.table({c.IMAGE_ID: [1]}))
    with pytest.raises(pa.ArrowInvalid):
        read_parquet(store, "t.parquet", [c.IMAGE_ID, c.REDUCTION, "no_such_column"])


def test_a_new_shard_keeps_its_own_reduction_values(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    new = pa.table({c.IMAGE_ID: [1], c.REDUCTION: pa.array([2], pa.int8())})
    write_parquet(store, "t.parquet", new)
    assert read_parquet(store, "t.parquet", [c.REDUCTION]).to_pylist() == [{c.REDUCTION: 2}]
