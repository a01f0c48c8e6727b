"""Lesion difficulty and the known-signal oracle: the statistic against a brute-force
reference, the breast-level AUC against scikit-learn, and the presets' oracle AUCs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mammo import contract as c
from mammo.oracle import ORACLE, oracle_auc
from mammo.synth.generate import ImageJob, image_jobs, oracle_frame, synth_image
from mammo.synth.lesion import EASY, REALISTIC, Lesion, conspicuity, draw_lesions, matched_filter
from mammo.synth.metadata import build_metadata
from mammo.synth.phantom import render


def _job(cancer: bool, patient_id: int = 7, view: str = "CC", density: str = "B") -> ImageJob:
    return ImageJob(
        subset=c.Subset.TRAIN,
        patient_id=patient_id,
        image_id=patient_id * 10 + (view == "MLO"),
        laterality="L",
        view=view,
        age=60.0,
        site_id=1,
        machine_id=49,
        cancer=cancer,
        density=density,
        implant=False,
    )


def test_matched_filter_is_the_inner_product_with_the_zero_mean_template() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((40, 50), dtype=np.float32)
    template = rng.random((8, 9), dtype=np.float32)
    lesion = Lesion("mass", slice(10, 18), slice(20, 29), template)
    t0 = template.astype(np.float64) - template.mean()
    expected = float((img[10:18, 20:29] * t0).sum() / np.sqrt((t0 * t0).sum()))
    assert matched_filter(img, [lesion]) == pytest.approx(expected, rel=1e-9)


def test_a_lesion_on_a_flat_image_scores_its_contrast_times_the_template_norm() -> None:
    rng = np.random.default_rng(1)
    candidates = np.arange(30 * 30, dtype=np.int64)
    lesions = draw_lesions(rng, (120, 120), candidates, (60, 60), depth=100.0, spec=REALISTIC)
    img = np.full((120, 120), 0.3, dtype=np.float32)
    for lesion in lesions:
        img[lesion.rows, lesion.cols] += np.float32(0.5) * lesion.template
    norms = sum(
        float(((x := lesion.template) - x.mean()).ravel() @ (x - x.mean()).ravel())
        for lesion in lesions
    )
    assert matched_filter(img, lesions) == pytest.approx(0.5 * np.sqrt(norms), rel=1e-4)


def test_a_negatives_decoy_lesions_leave_its_pixels_alone() -> None:
    kwargs = {"view": "CC", "density": "C", "cancer": False, "faces_right": True}
    plain = render(np.random.default_rng(3), 128, 104, **kwargs)  # type: ignore[arg-type]
    decoy = render(
        np.random.default_rng(3),
        128,
        104,
        decoy_rng=np.random.default_rng(9),
        **kwargs,  # type: ignore[arg-type]
    )
    np.testing.assert_array_equal(plain.image, decoy.image)
    assert plain.oracle == 0.0 and decoy.oracle != 0.0


def test_dense_tissue_and_an_occult_view_dim_the_lesion() -> None:
    assert EASY.visibility("D", occult=False) == 1.0 and EASY.one_view_rate == 0.0
    assert REALISTIC.visibility("D", False) < REALISTIC.visibility("A", False) == 1.0
    assert REALISTIC.visibility("A", True) == REALISTIC.occult_visibility
    pos = synth_image(_job(True, density="A"), 0, "small", "realistic").pixels.astype(float)
    neg = synth_image(_job(False, density="A"), 0, "small", "realistic").pixels.astype(float)
    easy = synth_image(_job(True, density="A"), 0, "small", "easy").pixels.astype(float)
    # same tissue, same draws: the realistic lesion adds less than the easy one
    assert 0 < np.abs(pos - neg).sum() < np.abs(easy - neg).sum()


def test_an_occult_view_is_one_view_of_the_breast_at_the_configured_rate() -> None:
    from mammo.synth.generate import _occult

    hidden: Counter[tuple[bool, bool]] = Counter()
    for pid in range(2000):
        cc, mlo = (_occult(_job(True, pid, view), 0, 0.2) for view in ("CC", "MLO"))
        hidden[(cc, mlo)] += 1
    assert hidden[(True, True)] == 0  # never both views
    share = (hidden[(True, False)] + hidden[(False, True)]) / 2000
    assert abs(share - 0.2) < 0.03  # binomial sd 0.009
    assert not _occult(_job(False), 0, 1.0)  # a negative has nothing to hide


def test_oracle_auc_is_scikit_learns_on_the_breast_means() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for pid in range(60):
        for side in "LR":
            cancer = int(rng.random() < 0.3)
            for _ in range(int(rng.integers(1, 4))):
                rows.append((pid, side, cancer, rng.normal(cancer * 0.8, 1.0)))
    frame = pd.DataFrame(rows, columns=[c.PATIENT_ID, c.LATERALITY, c.CANCER, ORACLE])
    for how in ("mean", "max"):
        breasts = frame.groupby([c.PATIENT_ID, c.LATERALITY]).agg({c.CANCER: "max", ORACLE: how})
        got = oracle_auc(frame, how)
        assert got.auc == pytest.approx(roc_auc_score(breasts[c.CANCER], breasts[ORACLE]))
        assert got.auc is not None and got.ci_low is not None and got.ci_high is not None
        assert got.ci_low < got.auc < got.ci_high and got.breasts == 120
    assert oracle_auc(frame.assign(**{c.CANCER: 0})).auc is None


@pytest.mark.parametrize(
    ("difficulty", "low", "high"),
    [
        pytest.param("easy", 0.99, 1.0, id="easy-lesions-are-found-by-anyone"),
        pytest.param("realistic", 0.80, 0.95, id="realistic-is-about-0.88"),
    ],
)
def test_the_presets_oracle_auc(difficulty: str, low: float, high: float) -> None:
    meta = build_metadata(11, 120, 0, 0.25)
    jobs = list(image_jobs(c.Subset.TRAIN, meta.train))
    scores = {job.image_id: synth_image(job, 11, "small", difficulty).oracle for job in jobs}
    got = oracle_auc(oracle_frame(jobs, scores))
    assert got.auc is not None and low <= got.auc <= high, got


def test_unknown_difficulty_names_the_presets() -> None:
    with pytest.raises(ValueError, match=r"easy.*realistic"):
        conspicuity("hard")


def test_mammo_synth_realistic_writes_the_oracle_and_prints_its_auc(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    argv = [sys.executable, "-m", "flows.cli", "synth", str(raw), "--patients", "60"]
    argv += ["--positive-rate", "0.3", "--difficulty", "realistic", "--workers", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    scores = pd.read_csv(raw / c.SYNTHETIC_ORACLE)
    train = pd.read_csv(raw / c.csv_name(c.Subset.TRAIN))
    assert sorted(scores[c.IMAGE_ID]) == sorted(train[c.IMAGE_ID])
    auc = oracle_auc(scores).auc
    assert auc is not None and f"breast-level AUC {auc:.3f} (realistic lesions" in done.stdout
    assert json.loads((raw / c.SYNTHETIC_MARKER).read_text())["difficulty"] == "realistic"

    bad = subprocess.run(
        [*argv[:4], str(tmp_path / "other"), "--difficulty", "hard"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "invalid choice: 'hard'" in bad.stderr
