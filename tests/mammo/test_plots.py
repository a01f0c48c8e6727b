"""mammo.plots: every figure is a real, non-blank PNG of the documented size, degenerate
inputs still give a figure, and matplotlib's global state is left alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from mammo import plots
from mammo.cusum import NIGHT, OUTCOME, chart
from mammo.drift_plots import cusum_plot, score_histograms
from mammo.plots import PlotInputError

BLUE = (31, 119, 180)  # matplotlib's first cycle colour, C0
ORANGE = (255, 127, 14)  # C1
NAVY = (8, 48, 107)  # the top of the "Blues" colormap
WHITE = (255, 255, 255)


def _rgb(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a decodable image"
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)  # BGR -> RGB


def _count(image: npt.NDArray[np.uint8], colour: tuple[int, int, int], tol: int = 12) -> int:
    close = np.abs(image.astype(np.int32) - np.array(colour)).max(axis=-1) <= tol
    return int(close.sum())


def _scores(n: int, seed: int = 0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    return y, np.clip(0.4 * y + 0.6 * rng.random(n), 0.0, 1.0)


def _mammo(height: int, width: int, dtype: type[np.integer], peak: int) -> npt.NDArray[np.integer]:
    # a bright band on a black background, brighter toward the bottom
    image = np.zeros((height, width), dtype=dtype)
    image[:, : width // 2] = np.linspace(peak // 4, peak, height, dtype=dtype)[:, None]
    return image


HISTORY = [
    {"epoch": 0, "train_loss": 0.9, "auc": 0.55, "pf1": 0.05},
    {"epoch": 1, "train_loss": 0.7, "pf1": 0.08},  # no auc this epoch
    {"epoch": 2, "train_loss": 0.5, "auc": 0.71, "pf1": 0.12},
]
IMAGES = [
    _mammo(300, 200, np.uint16, 4095),
    _mammo(120, 90, np.uint8, 255),
    _mammo(2000, 1000, np.uint16, 16383),
]

Draw = Callable[[Path], Path]
FIGURES: list[tuple[str, Draw, tuple[int, int]]] = [
    ("roc", lambda p: plots.roc_curves({"val": _scores(200)}, p, "ROC"), (450, 600)),
    ("pr", lambda p: plots.pr_curves({"val": _scores(200)}, p, "PR"), (450, 600)),
    ("training", lambda p: plots.training_curves(HISTORY, p, ["auc", "pf1"]), (600, 600)),
    (
        "grid-2-labels-3-per-class",
        lambda p: plots.sample_grid(IMAGES, ["cancer=0", "cancer=1", "cancer=0"], p, 3),
        (460, 520),
    ),
    (
        "confusion",
        lambda p: plots.confusion_matrix_plot([0, 1, 2, 2], [0, 2, 2, 1], "ABC", p),
        (450, 600),
    ),
]


@pytest.mark.parametrize(("draw", "shape"), [f[1:] for f in FIGURES], ids=[f[0] for f in FIGURES])
def test_writes_a_non_blank_png_of_the_documented_size(
    tmp_path: Path, draw: Draw, shape: tuple[int, int]
) -> None:
    path = tmp_path / "sub" / "figure.png"
    assert draw(path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = _rgb(path)
    assert image.shape == (*shape, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10


def test_roc_draws_a_single_class_pair_as_a_legend_note_not_a_curve(tmp_path: Path) -> None:
    y, p = _scores(200)
    balanced = {"val": (y, p), "holdout": _scores(80, 1)}
    both = _rgb(plots.roc_curves(balanced, tmp_path / "a.png", ""))
    one_class = {"val": (y, p), "holdout": (np.zeros(50), np.linspace(0, 1, 50))}
    noted = _rgb(plots.roc_curves(one_class, tmp_path / "b.png", ""))
    alone = _rgb(plots.roc_curves({"val": (y, p)}, tmp_path / "c.png", ""))
    assert _count(both, ORANGE) > 100  # a second class-balanced pair is a second curve
    assert _count(noted, BLUE) > 100
    assert _count(noted, ORANGE) == 0  # the single-class pair draws no line
    assert not np.array_equal(noted, alone)  # but it adds a legend entry


@pytest.mark.parametrize(
    ("y_true", "p"),
    [
        (np.zeros(20), np.linspace(0, 1, 20)),
        (np.ones(20), np.linspace(0, 1, 20)),
        (np.array([]), np.array([])),
    ],
    ids=["no-positives", "no-negatives", "empty"],
)
@pytest.mark.parametrize("draw", [plots.roc_curves, plots.pr_curves], ids=["roc", "pr"])
def test_curves_survive_one_class_pairs(
    tmp_path: Path,
    draw: Callable[..., Path],
    y_true: npt.NDArray[np.float64],
    p: npt.NDArray[np.float64],
) -> None:
    image = _rgb(draw({"val": (y_true, p)}, tmp_path / "f.png", "degenerate"))
    assert image.shape == (450, 600, 3)


def test_pr_baseline_is_the_positive_rate(tmp_path: Path) -> None:
    y, p = _scores(400)
    image = _rgb(plots.pr_curves({"val": (y, p)}, tmp_path / "pr.png", ""))
    blue = np.abs(image.astype(np.int32) - np.array(BLUE)).max(axis=-1) <= 12  # (H, W)
    per_row = blue.sum(axis=1)
    baseline_row = int(np.argmax(per_row))  # the dashed baseline is the longest blue row
    assert per_row[baseline_row] > 200
    spines = np.flatnonzero((image.max(axis=-1) < 60).sum(axis=1) > 300)  # black frame rows
    top, bottom = spines[0], spines[-1]  # precision 1.02 and 0
    expected = bottom - float(y.mean()) / 1.02 * (bottom - top)
    assert abs(baseline_row - expected) < 3


def test_training_curves_with_no_epochs_say_so_and_draw_no_line(tmp_path: Path) -> None:
    empty = _rgb(plots.training_curves([], tmp_path / "empty.png", ["auc"]))
    full = _rgb(plots.training_curves(HISTORY, tmp_path / "full.png", ["auc"]))
    assert empty.shape == full.shape == (600, 600, 3)
    ink = (empty < 128).any(axis=-1).sum()
    assert 50 < ink < 2000  # the "no epochs" text, nothing else
    assert _count(empty, BLUE) == 0
    assert _count(full, BLUE) > 100


def test_training_curves_skip_missing_keys(tmp_path: Path) -> None:
    history = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 1, "auc": 0.6}, {"train_loss": 0.4}]
    image = _rgb(plots.training_curves(history, tmp_path / "t.png", ["auc", "absent"]))
    assert _count(image, BLUE) > 50  # train_loss line and the single auc point


def test_sample_grid_leaves_cells_blank_when_a_label_has_few_images(tmp_path: Path) -> None:
    images = [_mammo(200, 120, np.uint8, 255) for _ in range(5)]
    labels = ["density=B", "density=A", "density=B", "density=B", "density=B"]
    image = _rgb(plots.sample_grid(images, labels, tmp_path / "g.png", per_class=4))
    assert image.shape == (460, 680, 3)  # 2 label rows x 4 columns
    grey = (image.max(axis=-1) - image.min(axis=-1) < 4) & (image.max(axis=-1) < 200)
    top, bottom = grey[30:230], grey[260:]  # below each row's title; density=A sorts first
    assert top[:, :170].sum() > 500  # density=A's single image
    assert top[:, 200:].sum() == 0  # and three blank cells
    assert bottom[:, 510:].sum() > 500  # density=B fills its fourth cell


def test_sample_grid_with_no_images_still_writes_a_figure(tmp_path: Path) -> None:
    image = _rgb(plots.sample_grid([], [], tmp_path / "g.png", per_class=2))
    assert image.shape == (230, 360, 3)
    assert (image < 128).any()


def test_confusion_matrix_shades_rows_by_share(tmp_path: Path) -> None:
    right = _rgb(plots.confusion_matrix_plot([0, 0, 1, 1], [0, 0, 1, 1], "AB", tmp_path / "r.png"))
    split = _rgb(plots.confusion_matrix_plot([0, 0, 1, 1], [0, 1, 0, 1], "AB", tmp_path / "s.png"))
    # a 100% cell is navy over most of a quarter of the axes; the colorbar adds only a sliver
    assert _count(right, NAVY) > 10 * _count(split, NAVY)


@pytest.mark.parametrize(
    "call",
    [
        lambda p: plots.roc_curves({"val": (np.zeros(3), np.zeros(4))}, p, ""),
        lambda p: plots.pr_curves({"val": (np.array([0, 1]), np.array([0.1, np.nan]))}, p, ""),
        lambda p: plots.sample_grid([np.zeros((4, 4, 3), np.uint8)], ["x=1"], p),
        lambda p: plots.sample_grid([np.zeros((4, 4), np.uint8)], [], p),
        lambda p: plots.sample_grid([np.zeros((4, 4), np.uint8)], ["x=1"], p, per_class=0),
        lambda p: plots.confusion_matrix_plot([0, 3], [0, 1], "AB", p),
        lambda p: plots.confusion_matrix_plot([0, 1], [0], "AB", p),
        lambda p: plots.confusion_matrix_plot([], [], [], p),
    ],
    ids=[
        "roc-length-mismatch",
        "pr-nan-probability",
        "grid-rgb-image",
        "grid-label-count",
        "grid-per-class-zero",
        "confusion-index-out-of-range",
        "confusion-length-mismatch",
        "confusion-no-classes",
    ],
)
def test_bad_inputs_raise_plot_input_error(tmp_path: Path, call: Draw) -> None:
    with pytest.raises(PlotInputError):
        call(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_matplotlib_global_state_is_left_alone(tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    backend, params = matplotlib.get_backend(), dict(matplotlib.rcParams)
    for index, (_, draw, _) in enumerate(FIGURES):
        draw(tmp_path / f"{index}.png")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == params
    assert plt.get_fignums() == []


def test_plots_never_import_pyplot_and_import_matplotlib_lazily(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from mammo import plots\n"
        "print('matplotlib' in sys.modules)\n"
        "plots.roc_curves({'v': (np.array([0, 1]), np.array([0.2, 0.8]))}, Path(sys.argv[1]), '')\n"
        "plots.sample_grid([np.zeros((8, 8), np.uint8)], ['a=1'], Path(sys.argv[1]))\n"
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "f.png")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["False", "True", "False"]


def test_the_drift_figures_draw_scores_per_site_and_the_cusums(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    groups = {
        "site_id=1": (rng.uniform(0, 1, 50), rng.uniform(0, 0.5, 30)),
        "site_id=2": (rng.uniform(0, 1, 40), [np.nan, 0.3]),
    }
    scores = score_histograms(groups, tmp_path / "scores.png", "scores")
    cases = pd.DataFrame({NIGHT: ["a"] * 5 + ["b"] * 5, OUTCOME: [0, 0, 1, 0, 0, 1, 1, 1, 1, 1]})
    charts = [
        chart("sensitivity", cases, 0.1, 2.0, 50.0),
        chart("specificity", cases, 0.3, 2.0, 50.0),
    ]
    assert charts[0].signalled  # the marker of a signal is drawn too
    cusum = cusum_plot(charts, tmp_path / "cusum.png", "cusum")
    for path in (scores, cusum):
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
    with pytest.raises(PlotInputError):
        cusum_plot([], tmp_path / "none.png", "none")
    with pytest.raises(PlotInputError):
        score_histograms({}, tmp_path / "none.png", "none")
