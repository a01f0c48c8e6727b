"""Figures a training run saves as artifacts: ROC and precision/recall curves, training
curves, a grid of sample images, a confusion matrix. One PNG per function.

Each figure is a bare ``matplotlib.figure.Figure`` drawn on its own Agg canvas: pyplot is
never imported, no figure is registered globally and the global backend is left alone.
Matplotlib is imported lazily inside the functions (it is slow to import).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from mammo.metrics import roc_auc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Curves = Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]

DPI = 100
FIGSIZE = (6.0, 4.5)
EPOCH_KEY = "epoch"
TRAIN_LOSS_KEY = "train_loss"
GRID_MAX_SIDE = 512  # sample images are strided down to at most this many pixels a side


class PlotInputError(ValueError):
    """Inputs that cannot be drawn: mismatched lengths, NaN, bad shapes or class indices."""


def roc_curves(curves: Curves, path: Path, title: str) -> Path:
    """One ROC curve per named (y_true, p) pair, AUC (``mammo.metrics.roc_auc``) in the
    legend, and the chance diagonal. A pair with one class only is a legend note."""
    from sklearn.metrics import roc_curve

    figure = new_figure(FIGSIZE)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    for name, (y_true, p) in curves.items():
        positive, q = _binary_pair(name, y_true, p)
        auc = roc_auc(positive, q)
        if math.isnan(auc):
            axes.plot([], [], " ", label=f"{name}: {_one_class_note(positive)}")
            continue
        fpr, tpr, _ = roc_curve(positive, q)
        axes.plot(fpr, tpr, label=f"{name}: AUC {auc:.3f} (n={positive.size})")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.set(xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="lower right")
    return save_figure(figure, path)


def pr_curves(curves: Curves, path: Path, title: str) -> Path:
    """Precision against recall per named (y_true, p) pair, average precision in the legend,
    and the pair's positive rate (the precision of a random ranking) as a dashed baseline."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = new_figure(FIGSIZE)
    axes = figure.subplots()
    for name, (y_true, p) in curves.items():
        positive, q = _binary_pair(name, y_true, p)
        if not positive.any():
            axes.plot([], [], " ", label=f"{name}: {_one_class_note(positive)}")
            continue
        precision, recall, _ = precision_recall_curve(positive, q)
        ap = float(average_precision_score(positive, q))
        (line,) = axes.plot(recall, precision, label=f"{name}: AP {ap:.3f} (n={positive.size})")
        rate = float(positive.mean())
        axes.axhline(rate, linestyle="--", color=line.get_color(), label=f"{name}: rate {rate:.3f}")
    axes.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="upper right")
    return save_figure(figure, path)


def training_curves(
    history: Sequence[Mapping[str, float]], path: Path, metrics: Sequence[str]
) -> Path:
    """Two panels over epochs: ``train_loss``, and the requested validation ``metrics``.

    ``history`` holds one dict per epoch; the x value is its ``epoch`` key, else the 1-based
    position. A key missing (or NaN) in an epoch is skipped there; an empty history gives a
    figure that says "no epochs".
    """
    figure = new_figure((FIGSIZE[0], 6.0))
    if not history:
        _note(figure.subplots(), "no epochs")
        return save_figure(figure, path)
    loss_axes, metric_axes = figure.subplots(2, 1, sharex=True)
    _plot_keys(loss_axes, history, [TRAIN_LOSS_KEY], "train loss")
    _plot_keys(metric_axes, history, metrics, "validation")
    metric_axes.set_xlabel(EPOCH_KEY)
    return save_figure(figure, path)


def sample_grid(
    images: Sequence[npt.NDArray[np.integer]],
    labels: Sequence[str],
    path: Path,
    per_class: int = 4,
) -> Path:
    """Decoded (H, W) uint8/uint16 images in a grid: one row per distinct label (sorted),
    titled by it ("cancer=1"), up to ``per_class`` images each in input order, grey colormap
    scaled per image. Sizes may differ; large images are strided to ``GRID_MAX_SIDE``."""
    if len(images) != len(labels):
        raise PlotInputError(f"{len(images)} images but {len(labels)} labels")
    if per_class < 1:
        raise PlotInputError(f"per_class must be at least 1, got {per_class}")
    rows: dict[str, list[npt.NDArray[np.integer]]] = {}
    for image, label in zip(images, labels, strict=True):
        if image.ndim != 2:
            raise PlotInputError(f"images must be (H, W), got shape {image.shape}")
        row = rows.setdefault(label, [])
        if len(row) < per_class:
            row.append(image)
    figure = new_figure((1.6 * per_class + 0.4, 2.3 * max(len(rows), 1)))
    if not rows:
        _note(figure.subplots(), "no images")
        return save_figure(figure, path)
    subfigures = figure.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for subfigure, label in zip(subfigures, sorted(rows), strict=True):
        subfigure.suptitle(label)
        cells = subfigure.subplots(1, per_class, squeeze=False)[0]
        for axes, image in zip(cells, rows[label], strict=False):  # a row may have fewer
            step = max(1, math.ceil(max(image.shape) / GRID_MAX_SIDE))
            axes.imshow(image[::step, ::step], cmap="gray")  # (H, W) -> (H/step, W/step)
        for axes in subfigure.axes:
            axes.set_axis_off()
    return save_figure(figure, path)


