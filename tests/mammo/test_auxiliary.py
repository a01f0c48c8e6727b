"""Auxiliary targets: their values, the multi-task loss against a hand computation, the
head cut back to the target after training, and the config's checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mammo.auxiliary import MultiTaskLoss, aux_labels, aux_targets, main_state, stack_labels
from mammo.contract import BIRADS, CANCER, DENSITY, DIFFICULT_NEGATIVE, INVASIVE
from mammo.training import (
    Target,
    TrainConfig,
    TrainConfigError,
    build_model,
    make_batch,
    make_optimizer,
    predict_batches,
    train_epoch,
)

CPU = torch.device("cpu")
AUX = (BIRADS, DENSITY, DIFFICULT_NEGATIVE)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            CANCER: [1, 0, 0, 1],
            BIRADS: [2.0, 1.0, np.nan, 0.0],
            DENSITY: ["D", None, "A", "X"],
            DIFFICULT_NEGATIVE: pd.array([True, False, None, False], dtype="boolean"),
        }
    )


def test_aux_values_are_class_indices_or_0_1_with_nan_where_missing() -> None:
    targets = aux_targets(TrainConfig(aux_targets=AUX))
    values = aux_labels(_frame(), targets)
    expected = np.array(
        [[2, 3, 1], [1, np.nan, 0], [np.nan, 0, np.nan], [0, np.nan, 0]], dtype=np.float32
    )
    np.testing.assert_array_equal(values, expected)  # "X" is no density: missing, not a guess
    assert np.isnan(aux_labels(_frame().drop(columns=[BIRADS]), targets)[:, 0]).all()


def test_the_loss_is_the_targets_plus_the_weighted_mean_of_the_known_auxiliary_losses() -> None:
    cfg = TrainConfig(aux_targets=AUX, aux_weight=0.3)
    main, targets = Target.for_column(CANCER), aux_targets(cfg)
    frame = _frame()
    labels = torch.from_numpy(stack_labels(main.labels(frame), aux_labels(frame, targets)))
    logits = torch.randn(4, 1 + 3 + 4 + 1, generator=torch.Generator().manual_seed(0))
    loss = MultiTaskLoss(main, targets, 0.3)(logits, labels)

    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    reference_main = F.binary_cross_entropy_with_logits(logits[:, 0], y)
    birads = F.cross_entropy(logits[[0, 1, 3], 1:4], torch.tensor([2, 1, 0]))
    density = F.cross_entropy(logits[[0, 2], 4:8], torch.tensor([3, 0]))
    difficult = F.binary_cross_entropy_with_logits(logits[[0, 1, 3], 8], torch.tensor([1.0, 0, 0]))
    expected = reference_main + 0.3 * (birads + density + difficult) / 3
    torch.testing.assert_close(loss, expected)

    moved = logits.clone()
    moved[2, 1:4] += 5.0  # row 2 has no BIRADS: its BIRADS logits cannot matter
    torch.testing.assert_close(MultiTaskLoss(main, targets, 0.3)(moved, labels), expected)
    none = torch.full_like(labels, float("nan"))
    none[:, 0] = y  # no auxiliary value in the batch: the target's loss alone
    torch.testing.assert_close(MultiTaskLoss(main, targets, 0.3)(logits, none), reference_main)


def test_training_with_aux_heads_ships_the_targets_head_alone() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(16, 32, 16), dtype=np.uint8)
    frame = pd.DataFrame(
        {CANCER: np.arange(16) % 2, DENSITY: list("ABCD") * 4, INVASIVE: [0, 1] * 8}
    )
    images[frame[CANCER] == 1, 4:12, 4:12] = 230
    cfg = TrainConfig(aux_targets=(DENSITY, INVASIVE), dropout=0.0, lr=3e-3)
    main, targets = Target.for_column(CANCER), aux_targets(cfg)
    model = build_model(cfg, main)
    assert model.spec.num_outputs == 1 + 4 + 1  # type: ignore[union-attr]
    labels = stack_labels(main.labels(frame), aux_labels(frame, targets))
    loss_fn = MultiTaskLoss(main, targets, cfg.aux_weight)
    batch = make_batch(images, labels)
    optimizer = make_optimizer(model, cfg)
    losses = [train_epoch(model, [batch], optimizer, loss_fn, None, CPU) for _ in range(15)]
    assert losses[-1] < losses[0]

    shipped = build_model(TrainConfig(), main)
    shipped.load_state_dict(main_state(model.state_dict(), main))
    plain_batch = make_batch(images, main.labels(frame))
    both = predict_batches(model, [plain_batch], CPU)
    alone = predict_batches(shipped, [plain_batch], CPU)
    assert both.shape == (16, 6) and alone.shape == (16, 1)
    np.testing.assert_allclose(alone[:, 0], both[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"aux_targets": ("age",)}, id="not-a-label"),
        pytest.param({"aux_targets": (DENSITY, DENSITY)}, id="repeated"),
        pytest.param({"aux_targets": (CANCER,)}, id="the-target-itself"),
        pytest.param({"aux_targets": (DENSITY,), "aux_weight": 0.0}, id="no-weight"),
    ],
)
def test_bad_auxiliary_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(TrainConfigError, match="aux"):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_aux_targets_round_trip_through_json_and_toml_lists() -> None:
    cfg = TrainConfig.from_dict({"aux_targets": [BIRADS, DENSITY]})
    assert cfg.aux_targets == (BIRADS, DENSITY)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert Target.for_column(DIFFICULT_NEGATIVE, auxiliary=True).is_binary
    with pytest.raises(TrainConfigError):
        Target.for_column(DIFFICULT_NEGATIVE)  # a head beside the target, never the target
