"""Exploratory report on the metadata of train.csv: PNG plots and one markdown page.

Pure pandas and matplotlib. Matplotlib is imported inside the plotting function and drives
a bare ``Figure`` (the Agg canvas), so no pyplot state or global backend is touched. Every
section degrades to a note when the columns it needs are missing or all null, so the same
call works on test.csv-like frames without labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mammo.contract import (
    AGE,
    AGE_RANGE,
    CANCER,
    DENSITY,
    LATERALITY,
    MACHINE_ID,
    PATIENT_ID,
    SITE_ID,
    VIEW,
)

MARKDOWN_FILE = "eda.md"
RATE_GROUPS = (SITE_ID, MACHINE_ID, VIEW, DENSITY)  # positive rate by each, one bar chart
MISSING_LABEL = "missing"
IMAGES, POSITIVES, RATE = "images", "positives", "positive_rate"


@dataclass(frozen=True)
class EdaReport:
    """What :func:`metadata_report` wrote and the figures a reader checks first.

    ``figures`` is flat: ``images``, ``patients``, ``breasts``, ``positive_breasts``,
    ``positive_images``, ``positive_rate``, ``positive_rate.{column}.{value}``,
    ``images.{column}.{value}``, ``images_per_patient.{min,mean,max}``, ``missing.{column}``.
    """

    markdown: Path
    plots: tuple[Path, ...]
    figures: dict[str, float]
    notes: tuple[str, ...]  # sections skipped, and why

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.markdown, *self.plots)


@dataclass
class _Page:
    out_dir: Path
    lines: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, title: str, reason: str) -> None:
        self.notes.append(f"{title}: skipped, {reason}")
        self.lines += [f"## {title}", "", f"_Skipped: {reason}._", ""]


def metadata_report(df: pd.DataFrame, out_dir: Path) -> EdaReport:
    """Write the plots and ``out_dir/eda.md`` for a train.csv frame; return what was written.

    Sections, in order: overall counts; missing values per column; age by cancer label;
    positive rate by site, machine, view and density; images per patient. Labels and ages
    are parsed as numbers first, so a frame read with ``dtype=str`` gives the same report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    for column in (AGE, CANCER):
        if column in df.columns:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    page = _Page(out_dir, lines=["# Metadata report", ""])
    _overall(df, page)
    _missing(df, page)
    _age_by_label(df, page)
    for column in RATE_GROUPS:
        _rate_by(df, column, page)
    _images_per_patient(df, page)
    markdown = out_dir / MARKDOWN_FILE
    markdown.write_text("\n".join(page.lines))
    return EdaReport(markdown, tuple(page.plots), page.figures, tuple(page.notes))


def overall_counts(df: pd.DataFrame) -> dict[str, float]:
    """Images, patients, breasts (patient_id + laterality) and positives, where columns allow."""
    counts: dict[str, float] = {IMAGES: len(df)}
    has_labels = _usable(df, CANCER)
    if has_labels:
        counts["positive_images"] = int((df[CANCER] == 1).sum())
        counts[RATE] = float(df[CANCER].mean())
    if _usable(df, PATIENT_ID):
        counts["patients"] = int(df[PATIENT_ID].nunique())
        if _usable(df, LATERALITY):
            breasts = df.groupby([PATIENT_ID, LATERALITY])
            counts["breasts"] = int(breasts.ngroups)
            if has_labels:
                counts["positive_breasts"] = int((breasts[CANCER].max() == 1).sum())
    return counts


