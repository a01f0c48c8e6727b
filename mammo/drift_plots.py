"""Figures of a drift report, saved beside it under OUT/monitor/drift/: the champion's scores
on its own validation and holdout images against tonight's, per site, and its sensitivity
and specificity CUSUMs night by night with their limits. Drawn as mammo/plots.py draws
(bare Agg figures, matplotlib imported lazily).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mammo.cusum import Chart
from mammo.plots import FIGSIZE, PlotInputError, new_figure, save_figure

BINS = 20  # score histogram bins over [0, 1]


def score_histograms(
    groups: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]], path: Path, title: str
) -> Path:
    """One panel per group (a site, say): the density of the reference's scores and of the
    current ones, on the same bins of [0, 1]."""
    if not groups:
        raise PlotInputError("no group of scores to draw")
    figure = new_figure((FIGSIZE[0], 2.2 * len(groups) + 0.6))
    panels = figure.subplots(len(groups), 1, squeeze=False)[:, 0]
    edges = np.linspace(0.0, 1.0, BINS + 1)
    for axes, (name, (reference, current)) in zip(panels, groups.items(), strict=True):
        for label, values in (("reference", reference), ("tonight", current)):
            scores = np.asarray(values, dtype=np.float64)
            scores = scores[np.isfinite(scores)]
            if scores.size:
                axes.hist(
                    scores,
                    bins=edges,
                    density=True,
                    histtype="step",
                    label=f"{label} (n={scores.size})",
                )
        axes.set(xlim=(0, 1), ylabel="density", title=name)
        axes.legend(loc="upper right", fontsize="small")
    panels[-1].set(xlabel="probability")
    figure.suptitle(title)
    return save_figure(figure, path)


def cusum_plot(charts: Sequence[Chart], path: Path, title: str) -> Path:
    """Each chart's S after each night, with its limit; a signal night is marked."""
    if not charts:
        raise PlotInputError("no chart to draw")
    figure = new_figure(FIGSIZE)
    axes = figure.subplots()
    for number, chart in enumerate(charts):
        colour = f"C{number}"
        x = np.arange(len(chart.nights))
        axes.plot(x, chart.values, marker="o", color=colour, label=f"{chart.name} S")
        axes.axhline(chart.limit, linestyle="--", color=colour, label=f"{chart.name} limit")
        if chart.signal_night is not None:
            at = chart.nights.index(chart.signal_night)
            axes.plot([at], [chart.values[at]], marker="X", markersize=12, color=colour)
    longest = max(charts, key=lambda chart: len(chart.nights))
    axes.set_xticks(range(len(longest.nights)), longest.nights, rotation=30, fontsize="small")
    axes.set(xlabel="night", ylabel="CUSUM", title=title)
    axes.legend(loc="upper left", fontsize="small")
    return save_figure(figure, path)
