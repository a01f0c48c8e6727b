"""Training data on Ray Data: shards -> decoded, resized image arrays -> Ray Train workers.

Each split becomes one Ray Dataset that reads only the PNG column of the shards holding its
rows (range reads on S3), decodes and resizes the PNGs in parallel Ray tasks, attaches the
label, the metadata vector and the auxiliary targets' values, and is materialized before
training starts: on small clusters a trainer holding every CPU would otherwise starve the
Ray Data tasks (docs/training.md). Rows are matched on (image_id, fingerprint), so a stale
row left in an old shard never reaches training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import ray
import ray.data

from mammo import contract as c
from mammo.auxiliary import aux_labels
from mammo.features import MetadataEncoder
from mammo.inference import to_training_image
from mammo.png import decode_png
from mammo.training import Target
from tasks.storage import Store

IMAGE, LABEL, METADATA, AUX = "image", "label", "metadata", "aux"
ROW_COLUMNS = (c.IMAGE_ID, c.PATIENT_ID, c.LATERALITY, c.SITE_ID)


@dataclass(frozen=True)
class SplitRows:
    """What a decode task needs to know about the rows of one split, keyed by image."""

    keys: dict[int, str]  # image_id -> fingerprint
    labels: dict[int, float | int]
    metadata: dict[int, np.ndarray] | None
    rows: int
    cols: int
    aux: dict[int, np.ndarray] | None = None  # auxiliary target values (mammo/auxiliary.py)


def quiet_ray_data() -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False


def split_rows(
    frame: pd.DataFrame,
    target: Target,
    encoder: MetadataEncoder | None,
    image_rows: int,
    image_cols: int,
    aux: tuple[Target, ...] = (),
) -> SplitRows:
    labels = target.labels(frame)
    vectors = encoder.transform(frame) if encoder is not None else None
    ids = frame[c.IMAGE_ID].astype("int64").tolist()
    extra = aux_labels(frame, aux) if aux else None
    return SplitRows(
        keys=dict(zip(ids, frame[c.FINGERPRINT].astype(str), strict=True)),
        labels=dict(zip(ids, labels.tolist(), strict=True)),
        metadata=None if vectors is None else dict(zip(ids, vectors, strict=True)),
        rows=image_rows,
        cols=image_cols,
        aux=None if extra is None else dict(zip(ids, extra, strict=True)),
    )


def decode_batch(batch: dict[str, np.ndarray], wanted: SplitRows) -> dict[str, np.ndarray]:
    """Ray Data map: keep the split's rows, decode and resize their PNGs, attach labels."""
    pairs = zip(batch[c.IMAGE_ID], batch[c.FINGERPRINT], strict=True)
    keep = [i for i, (image_id, fp) in enumerate(pairs) if wanted.keys.get(int(image_id)) == fp]
    ids = batch[c.IMAGE_ID][keep].astype(np.int64)
    images = np.empty((len(keep), wanted.rows, wanted.cols), np.uint8)  # (B, rows, cols)
    for slot, i in enumerate(keep):
        images[slot] = to_training_image(decode_png(batch[c.PNG][i]), wanted.rows, wanted.cols)
    out: dict[str, np.ndarray] = {
        c.IMAGE_ID: ids,
        IMAGE: images,
        LABEL: np.array([wanted.labels[int(i)] for i in ids]),
    }
    for column in ROW_COLUMNS[1:]:
        out[column] = batch[column][keep]
    for name, per_image in ((METADATA, wanted.metadata), (AUX, wanted.aux)):
        if per_image is not None:
            width = len(next(iter(per_image.values())))
            vectors = [per_image[int(i)] for i in ids]
            out[name] = np.stack(vectors) if vectors else np.zeros((0, width), np.float32)
    return out


def build_dataset(store: Store, frame: pd.DataFrame, wanted: SplitRows) -> ray.data.Dataset:
    """A materialized Dataset of the split's decoded images (see the module docstring)."""
    shards = sorted(frame[c.SHARD].unique())
    filesystem, _ = store.arrow_path("")
    paths = [store.arrow_path(shard)[1] for shard in shards]
    dataset = ray.data.read_parquet(
        paths,
        filesystem=filesystem,
        columns=[*ROW_COLUMNS, c.FINGERPRINT, c.PNG],
    )
    # Ray types the map as taking the batch alone, in any batch format: fn_kwargs supplies
    # ``wanted``, and the default format of these columns is a dict of numpy arrays.
    decoded = dataset.map_batches(
        decode_batch,  # type: ignore[arg-type]
        fn_kwargs={"wanted": wanted},
        batch_size=64,
    )
    materialized: ray.data.Dataset = decoded.materialize()  # Ray's decorators drop its type
    return materialized


def dataset_arrays(dataset: ray.data.Dataset) -> dict[str, np.ndarray]:
    """All rows of a (small, materialized) dataset as arrays, in a stable image_id order."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in dataset.iter_batches(batch_size=256, batch_format="numpy"):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        return {}
    arrays = {key: np.concatenate(value) for key, value in parts.items()}
    order = np.argsort(arrays[c.IMAGE_ID], kind="stable")
    return {key: value[order] for key, value in arrays.items()}
