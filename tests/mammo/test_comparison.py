"""Challenger against champion on one holdout, the decision, and the model card made of it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammo import contract as c
from mammo.comparison import CHALLENGER, CHAMPION, compare
from mammo.metrics import roc_auc
from mammo.model_card import CardInputs, data_summary, render
from mammo.promotion import PROMOTED, REFUSED, VALIDATION_PASSED, decide
from mammo.protocol import PromotionProtocol

PROTOCOL = PromotionProtocol.from_dict(
    {
        "primary": {"resamples": 200},
        "evidence": {"min_breasts": 100, "min_positive_breasts": 20},
        "calibration": {"max_ece": 0.5},
    }
)


def holdout(seed: int = 0, patients: int = 300) -> pd.DataFrame:
    """Two breasts per patient, 15 % positive, two sites; the champion separates well."""
    rng = np.random.default_rng(seed)
    n = 2 * patients
    y = (rng.random(n) < 0.15).astype(float)
    champion = 1 / (1 + np.exp(-(3.0 * y - 1.5 + rng.normal(0, 1, n))))
    return pd.DataFrame(
        {
            c.PREDICTION_ID: [f"{i // 2}_{'LR'[i % 2]}" for i in range(n)],
            c.PATIENT_ID: np.arange(n) // 2,
            c.CANCER: y,
            c.SITE_ID: np.where(np.arange(n) // 2 < patients // 2, 1, 2),
            CHAMPION: champion,
        }
    )


def decide_on(breasts: pd.DataFrame) -> tuple[object, object]:
    comparison = compare(breasts, [0.5, 0.5], PROTOCOL)
    evaluations = comparison.evaluations
    decision = decide(
        PROTOCOL,
        VALIDATION_PASSED,
        "",
        evaluations["challenger"],
        evaluations["champion"],
        comparison.differences,
        comparison.subgroups,
    )
    return comparison, decision


def test_the_same_scores_are_non_inferior_and_promoted() -> None:
    breasts = holdout()
    breasts[CHALLENGER] = breasts[CHAMPION]
    comparison, decision = decide_on(breasts)
    assert comparison.differences is not None
    assert comparison.differences["auc"].diff == 0.0
    assert comparison.differences["auc"].n == 300  # patients are the resampled units
    assert decision.outcome == PROMOTED, decision.reason


def test_a_challenger_broken_on_one_site_is_refused_naming_the_site() -> None:
    breasts = holdout()
    rng = np.random.default_rng(1)
    site_2 = breasts[c.SITE_ID] == 2
    scores = breasts[CHAMPION].to_numpy().copy()
    scores[site_2.to_numpy()] = rng.random(int(site_2.sum()))  # noise on site 2
    breasts[CHALLENGER] = scores
    comparison, decision = decide_on(breasts)
    rows = {(r["column"], r["value"]): r for r in comparison.subgroups}
    assert rows[("site_id", "2")]["challenger"]["auc"] == pytest.approx(
        roc_auc(breasts[c.CANCER][site_2], scores[site_2.to_numpy()])
    )
    assert decision.outcome == REFUSED
    assert "site_id=2 auc" in decision.reason and "site_id=1 auc" not in decision.reason


def test_the_model_card_shows_figures_subgroups_and_the_decision() -> None:
    breasts = holdout()
    breasts[CHALLENGER] = breasts[CHAMPION]
    comparison, decision = decide_on(breasts)
    document = {
        **decision.to_dict(),
        "champion": {"version": "1"},
        "protocol": {
            "name": PROTOCOL.name,
            "version": PROTOCOL.version,
            "source": "p.yaml",
            "hash": PROTOCOL.content_hash(),
        },
        "decided_at": "2026-12-01T00:00:00+00:00",
    }
    manifest = breasts.rename(columns={c.PREDICTION_ID: "x"}).assign(
        **{c.LATERALITY: "L", c.SPLIT: "holdout", c.MACHINE_ID: 49}
    )
    card = CardInputs(
        model="mammo-cancer",
        version="2",
        run_id="abc",
        data=data_summary(manifest, "/data/out", "f" * 64),
        configs={"training": {"model": "small_cnn"}},
        threshold=0.5,
        aggregation="mean",
        evaluations={"validation": None, "holdout": comparison.evaluations["challenger"]},
        subgroups=comparison.subgroups,
        decision=document,
        synthetic=True,
        calibration_png=b"\x89PNG fake",
    )
    markdown, page = render(card)
    for heading in ("Intended use", "Data", "Operating point", "Performance", "Subgroups"):
        assert f"## {heading}" in markdown
    assert "**promoted** against champion version 1" in markdown
    assert "AUC, DeLong" in markdown and "PPV at screening prevalence" in markdown
    assert "synthetic images" in markdown
    assert "<strong>promoted</strong>" in page and "data:image/png;base64," in page
    json.dumps(comparison.to_dict(), allow_nan=True)