def confusion_matrix_plot(
    y_true_idx: npt.ArrayLike,
    y_pred_idx: npt.ArrayLike,
    class_names: Sequence[str],
    path: Path,
    title: str = "confusion matrix",
) -> Path:
    """Counts of (true class, predicted class) for a K-class target, indices 0..K-1; rows are
    the true classes, each cell also shows its share of the row."""
    true, pred = (np.asarray(a).astype(np.int64).ravel() for a in (y_true_idx, y_pred_idx))
    k = len(class_names)
    if k == 0:
        raise PlotInputError("class_names must not be empty")
    if true.shape != pred.shape:
        raise PlotInputError(f"{true.size} true classes but {pred.size} predictions")
    if true.size and (min(true.min(), pred.min()) < 0 or max(true.max(), pred.max()) >= k):
        raise PlotInputError(f"class indices must be in [0, {k})")
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)  # (N,) pairs -> (K, K) counts
    row_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = new_figure(FIGSIZE)
    axes = figure.subplots()
    image = axes.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true class")
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if row_share[i, j] > 0.5 else "black"
        axes.text(j, i, f"{count}\n{row_share[i, j]:.0%}", ha="center", va="center", color=colour)
    ticks = list(range(k))
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    axes.set_xticklabels(class_names)
    axes.set_yticklabels(class_names)
    return save_figure(figure, path)


def reliability_plot(
    curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path, title: str
) -> Path:
    """Observed positive rate against mean predicted probability per bin, one line per
    model (the ``bins`` of ``mammo.clinical.calibration``), marker area by bin size."""
    figure = new_figure(FIGSIZE)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfect calibration")
    for label, bins in curves.items():
        if not bins:
            continue
        x = [float(b["mean_predicted"]) for b in bins]
        y = [float(b["observed"]) for b in bins]
        sizes = [12.0 + 4.0 * math.sqrt(float(b["n"])) for b in bins]
        (line,) = axes.plot(x, y, marker="", label=label)
        axes.scatter(x, y, s=sizes, color=line.get_color())
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability")
    axes.set(ylabel="observed cancer rate", title=title)
    axes.legend(loc="upper left")
    return save_figure(figure, path)


def new_figure(size: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas, not known to pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _binary_pair(
    name: str, y_true: npt.ArrayLike, p: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Labels as booleans (y > 0 is positive, as in roc_auc) and probabilities as floats."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    q = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != q.shape:
        raise PlotInputError(f"{name}: {y.size} labels but {q.size} predictions")
    if np.isnan(y).any() or np.isnan(q).any():
        raise PlotInputError(f"{name}: labels and predictions must not contain NaN")
    return y > 0, q


def _one_class_note(positive: npt.NDArray[np.bool_]) -> str:
    if positive.size == 0:
        return "no samples"
    return "no negatives" if positive.all() else "no positives"


def _note(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=14, transform=axes.transAxes)
    axes.set_axis_off()


def _plot_keys(
    axes: Axes, history: Sequence[Mapping[str, float]], keys: Sequence[str], title: str
) -> None:
    """One line per key over epochs, skipping the epochs that lack it; a note if none has it."""
    drawn = False
    for key in keys:
        points = [
            (float(row.get(EPOCH_KEY, position)), float(row[key]))
            for position, row in enumerate(history, start=1)
            if row.get(key) is not None and not math.isnan(float(row[key]))
        ]
        if points:
            epochs, values = zip(*points, strict=True)
            axes.plot(epochs, values, marker="o", label=key)
            drawn = True
    if not drawn:
        _note(axes, f"no {', '.join(keys) or 'metrics'} recorded")
        return
    axes.set(title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
