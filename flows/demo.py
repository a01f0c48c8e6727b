"""The demo: a small enriched synthetic set through the whole nightly pipeline, on 2 CPUs.

    mammo demo          (make demo)

The settings here are also the integration tests' (tests/flows/conftest.py), so the figures
the tests assert are the ones a newcomer sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.nightly import nightly
from mammo import contract as c
from mammo.synth.generate import SynthConfig, generate

PREPROCESS = {"out_rows": 512, "out_cols": 256}
TRAIN = {
    "image_rows": 256,
    "image_cols": 128,
    "epochs": 12,
    "batch_size": 8,
    "num_workers": 2,
    "early_stopping_patience": 5,
}
SPLIT = {"holdout_fraction": 0.2, "val_fraction": 0.25}
POSITIVE_RATE = 0.25  # enriched so that a small CNN learns in minutes; the real set: about 2 %
VALIDATION = {"positive_rate_band": (0.0, 0.5)}  # the band must admit the enriched rate


def run_demo(root: Path, patients: int = 60, seed: int = 7) -> dict[str, Any]:
    """Synthesize ``root/raw`` once (with a test set), then run the nightly pipeline on it."""
    raw = root / "raw"
    if not (raw / c.csv_name(c.Subset.TRAIN)).exists():
        print(f"Synthesizing {patients} patients into {raw} ...")
        generate(
            raw,
            SynthConfig(patients=patients, seed=seed, positive_rate=POSITIVE_RATE, with_test=True),
        )
    return nightly(
        raw=str(raw),
        out=str(root / "out"),
        shard_size=32,
        preprocess=PREPROCESS,
        train_config=TRAIN,
        split=SPLIT,
        validation=VALIDATION,
    )
