"""The model's sensitivity and specificity over time, once labels arrive for the breasts it
scored after its training: one Bernoulli CUSUM each (mammo/cusum.py).

Every drift report scores the images that arrived since the model was trained. The breasts
among them with a label are its *outcomes*: each is charted once, on the night it was first
seen labelled (OUT/monitor/outcomes/, one file per model version, kept by tasks/monitor.py).
The in-control rates are the model's own on its holdout at the locked threshold (the
operating point of its evaluation), smoothed so that a holdout without a miss still gives a
chart. A chart that reaches its limit is a critical ``performance-shift`` finding: a slow
loss of sensitivity shows before it is large, and without waiting for a retraining.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from mammo import contract as c
from mammo.cusum import NIGHT, OUTCOME, Chart, chart, smoothed_rate
from mammo.drift import DriftSettings, Finding, FindingKind, Severity

OUTCOME_COLUMNS = (c.PATIENT_ID, c.LATERALITY, NIGHT, c.CANCER, c.PROBABILITY)
_BREAST = [c.PATIENT_ID, c.LATERALITY]


def new_outcomes(known: pd.DataFrame | None, breasts: pd.DataFrame, night: str) -> pd.DataFrame:
    """``known`` outcomes and, stamped ``night``, the labelled ``breasts`` (one row per
    breast: patient, laterality, CANCER, PROBABILITY) not among them yet."""
    labelled = breasts[breasts[c.CANCER].isin((0, 1))]
    if known is None or known.empty:
        fresh = labelled
    else:
        seen = pd.MultiIndex.from_frame(known[_BREAST])
        fresh = labelled[~pd.MultiIndex.from_frame(labelled[_BREAST]).isin(seen)]
    fresh = fresh.assign(**{NIGHT: night})[list(OUTCOME_COLUMNS)]
    frames = [f for f in (known, fresh) if f is not None and not f.empty]
    if not frames:
        return fresh.reset_index(drop=True)
    merged = pd.concat(frames, ignore_index=True)
    return merged.astype({c.CANCER: "int64", c.PROBABILITY: "float64", NIGHT: "str"})


def in_control(operating_point: Mapping[str, int]) -> tuple[float, float]:
    """The miss rate and the false-recall rate of an operating point (``tp``, ``fn``,
    ``fp``, ``tn`` of the holdout breasts), smoothed."""
    tp, fn, fp, tn = (int(operating_point[k]) for k in ("tp", "fn", "fp", "tn"))
    return smoothed_rate(fn, tp + fn), smoothed_rate(fp, fp + tn)


def performance_charts(
    outcomes: pd.DataFrame,
    threshold: float,
    operating_point: Mapping[str, int],
    settings: DriftSettings,
) -> tuple[list[Chart], list[Finding]]:
    """The sensitivity and specificity charts of ``outcomes`` (OUTCOME_COLUMNS), and a
    critical finding for each that signalled."""
    miss, false_recall = in_control(operating_point)
    ordered = outcomes.sort_values([NIGHT, *_BREAST], kind="stable")
    recalled = ordered[c.PROBABILITY] >= threshold
    positive = ordered[c.CANCER] == 1
    cases = {
        "sensitivity": (ordered[positive].assign(**{OUTCOME: ~recalled[positive]}), miss),
        "specificity": (ordered[~positive].assign(**{OUTCOME: recalled[~positive]}), false_recall),
    }
    charts, findings = [], []
    for name, (rows, p0) in cases.items():
        if rows.empty:
            continue
        drawn = chart(name, rows, p0, settings.cusum_odds_ratio, settings.cusum_arl)
        charts.append(drawn)
        if drawn.signalled:
            findings.append(_finding(drawn, len(rows)))
    return charts, findings


def _finding(drawn: Chart, breasts: int) -> Finding:
    what = "misses" if drawn.name == "sensitivity" else "false recalls"
    events, cases = sum(drawn.events), sum(drawn.cases)
    return Finding(
        kind=FindingKind.PERFORMANCE_SHIFT,
        column=drawn.name,
        group="",
        statistic="cusum",
        value=max(drawn.values),
        p_value=None,
        images=breasts,
        severity=Severity.CRITICAL,
        detail=(
            f"{drawn.name} CUSUM reached its limit {drawn.limit:.2f} on night "
            f"{drawn.signal_night}: {events} {what} in {cases} labelled breasts, against an "
            f"in-control rate of {drawn.p0:.3f} (tuned to detect {drawn.p1:.3f})"
        ),
    )


def chart_markdown(charts: list[Chart]) -> list[str]:
    """The charts as markdown tables: one row per night."""
    lines: list[str] = []
    for drawn in charts:
        lines += [
            "",
            f"**{drawn.name} CUSUM** (in control {drawn.p0:.3f}, tuned to {drawn.p1:.3f}, "
            f"limit {drawn.limit:.2f})",
            "",
            "| night | breasts | events | S | |",
            "|---|---|---|---|---|",
        ]
        for night, cases, events, value in zip(
            drawn.nights, drawn.cases, drawn.events, drawn.values, strict=True
        ):
            bar = "#" * min(40, round(40 * value / drawn.limit))
            flag = " **signal**" if night == drawn.signal_night else ""
            lines.append(f"| {night} | {cases} | {events} | {value:.2f} | `{bar}`{flag} |")
    return lines
