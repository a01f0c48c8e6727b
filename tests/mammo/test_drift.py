"""Drift findings against brute-force references, and the false-alarm rate on null nights."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.drift_false_alarms import night, scored
from mammo import contract as c
from mammo.drift import (
    DriftSettings,
    FindingKind,
    Severity,
    binned,
    compare,
    compare_scores,
    psi,
    quantile_edges,
    two_proportion_p,
)
from mammo.drift_report import DriftReport, unresolved_critical

SETTINGS = DriftSettings()


def test_psi_is_the_textbook_sum_with_smoothing() -> None:
    ref, cur = [10, 20, 0], [5, 25, 7]
    p = [(x + 0.5) / 31.5 for x in ref]
    q = [(x + 0.5) / 38.5 for x in cur]
    expected = sum((qi - pi) * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    assert psi(ref, cur) == pytest.approx(expected)
    assert psi(ref, ref) == 0
    assert psi(ref, cur) == pytest.approx(psi(cur, ref))  # symmetric


def test_quantile_bins_split_the_reference_evenly_and_count_every_value() -> None:
    values = np.random.default_rng(0).normal(size=1000)
    edges = quantile_edges(values, 10)
    counts = binned(values, edges)
    assert len(counts) == 10 and counts.sum() == 1000
    assert counts.min() >= 99 and counts.max() <= 101
    brute = [int(np.sum(values <= edges[0]))]
    brute += [int(np.sum((values > lo) & (values <= hi))) for lo, hi in pairwise(edges)]
    brute += [int(np.sum(values > edges[-1]))]
    assert counts.tolist() == brute
    assert binned([-1e9, 1e9], edges).tolist() == [1, *[0] * 8, 1]


def test_two_proportion_p_matches_the_z_test_by_hand() -> None:
    p1, n1, p2, n2 = 0.10, 400, 0.16, 300
    pooled = (40 + 48) / 700
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / 400 + 1 / 300))
    assert two_proportion_p(p1, n1, p2, n2) == pytest.approx(2 * (1 - stats.norm.cdf(z)))
    assert two_proportion_p(0.0, 50, 0.0, 60) == 1.0


def test_same_distribution_raises_nothing() -> None:
    rng = np.random.default_rng(1)
    assert compare(night(rng), night(rng), SETTINGS) == []


def test_a_new_machine_and_a_pixel_shift_on_one_machine_are_exactly_the_findings() -> None:
    rng = np.random.default_rng(2)
    reference, current = night(rng), night(rng)
    current.loc[current.index[:12], c.MACHINE_ID] = 999
    on_49 = current[c.MACHINE_ID] == 49
    current.loc[on_49, c.PIXEL_MEAN] += 0.04
    findings = compare(reference, current, SETTINGS)
    assert [(f.kind, f.column, f.group) for f in findings] == [
        (FindingKind.NEW_VALUE, c.MACHINE_ID, "machine_id=999"),
        (FindingKind.NUMERIC_SHIFT, c.PIXEL_MEAN, "machine_id=49"),
    ]
    new, shift = findings
    assert new.images == 12 and new.severity is Severity.WARNING
    assert shift.severity is Severity.CRITICAL and shift.images == int(on_49.sum())
    ks = stats.ks_2samp(
        reference.loc[reference[c.MACHINE_ID] == 49, c.PIXEL_MEAN], current.loc[on_49, c.PIXEL_MEAN]
    )
    assert shift.p_value == pytest.approx(ks.pvalue)
    assert shift.key == "numeric-shift:pixel_mean:machine_id=49"


def test_a_moved_mix_is_a_mix_shift_with_the_chi_square_p_value() -> None:
    rng = np.random.default_rng(3)
    reference, current = night(rng), night(rng)
    current[c.SITE_ID] = rng.choice([1, 2], len(current), p=[0.2, 0.8])
    (finding,) = [f for f in compare(reference, current, SETTINGS) if f.column == c.SITE_ID]
    assert finding.kind is FindingKind.MIX_SHIFT
    table = pd.crosstab(
        np.r_[np.zeros(len(reference)), np.ones(len(current))],
        np.r_[reference[c.SITE_ID], current[c.SITE_ID]],
    )
    assert finding.p_value == pytest.approx(stats.chi2_contingency(table).pvalue)
    assert re.search(
        r"^mix of site_id moved \(PSI [0-9.]+\): 1: [56]\d% -> [12]\d%", finding.detail
    )


def test_a_small_night_is_not_tested_for_shifts_but_new_values_still_show() -> None:
    rng = np.random.default_rng(4)
    reference, current = night(rng), night(rng, n=SETTINGS.min_samples - 1, machines=(77,))
    current[c.PIXEL_MEAN] += 0.3
    kinds = {(f.kind, f.column) for f in compare(reference, current, SETTINGS)}
    assert kinds == {(FindingKind.NEW_VALUE, c.MACHINE_ID)}


def test_a_champion_whose_scores_shift_on_one_site_shows_it_there_only() -> None:
    rng = np.random.default_rng(5)
    reference, current = scored(rng, 800), scored(rng, 800, shift_site=2)
    findings = compare_scores(reference, current, threshold=0.3, settings=SETTINGS)
    site = [f for f in findings if f.group.startswith(c.SITE_ID)]
    assert {(f.kind, f.group, f.statistic) for f in site} == {
        (FindingKind.SCORE_SHIFT, "site_id=2", "psi"),  # the score distribution
        (FindingKind.SCORE_SHIFT, "site_id=2", "recall_rate"),  # and the recall rate at 0.3
    }
    assert compare_scores(reference, scored(rng, 800), threshold=0.3, settings=SETTINGS) == []


def test_a_moved_recall_rate_alone_is_a_score_finding() -> None:
    rng = np.random.default_rng(6)
    reference = scored(rng, 1000)
    current = reference.copy()  # the same distribution except around the threshold
    current[c.IMAGE_ID] += 10_000
    below = current[c.PROBABILITY].between(0.1, 0.15)
    current.loc[below, c.PROBABILITY] += 0.06
    findings = compare_scores(reference, current, threshold=0.16, settings=SETTINGS)
    groups = {f.group for f in findings if f.statistic == "recall_rate"}
    assert groups and all(f.kind is FindingKind.SCORE_SHIFT for f in findings)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"psi_warning": 0.3, "psi_critical": 0.2},
        {"p_value": 0},
        {"bins": 1},
        {"recall_rate_change": 2},
    ],
)
def test_bad_settings_are_one_clear_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        DriftSettings(**kwargs)


def test_false_alarm_rate_over_null_nights_is_below_one_percent() -> None:
    """200 seeded nights drawn from the reference distribution: the share that raise any
    finding (the figure in docs/operations.md, "Monitoring")."""
    rng = np.random.default_rng(2026)
    reference = scored(rng, 2000)
    nights = 200
    alarms = sum(
        bool(
            compare(reference, tonight, SETTINGS)
            + compare_scores(reference, tonight, 0.3, SETTINGS)
        )
        for tonight in (scored(rng, 300) for _ in range(nights))
    )
    assert alarms / nights < 0.01


def test_unresolved_critical_findings_are_the_critical_keys_nobody_resolved() -> None:
    rng = np.random.default_rng(2)
    reference, current = night(rng), night(rng)
    current.loc[current[c.MACHINE_ID] == 49, c.PIXEL_MEAN] += 0.04
    current.loc[current.index[:8], c.MACHINE_ID] = 999
    report = DriftReport("out", "m", "1", len(reference), len(current))
    report = replace(report, findings=tuple(compare(reference, current, SETTINGS)))
    document = json.loads(json.dumps(report.to_dict()))
    critical = "numeric-shift:pixel_mean:machine_id=49"
    assert unresolved_critical(document, {}) == [critical]  # the new machine is a warning
    assert unresolved_critical(document, {critical: {"reason": "new detector firmware"}}) == []
    assert "| critical | numeric-shift | pixel_mean | machine_id=49 |" in report.markdown()