def positive_rate_by(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per value of ``column`` (missing values as one group): images, positives, positive rate."""
    groups = df[column].map(_label)
    table = df.assign(**{column: groups}).groupby(column)[CANCER].agg(["size", "sum", "mean"])
    table.columns = pd.Index([IMAGES, POSITIVES, RATE])  # the rate is over labelled images
    return table.sort_index(key=lambda index: index.map(_sort_key))


def _overall(df: pd.DataFrame, page: _Page) -> None:
    counts = overall_counts(df)
    page.figures.update(counts)
    rows = [(name, _number(value)) for name, value in counts.items()]
    page.lines += ["## Overall counts", "", *_md_table(("count", "value"), rows), ""]


def _missing(df: pd.DataFrame, page: _Page) -> None:
    missing = df.isna().sum()
    rows = []
    for column, n in missing.items():
        page.figures[f"missing.{column}"] = int(n)
        rows.append((str(column), str(int(n)), f"{n / max(len(df), 1):.1%}"))
    page.lines += ["## Missing values", "", *_md_table(("column", "missing", "share"), rows), ""]


def _age_by_label(df: pd.DataFrame, page: _Page) -> None:
    title = "Age by cancer label"
    if (reason := _unusable(df, AGE, CANCER)) is not None:
        page.skip(title, reason)
        return
    bins = np.arange(AGE_RANGE[0], AGE_RANGE[1] + 5, 5).tolist()  # 5-year bins, valid range
    series = {
        f"cancer={_label(value)} (n={int(ages.notna().sum())})": ages.dropna().to_numpy()
        for value, ages in df.groupby(CANCER)[AGE]
    }
    path = page.out_dir / "age_by_cancer.png"
    _plot(path, title, "age (years)", "share of images", hist=(series, bins))
    page.figures["age.mean"] = float(df[AGE].mean())
    page.plots.append(path)
    page.lines += [f"## {title}", "", f"![{title}]({path.name})", ""]


def _rate_by(df: pd.DataFrame, column: str, page: _Page) -> None:
    title = f"Positive rate by {column}"
    if (reason := _unusable(df, column, CANCER)) is not None:
        page.skip(title, reason)
        return
    table = positive_rate_by(df, column)
    for value, row in table.iterrows():
        page.figures[f"{RATE}.{column}.{value}"] = float(row[RATE])
        page.figures[f"{IMAGES}.{column}.{value}"] = int(row[IMAGES])
    path = page.out_dir / f"positive_rate_by_{column}.png"
    labels = [f"{value}\nn={int(n)}" for value, n in table[IMAGES].items()]
    _plot(path, title, column, "positive rate", bars=(labels, table[RATE].to_numpy()))
    page.plots.append(path)
    rows = [
        (str(value), str(int(r[IMAGES])), str(int(r[POSITIVES])), f"{r[RATE]:.2%}")
        for value, r in table.iterrows()
    ]
    header = (column, IMAGES, POSITIVES, RATE)
    page.lines += [f"## {title}", "", f"![{title}]({path.name})", "", *_md_table(header, rows), ""]


def _images_per_patient(df: pd.DataFrame, page: _Page) -> None:
    title = "Images per patient"
    if (reason := _unusable(df, PATIENT_ID)) is not None:
        page.skip(title, reason)
        return
    per_patient = df[PATIENT_ID].value_counts()  # (patients,) images each
    for stat in ("min", "mean", "max"):
        page.figures[f"images_per_patient.{stat}"] = float(per_patient.agg(stat))
    bins = np.arange(0.5, per_patient.max() + 1.5).tolist()  # one bin per image count
    path = page.out_dir / "images_per_patient.png"
    series = {f"patients (n={len(per_patient)})": per_patient.to_numpy()}
    _plot(path, title, "images", "share of patients", hist=(series, bins))
    page.plots.append(path)
    page.lines += [f"## {title}", "", f"![{title}]({path.name})", ""]


def _plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    hist: tuple[dict[str, np.ndarray], list[float]] | None = None,
    bars: tuple[list[str], np.ndarray] | None = None,
) -> None:
    """Draw histograms (one series per label, each summing to 1) or a bar chart to a PNG."""
    from matplotlib.figure import Figure  # lazy: matplotlib costs time at import

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.subplots()
    if hist is not None:
        series, bins = hist
        for label, values in series.items():
            share = np.full(len(values), 1.0 / max(len(values), 1))  # bars sum to 1 per series
            axes.hist(values, bins=bins, weights=share, alpha=0.5, label=label)
        axes.legend()
    if bars is not None:
        labels, heights = bars
        axes.bar(range(len(labels)), heights)
        axes.set_xticks(range(len(labels)), labels, fontsize=7)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    figure.savefig(path, dpi=80)


def _usable(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and bool(df[column].notna().any())


def _unusable(df: pd.DataFrame, *columns: str) -> str | None:
    """Why a section cannot be drawn from these columns, or None when it can."""
    for column in columns:
        if column not in df.columns:
            return f"column {column} missing"
        if not df[column].notna().any():
            return f"column {column} has no values"
    return None


def _label(value: object) -> str:
    """A group label: missing -> "missing", integral floats without ".0" (1.0 -> "1")."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return MISSING_LABEL
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _sort_key(label: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text, then "missing"."""
    if label == MISSING_LABEL:
        return (2, 0.0, label)
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
