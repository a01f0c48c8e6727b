"""Bernoulli CUSUM charts of a model's sensitivity and specificity at its locked threshold,
over the labelled breasts that arrived after it was trained, night after night.

Each labelled breast is one Bernoulli case for one chart: a positive breast is a *miss*
(x = 1) when its probability is below the threshold (the sensitivity chart), a negative
breast is a *false recall* (x = 1) when it is at or above it (the specificity chart). In
control, x = 1 with probability p0, the model's own rate on its holdout at that threshold;
the chart is tuned to detect the rate whose odds are ``odds_ratio`` times p0's, p1
(Steiner, Cook, Farewell & Treasure 2000; Reynolds & Stoumbos 1999):

    W = x ln(p1 / p0) + (1 - x) ln((1 - p1) / (1 - p0))      (the log-likelihood ratio)
    S_0 = 0,  S_t = max(0, S_{t-1} + W_t),  signal when S_t >= h

``h`` is chosen so that the in-control average run length (the mean number of cases of the
chart's class between false signals) is ``arl``. The run length of a given ``h`` is computed
with the Markov chain of Brook & Evans (1972) on a fine grid of S. S only takes the values of
a lattice, so the exact run length is a step function of ``h`` that the chain smooths: it is
within 10 % of simulation (tests/mammo/test_cusum.py), well inside the uncertainty of p0.
Cases are taken in the order of the nights they arrived in (then by breast), so the chart's
value after each night is what the report shows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

GRID = 1000  # states of S in [0, h) for the run-length computation
NIGHT, OUTCOME = "night", "outcome"  # columns of the cases a chart is drawn from


class CusumError(ValueError):
    """A chart that cannot be set up (rates or settings out of range)."""


@dataclass(frozen=True)
class Chart:
    """One Bernoulli CUSUM: its rates, its limit and its value after each night."""

    name: str  # "sensitivity" or "specificity"
    p0: float  # in-control rate of x = 1 (misses, or false recalls)
    p1: float  # the rate it is tuned to detect
    limit: float  # h
    nights: tuple[str, ...]  # in order
    values: tuple[float, ...]  # S after each night's cases
    cases: tuple[int, ...]  # cases of each night
    events: tuple[int, ...]  # x = 1 of each night
    signal_night: str | None  # the first night S reached the limit, if any

    @property
    def signalled(self) -> bool:
        return self.signal_night is not None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "p0": self.p0,
            "p1": self.p1,
            "limit": self.limit,
            "nights": list(self.nights),
            "values": list(self.values),
            "cases": list(self.cases),
            "events": list(self.events),
            "signal_night": self.signal_night,
        }


def out_of_control_rate(p0: float, odds_ratio: float) -> float:
    """The rate whose odds are ``odds_ratio`` x the odds of ``p0``."""
    _check_rate(p0)
    if not odds_ratio > 1:
        raise CusumError(f"odds_ratio must be > 1, got {odds_ratio}")
    return odds_ratio * p0 / (1 - p0 + odds_ratio * p0)


def weights(p0: float, p1: float) -> tuple[float, float]:
    """The increments of S for x = 1 (positive) and x = 0 (negative)."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


def run_length(p: float, p0: float, p1: float, limit: float) -> float:
    """Average run length from S = 0 to a signal when each case is 1 with probability ``p``
    (Brook-Evans Markov chain on GRID states of [0, limit))."""
    up, down = weights(p0, p1)
    width = limit / GRID
    centres = (np.arange(GRID) + 0.5) * width  # state i holds S in [i w, (i + 1) w)
    transition = np.zeros((GRID, GRID))
    for value, chance in ((up, p), (down, 1.0 - p)):
        after = centres + value
        inside = after < limit
        target = np.where(after <= 0, 0, np.floor(after / width)).astype(int)
        rows = np.nonzero(inside)[0]
        np.add.at(transition, (rows, target[inside]), chance)
    lengths = np.linalg.solve(np.eye(GRID) - transition, np.ones(GRID))
    return float(lengths[0])


@functools.lru_cache(maxsize=64)
def control_limit(p0: float, p1: float, arl: float) -> float:
    """The smallest ``h`` (to 0.1 % of it) whose in-control run length reaches ``arl``."""
    if not arl > 1:
        raise CusumError(f"the in-control run length must be > 1 case, got {arl}")
    up, _ = weights(p0, p1)
    low, high = 0.0, up
    while run_length(p0, p0, p1, high) < arl:
        low, high = high, high * 2
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if run_length(p0, p0, p1, middle) < arl else (low, middle)
    return high


def chart(name: str, cases: pd.DataFrame, p0: float, odds_ratio: float, arl: float) -> Chart:
    """The CUSUM of ``cases`` (columns NIGHT and OUTCOME, 0/1), taken in night order."""
    p1 = out_of_control_rate(p0, odds_ratio)
    limit = control_limit(p0, p1, arl)
    up, down = weights(p0, p1)
    s, nights, values, counts, events = 0.0, [], [], [], []
    signal: str | None = None
    for night, part in cases.groupby(NIGHT, sort=True):
        outcomes: npt.NDArray[np.int64] = part[OUTCOME].to_numpy(np.int64)
        for x in outcomes:
            s = max(0.0, s + (up if x else down))
            if s >= limit and signal is None:
                signal = str(night)
        nights.append(str(night))
        values.append(s)
        counts.append(len(outcomes))
        events.append(int(outcomes.sum()))
    return Chart(
        name, p0, p1, limit, tuple(nights), tuple(values), tuple(counts), tuple(events), signal
    )


def smoothed_rate(events: int, cases: int) -> float:
    """``(events + 0.5) / (cases + 1)``: a holdout with no miss still has a rate above 0."""
    if events < 0 or cases < events:
        raise CusumError(f"need 0 <= events <= cases, got {events}, {cases}")
    return (events + 0.5) / (cases + 1)


def _check_rate(p: float) -> None:
    if not 0 < p < 1:
        raise CusumError(f"an in-control rate must be in (0, 1), got {p}")
