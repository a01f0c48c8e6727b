"""A night's drift report: the reference profile a model is trained with, and the findings of
the images that arrived since, as JSON (OUT/monitor/drift/) and as a markdown table.

Pure: tasks/monitor.py reads the model's reference and the manifest, calls mammo.drift and
publishes the report (Prefect events, a markdown artifact, the files under OUT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mammo import contract as c
from mammo.cusum import Chart
from mammo.drift import REFERENCE_COLUMNS, Finding, Severity
from mammo.performance import chart_markdown

PROFILE_COLUMNS = (*REFERENCE_COLUMNS, c.PATIENT_ID, c.LATERALITY)


def reference_profile(rows: pd.DataFrame, scores: pd.DataFrame | None) -> pd.DataFrame:
    """The PROFILE_COLUMNS of the rows a model was trained on, with its PROBABILITY on the
    images ``scores`` covers (its validation and holdout predictions; null elsewhere)."""
    profile = rows[[col for col in PROFILE_COLUMNS if col in rows.columns]].copy()
    if scores is None or c.PROBABILITY not in scores:
        return profile.assign(**{c.PROBABILITY: float("nan")})
    probability = scores.drop_duplicates(c.IMAGE_ID).set_index(c.IMAGE_ID)[c.PROBABILITY]
    return profile.assign(**{c.PROBABILITY: profile[c.IMAGE_ID].map(probability).astype(float)})


@dataclass(frozen=True)
class DriftReport:
    data: str
    model: str  # the registered model the reference belongs to, "" when there is none
    version: str  # its version, "" when there is none
    reference_images: int
    current_images: int
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    charts: tuple[Chart, ...] = ()  # the model's sensitivity and specificity CUSUMs
    figures: tuple[str, ...] = ()  # PNG files beside the report (mammo/drift_plots.py)
    # per site: the model's scores of its reference images and of tonight's (the figures')
    scores: Mapping[str, tuple[Sequence[float], Sequence[float]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def counts(self) -> dict[str, int]:
        return {s.value: sum(f.severity is s for f in self.findings) for s in Severity}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "model": self.model,
            "version": self.version,
            "reference_images": self.reference_images,
            "current_images": self.current_images,
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),
            "charts": [chart.to_dict() for chart in self.charts],
            "figures": list(self.figures),
        }

    def summary(self) -> str:
        """One line: what was compared and what was found."""
        against = f"{self.model} v{self.version}" if self.version else "no reference"
        counts = self.counts()
        found = (
            f"{counts['critical']} critical, {counts['warning']} warning finding(s)"
            if self.findings
            else "no drift"
        )
        return f"{self.current_images} new image(s) against {against}: {found}"

    def markdown(self, figure_base: str = "") -> str:
        """The report as markdown; its figures linked as ``figure_base`` + file name."""
        lines = [f"# Drift of {self.data}", "", self.summary(), ""]
        lines += [f"- {note}" for note in self.notes]
        if self.findings:
            lines += [
                "",
                "| severity | kind | column | group | statistic | value | p | images | detail |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for f in sorted(self.findings, key=lambda f: (f.severity != Severity.CRITICAL, f.key)):
                p = "" if f.p_value is None else f"{f.p_value:.1e}"
                lines.append(
                    f"| {f.severity.value} | {f.kind.value} | {f.column} | {f.group} | "
                    f"{f.statistic} | {f.value:.4g} | {p} | {f.images} | {f.detail} |"
                )
        lines += chart_markdown(list(self.charts))
        if self.figures:
            lines += ["", *(f"![{name}]({figure_base}{name})" for name in self.figures)]
        return "\n".join(lines) + "\n"


def unresolved_critical(report: Mapping[str, Any], resolved: Mapping[str, Any]) -> list[str]:
    """The keys of ``report``'s critical findings (a report as JSON) not in ``resolved``."""
    keys = {
        str(f["key"])
        for f in report.get("findings", [])
        if f.get("severity") == Severity.CRITICAL.value and f.get("key") not in resolved
    }
    return sorted(keys)
