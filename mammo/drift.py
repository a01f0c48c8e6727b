"""Drift: how the images that arrived since a model was trained differ from its training data.

The reference is a profile of the rows a model was trained on (REFERENCE_COLUMNS of the
manifest, with the model's own scores on its validation and holdout images), recorded with
the model; the current set is every manifest row not in it. Nothing here needs labels; the
performance charts do (mammo/performance.py).

Findings, each against the thresholds of :class:`DriftSettings`:

- ``new-value``: a value of a categorical column never seen in the reference (a new
  machine_id, site, view, transfer syntax, photometric interpretation, bit depth); a warning.
- ``mix-shift``: the mix of the known values moved: population stability index (PSI) at or
  above ``psi_warning`` and a chi-square test of the 2 x K table below ``p_value``.
- ``numeric-shift``: age overall, and each image's pixel mean and standard deviation per
  machine: PSI over the reference's deciles and a two-sample Kolmogorov-Smirnov test.
- ``score-shift``: per site and per machine, the model's score distribution (PSI and KS),
  or its predicted recall rate at the locked threshold (a two-proportion z-test).
- ``performance-shift`` (mammo/performance.py), once labels arrive: a CUSUM of the model's
  misses or false recalls at the locked threshold crossed its limit (always critical).

A finding is ``critical`` when its PSI reaches ``psi_critical``, else a ``warning``. Both
conditions (effect size and significance) must hold, so that a large night does not alarm on
a trivial shift and a small one does not alarm on noise. Significance is Bonferroni-corrected
over the tests of one comparison (``p_value`` / tests), and the tests count patients where a
column is the patient's (site, machine, age, the machine's pixel statistics), breasts for
scores: a patient's four images are not four independent draws.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from mammo import contract as c
from mammo.metrics import Aggregation, aggregate_breasts

CATEGORICAL: Final = (
    c.SITE_ID,
    c.MACHINE_ID,
    c.VIEW,
    "transfer_syntax",
    "photometric",
    "bits_stored",
)
PER_IMAGE: Final = (c.VIEW,)  # the other categorical columns are per patient (or machine)
NUMERIC: Final = (c.AGE,)
PER_MACHINE: Final = (c.PIXEL_MEAN, c.PIXEL_STD)
SCORE_GROUPS: Final = (c.SITE_ID, c.MACHINE_ID)
REFERENCE_COLUMNS: Final = (c.IMAGE_ID, *CATEGORICAL, *NUMERIC, *PER_MACHINE)
SMOOTHING: Final = 0.5  # added to every bin's count before PSI, so an empty bin is finite


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class FindingKind(StrEnum):
    NEW_VALUE = "new-value"
    MIX_SHIFT = "mix-shift"
    NUMERIC_SHIFT = "numeric-shift"
    SCORE_SHIFT = "score-shift"
    PERFORMANCE_SHIFT = "performance-shift"  # mammo/performance.py: needs labels


@dataclass(frozen=True)
class DriftSettings:
    """The thresholds ([monitor] in nightly.toml)."""

    psi_warning: float = 0.1
    psi_critical: float = 0.25
    p_value: float = 0.001
    min_samples: int = 30  # per side, for a shift test (patients, breasts or images)
    bins: int = 10
    recall_rate_change: float = 0.05  # absolute change of the predicted recall rate
    cusum_odds_ratio: float = 2.0  # the CUSUMs detect the odds of a miss (or a false recall) x2
    cusum_arl: float = 500.0  # in-control cases of a chart's class between false signals

    def __post_init__(self) -> None:
        if not 0 < self.psi_warning <= self.psi_critical:
            raise ValueError(
                f"need 0 < psi_warning <= psi_critical, got {self.psi_warning}, {self.psi_critical}"
            )
        if not 0 < self.p_value < 1:
            raise ValueError(f"p_value must be in (0, 1), got {self.p_value}")
        if self.min_samples < 2 or self.bins < 2:
            raise ValueError(
                f"min_samples and bins must be >= 2, got {self.min_samples}, {self.bins}"
            )
        if not 0 < self.recall_rate_change < 1:
            raise ValueError(f"recall_rate_change must be in (0, 1), got {self.recall_rate_change}")
        if not (self.cusum_odds_ratio > 1 and self.cusum_arl > 1):
            raise ValueError(
                f"need cusum_odds_ratio > 1 and cusum_arl > 1, got {self.cusum_odds_ratio}, "
                f"{self.cusum_arl}"
            )


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    column: str
    group: str  # "" for the whole set, else "machine_id=49" and the like
    statistic: str  # "images", "psi", "recall_rate"
    value: float
    p_value: float | None
    images: int  # current images the finding is about
    severity: Severity
    detail: str

    def to_dict(self) -> dict[str, Any]:
        kinds = {"kind": self.kind.value, "severity": self.severity.value}
        return {**asdict(self), **kinds, "key": self.key}

    @property
    def key(self) -> str:
        """What the finding is about, stable from night to night: ``kind:column[:group]``."""
        return ":".join(p for p in (self.kind.value, self.column, self.group) if p)


class _NotTested:
    """Too few samples on a side for the test to be made: not counted in the family."""


_NOT_TESTED: Final = _NotTested()


@dataclass
class _Family:
    """The shift tests of one comparison. A candidate (its effect size at or above the
    threshold) is kept when its p-value is below ``p_value`` divided by the number of tests
    made (Bonferroni), so that ``p_value`` bounds the chance of any false finding a night."""

    tests: int = 0
    candidates: list[Finding] = field(default_factory=list)

    def add(self, candidate: Finding | None) -> None:
        self.tests += 1
        if candidate is not None:
            self.candidates.append(candidate)

    def add_if(self, outcome: Finding | _NotTested | None) -> None:
        """``add`` unless the test could not be made (too few samples)."""
        if not isinstance(outcome, _NotTested):
            self.add(outcome)

    def significant(self, p_value: float) -> list[Finding]:
        level = p_value / max(self.tests, 1)
        return [f for f in self.candidates if f.p_value is not None and f.p_value < level]


def psi(reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike) -> float:
    """Population stability index sum((q - p) * ln(q / p)) of two count vectors over the same
    bins, each count smoothed by SMOOTHING."""
    ref = np.asarray(reference_counts, dtype=float) + SMOOTHING
    cur = np.asarray(current_counts, dtype=float) + SMOOTHING
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def quantile_edges(reference: npt.ArrayLike, bins: int) -> npt.NDArray[np.float64]:
    """The inner edges of ``bins`` equal-count bins of ``reference`` (ties merged)."""
    values = np.asarray(reference, dtype=float)
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def binned(values: npt.ArrayLike, edges: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Counts of ``values`` in the len(edges) + 1 bins that ``edges`` cut (right-closed)."""
    index = np.searchsorted(edges, np.asarray(values, dtype=float), side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def numeric_psi(reference: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    edges = quantile_edges(reference, bins)
    return psi(binned(reference, edges), binned(current, edges))


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, settings: DriftSettings
) -> list[Finding]:
    """The data findings of ``current`` against ``reference`` (frames with REFERENCE_COLUMNS;
    a column missing from either is skipped). New values are counted in images; the shift
    tests count patients, the unit that is independent (a patient's images share the
    site, machine and age, and much of their pixel statistics), when the frames have
    patient_id: a per-image test would see four correlated copies and alarm on noise."""
    findings: list[Finding] = []
    family = _Family()
    ref_units, cur_units = per_patient(reference), per_patient(current)
    for column in CATEGORICAL:
        if column in reference and column in current:
            findings += _new_values(column, reference[column], current[column])
            unit = column in PER_IMAGE
            ref_values = (reference if unit else ref_units)[column]
            cur_values = (current if unit else cur_units)[column]
            family.add_if(_mix_shift(column, ref_values, cur_values, settings))
    for column in NUMERIC:
        if column in reference and column in current:
            images = int(current[column].notna().sum())
            found = _numeric(column, "", ref_units[column], cur_units[column], settings, images)
            family.add_if(found)
    ref_machines, cur_machines = (
        per_patient(reference, c.MACHINE_ID),
        per_patient(current, c.MACHINE_ID),
    )
    if c.MACHINE_ID in reference and c.MACHINE_ID in current:
        ref_groups = dict(tuple(ref_machines.groupby(c.MACHINE_ID)))
        for machine, part in cur_machines.groupby(c.MACHINE_ID):
            if machine not in ref_groups:
                continue
            images = int((current[c.MACHINE_ID] == machine).sum())
            group = f"{c.MACHINE_ID}={_label(machine)}"
            for column in PER_MACHINE:
                if column in reference and column in current:
                    ref_values = ref_groups[machine][column]
                    found = _numeric(column, group, ref_values, part[column], settings, images)
                    family.add_if(found)
    return findings + family.significant(settings.p_value)


def per_patient(frame: pd.DataFrame, *by: str) -> pd.DataFrame:
    """One row per patient (and ``by`` value): the first value of each column, the mean of
    the PER_MACHINE ones; ``frame`` itself when it has no patient_id."""
    if c.PATIENT_ID not in frame or not set(by) <= set(frame.columns):
        return frame
    keys = [c.PATIENT_ID, *by]
    how = {col: "mean" if col in PER_MACHINE else "first" for col in frame if col not in keys}
    return frame.groupby(keys, sort=False).agg(how).reset_index()


def compare_scores(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    threshold: float | None,
    settings: DriftSettings,
    aggregation: Aggregation | None = None,
) -> list[Finding]:
    """Score findings per site and per machine: frames with PROBABILITY and SCORE_GROUPS (the
    reference's scores are the model's on its own validation and holdout images). Scores are
    compared per breast (``aggregation`` of its images' scores, as the threshold was locked)
    when the frames carry patient_id and laterality, else per image."""
    family = _Family()
    reference = reference.dropna(subset=[c.PROBABILITY])
    for column in SCORE_GROUPS:
        ref_groups = dict(tuple(reference.groupby(column)))
        for value, part in current.groupby(column):
            if value not in ref_groups:
                continue
            group = f"{column}={_label(value)}"
            ref_scores = _unit_scores(ref_groups[value], aggregation)
            cur_scores = _unit_scores(part, aggregation)
            if min(len(ref_scores), len(cur_scores)) < settings.min_samples:
                continue
            found = _shift(c.PROBABILITY, group, ref_scores, cur_scores, settings, len(part))
            family.add(None if found is None else _as_score(found))
            if threshold is not None:
                family.add(_recall_shift(group, ref_scores, cur_scores, threshold, settings))
    return family.significant(settings.p_value)


def _label(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _new_values(column: str, reference: pd.Series, current: pd.Series) -> list[Finding]:
    cur = current.dropna()
    unseen = cur[~cur.isin(set(reference.dropna().unique()))]
    return [
        Finding(
            FindingKind.NEW_VALUE,
            column,
            f"{column}={_label(value)}",
            "images",
            float(count),
            None,
            int(count),
            Severity.WARNING,
            f"{count} image(s) with {column} {_label(value)}, never seen in the reference",
        )
        for value, count in unseen.value_counts().sort_index().items()
    ]


def _mix_shift(
    column: str, reference: pd.Series, current: pd.Series, settings: DriftSettings
) -> Finding | _NotTested | None:
    """PSI and chi-square over the values the reference knows (new ones are _new_values)."""
    ref, cur = reference.dropna(), current.dropna()
    known = set(ref.unique())
    seen = cur[cur.isin(known)]
    if len(known) < 2 or min(len(ref), len(seen)) < settings.min_samples:
        return _NOT_TESTED
    categories = sorted(known)
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = seen.value_counts().reindex(categories, fill_value=0).to_numpy()
    value = psi(ref_counts, cur_counts)
    p = float(stats.chi2_contingency(np.vstack([ref_counts, cur_counts])).pvalue)
    if value < settings.psi_warning:
        return None
    shares = ", ".join(
        f"{_label(k)}: {r / ref_counts.sum():.0%} -> {q / cur_counts.sum():.0%}"
        for k, r, q in zip(categories, ref_counts, cur_counts, strict=True)
    )
    return Finding(
        FindingKind.MIX_SHIFT, column, "", "psi", value, p, len(seen),
        _severity(value, settings), f"mix of {column} moved (PSI {value:.3f}): {shares}",
    )  # fmt: skip


def _numeric(
    column: str,
    group: str,
    reference: pd.Series,
    current: pd.Series,
    settings: DriftSettings,
    images: int,
) -> Finding | _NotTested | None:
    ref, cur = reference.dropna().to_numpy(float), current.dropna().to_numpy(float)
    if min(len(ref), len(cur)) < settings.min_samples:
        return _NOT_TESTED
    return _shift(column, group, ref, cur, settings, images)


def _shift(
    column: str,
    group: str,
    ref: npt.NDArray[np.float64],
    cur: npt.NDArray[np.float64],
    settings: DriftSettings,
    images: int,
) -> Finding | None:
    """A candidate when the PSI reaches ``psi_warning`` (the KS p-value decides later)."""
    value = numeric_psi(ref, cur, settings.bins)
    test = stats.ks_2samp(ref, cur)
    p = float(test.pvalue)
    if value < settings.psi_warning:
        return None
    where = f" on {group}" if group else ""
    detail = (
        f"{column}{where} moved (PSI {value:.3f}, KS {float(test.statistic):.3f}, p {p:.1e}): "
        f"median {np.median(ref):.4g} -> {np.median(cur):.4g}"
    )
    severity = _severity(value, settings)
    return Finding(
        FindingKind.NUMERIC_SHIFT, column, group, "psi", value, p, images, severity, detail
    )


def _unit_scores(part: pd.DataFrame, aggregation: Aggregation | None) -> npt.NDArray[np.float64]:
    if aggregation is None or not {c.PATIENT_ID, c.LATERALITY} <= set(part.columns):
        return np.asarray(part[c.PROBABILITY], dtype=np.float64)
    breasts = aggregate_breasts(part, c.PROBABILITY, aggregation)
    return np.asarray(breasts[c.PROBABILITY], dtype=np.float64)


def _as_score(found: Finding) -> Finding:
    return Finding(**{**found.__dict__, "kind": FindingKind.SCORE_SHIFT})


def _recall_shift(
    group: str,
    ref: npt.NDArray[np.float64],
    cur: npt.NDArray[np.float64],
    threshold: float,
    settings: DriftSettings,
) -> Finding | None:
    """The predicted recall rate (share of images at or above ``threshold``) on each side."""
    r, q = float(np.mean(ref >= threshold)), float(np.mean(cur >= threshold))
    p = two_proportion_p(r, len(ref), q, len(cur))
    if abs(q - r) < settings.recall_rate_change:
        return None
    detail = f"predicted recall rate on {group} moved {r:.1%} -> {q:.1%} (p {p:.1e})"
    return Finding(
        FindingKind.SCORE_SHIFT, "recall_rate", group, "recall_rate", q - r, p, len(cur),
        Severity.WARNING, detail,
    )  # fmt: skip


def two_proportion_p(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test; 1 when both are 0 or 1."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * stats.norm.sf(abs(p1 - p2) / se))


def _severity(value: float, settings: DriftSettings) -> Severity:
    return Severity.CRITICAL if value >= settings.psi_critical else Severity.WARNING
