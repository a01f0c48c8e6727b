"""The drift report's false-alarm rate: nights drawn from the reference's own distribution,
each compared with the reference as the nightly does (data and score findings, default
[monitor] thresholds); the share of nights that raise any finding.

Each night is synthetic manifest rows, four images per patient as in the RSNA set (site,
machine and age are the patient's; the pixel statistics depend on the machine and on the
patient), with a model's scores drawn from one distribution.

    python -m benchmarks.drift_false_alarms                  # 2000 nights of 300 images
    python -m benchmarks.drift_false_alarms --nights 500 --images 1200
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmarks.common import Result, base_parser, finish, prepare_environment
from mammo import contract as c
from mammo.drift import DriftSettings, compare, compare_scores

NAME = "drift_false_alarms"
THRESHOLD = 0.3  # the locked threshold of the synthetic model's scores
REFERENCE_IMAGES = 2000


def night(
    rng: np.random.Generator, n: int = 600, machines: tuple[int, ...] = (21, 49)
) -> pd.DataFrame:
    """A night's manifest rows, four images per patient as in the RSNA set: the site, the
    machine and the age are the patient's, the pixel statistics depend on the machine and
    partly on the patient (correlated within a patient, as real images are)."""
    patients = -(-n // 4)
    site = rng.choice([1, 2], patients, p=[0.6, 0.4])
    machine = rng.choice(machines, patients)
    age = rng.normal(58, 9, patients).round()
    own = rng.normal(0, 0.02, patients)  # the patient's own brightness
    who = np.arange(n) // 4
    return pd.DataFrame(
        {
            c.IMAGE_ID: rng.integers(0, 2**62, n),
            c.PATIENT_ID: rng.integers(0, 2**62) + who,
            c.LATERALITY: np.where(np.arange(n) % 4 < 2, "L", "R"),
            c.SITE_ID: site[who],
            c.MACHINE_ID: machine[who],
            c.VIEW: rng.choice(["CC", "MLO"], n),
            "transfer_syntax": "1.2.840.10008.1.2.4.90",
            "photometric": "MONOCHROME2",
            "bits_stored": 12,
            c.AGE: age[who],
            c.PIXEL_MEAN: 0.30 + own[who] + rng.normal(0, 0.01, n) + 0.02 * (machine[who] == 49),
            c.PIXEL_STD: rng.normal(0.20, 0.02, n),
        }
    )


def scored(rng: np.random.Generator, n: int, shift_site: int | None = None) -> pd.DataFrame:
    frame = night(rng, n)
    scores = rng.beta(1, 12, n)
    if shift_site is not None:
        on = frame[c.SITE_ID] == shift_site
        scores[on] = rng.beta(2, 6, int(on.sum()))
    return frame.assign(**{c.PROBABILITY: scores})


def measure(nights: int, images: int, seed: int, smoke: bool) -> Result:
    rng = np.random.default_rng(seed)
    settings = DriftSettings()
    reference = scored(rng, REFERENCE_IMAGES)
    alarms, kinds = 0, Counter[str]()
    began = time.perf_counter()
    for _ in range(nights):
        tonight = scored(rng, images)
        found = compare(reference, tonight, settings)
        found += compare_scores(reference, tonight, THRESHOLD, settings)
        alarms += bool(found)
        kinds.update(f.key for f in found)
    seconds = time.perf_counter() - began
    return Result(
        name=NAME,
        smoke=smoke,
        params={
            "nights": nights,
            "images": images,
            "reference_images": REFERENCE_IMAGES,
            "seed": seed,
            "settings": settings.__dict__,
        },
        table=[{"finding": key, "nights": count} for key, count in sorted(kinds.items())],
        summary={
            "nights": nights,
            "nights_with_a_finding": alarms,
            "false_alarm_rate": alarms / nights,
            "seconds_per_night": seconds / nights,
        },
        formulas={"false_alarm_rate": "nights with any finding / nights"},
        notes=["every night is drawn from the reference's distribution: any finding is false"],
    )


def main(argv: Sequence[str] | None = None) -> Result:
    parser = base_parser(NAME, __doc__ or "")
    parser.add_argument("--nights", type=int, default=None, help="default 2000 (smoke: 5)")
    parser.add_argument("--images", type=int, default=300, help="images per night")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    prepare_environment()
    nights = args.nights or (5 if args.smoke else 2000)
    return finish(measure(nights, args.images, args.seed, args.smoke), args.results_dir)


if __name__ == "__main__":
    main()
