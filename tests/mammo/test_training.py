"""Training loop pieces on CPU: config, targets, a few real steps, prediction, early stop."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mammo.augment import AugmentConfig
from mammo.contract import AGE, BIRADS, CANCER, DENSITY, LATERALITY, PATIENT_ID, SITE_ID
from mammo.metrics import roc_auc
from mammo.sampling import SamplerKind
from mammo.training import (
    EarlyStopping,
    Target,
    TrainConfig,
    TrainConfigError,
    build_model,
    images_to_tensor,
    make_batch,
    make_grad_scaler,
    make_optimizer,
    predict_batches,
    train_epoch,
    train_step,
    weight_ema,
)

CPU = torch.device("cpu")


def _separable(n: int, seed: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 16) uint8 noise; class k has a bright 8x8 square at row 4 + 6k."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 60, size=(n, 32, 16), dtype=np.uint8)
    for i, k in enumerate(labels):
        if classes > 2 or k == 1:
            images[i, 4 + 6 * k : 12 + 6 * k, 4:12] = 230
    return images, labels


def test_config_round_trips_through_json() -> None:
    cfg = TrainConfig(
        model="resnet18",
        target=DENSITY,
        sampler=SamplerKind.OVERSAMPLE,
        augment=AugmentConfig(rotation_degrees=3.0),
        fuse_metadata=True,
        use_gpu=None,
    )
    restored = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    assert restored.to_dict()["sampler"] == "oversample"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"sampler": "smote"}, id="unknown-sampler"),
        pytest.param({"model": "vit"}, id="unknown-model"),
        pytest.param({"target": AGE}, id="age-is-not-a-target"),
        pytest.param({"batch_size": 0}, id="empty-batches"),
        pytest.param({"lr": 0.0}, id="zero-learning-rate"),
        pytest.param({"aggregation": "median"}, id="unknown-aggregation"),
        pytest.param({"early_stopping_patience": 0}, id="zero-patience"),
        pytest.param({"accumulate": 0}, id="no-batch-per-step"),
        pytest.param({"ema_decay": 1.0}, id="ema-that-never-moves"),
        pytest.param({"ema_decay": 0.0}, id="ema-that-is-the-weights"),
    ],
)
def test_bad_configs_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(TrainConfigError):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_keys_in_a_saved_config_raise() -> None:
    with pytest.raises(TrainConfigError, match="learning_rate"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "learning_rate": 0.1})


@pytest.mark.parametrize(
    ("column", "values", "labeled", "labels"),
    [
        pytest.param(CANCER, [0, 1, 1], [True, True, True], [0.0, 1.0, 1.0], id="cancer-binary"),
        pytest.param(
            DENSITY, ["A", None, "D", "C"], [True, False, True, True], [0, 3, 2], id="density"
        ),
        pytest.param(
            BIRADS,
            [1.0, np.nan, 0.0, 2.0],
            [True, False, True, True],
            [1, 0, 2],
            id="birads-stored-as-float",
        ),
    ],
)
def test_target_maps_a_column_to_labels(
    column: str, values: list[object], labeled: list[bool], labels: list[float]
) -> None:
    target = Target.for_column(column)
    df = pd.DataFrame({column: values})
    mask = target.labeled(df)
    assert mask.tolist() == labeled
    assert target.labels(df[mask]).tolist() == labels
    assert target.num_outputs == (1 if column == CANCER else len(target.classes))
    if not all(labeled):
        with pytest.raises(TrainConfigError, match="filter first"):
            target.labels(df)


def test_target_probabilities() -> None:
    binary = Target.for_column(CANCER).probabilities(np.array([[0.0], [math.log(3.0)]]))
    np.testing.assert_allclose(binary, [0.5, 0.75])
    probs = Target.for_column(DENSITY).probabilities(np.zeros((2, 4), dtype=np.float32))
    np.testing.assert_allclose(probs, np.full((2, 4), 0.25))


def test_binary_target_report_is_breast_level() -> None:
    df = pd.DataFrame(
        {
            PATIENT_ID: [1, 1, 2, 2],
            LATERALITY: ["L", "L", "R", "R"],
            SITE_ID: [1, 1, 1, 1],
            CANCER: [1, 1, 0, 0],
        }
    )
    report = Target.for_column(CANCER).report(df, np.array([0.9, 0.7, 0.2, 0.4]), "max")
    assert report["n_breasts"] == 2.0
    # max per breast: p = [.9, .4], y = [1, 0]: pF1 = 2 * .9 / (1.3 + 1)
    assert report["pf1"] == pytest.approx(1.8 / 2.3)
    assert report["auc"] == 1.0


def test_a_few_steps_lower_the_loss_on_a_separable_problem() -> None:
    images, labels = _separable(32, seed=0)
    cfg = TrainConfig(image_rows=32, image_cols=16, lr=3e-3, dropout=0.0, seed=0)
    target = Target.for_column(CANCER)
    model = build_model(cfg, target)
    optimizer = make_optimizer(model, cfg)
    loss_fn = target.loss_fn()
    batch = make_batch(images, labels.astype(np.float32))
    losses = [train_step(model, batch, optimizer, loss_fn, None, CPU) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]
    probs = target.probabilities(predict_batches(model, [batch], CPU))  # eval mode
    assert roc_auc(labels, probs) == 1.0


def test_four_class_training_with_fused_metadata_lowers_the_loss() -> None:
    images, labels = _separable(32, seed=1, classes=4)
    cfg = TrainConfig(target=DENSITY, fuse_metadata=True, lr=3e-3, dropout=0.0)
    target = Target.for_column(DENSITY)
    model = build_model(cfg, target, metadata_features=3)
    optimizer = make_optimizer(model, cfg)
    metadata = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    batch = make_batch(images, labels, metadata)
    losses = [train_step(model, batch, optimizer, target.loss_fn(), None, CPU) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]
    logits = predict_batches(model, [batch], CPU)
    assert logits.shape == (32, 4)


def test_train_epoch_augments_with_the_generator_and_averages_the_loss() -> None:
    images, labels = _separable(24, seed=2)
    cfg = TrainConfig(seed=3)
    batches = [
        make_batch(images[i : i + 8], labels[i : i + 8].astype(np.float32)) for i in range(0, 24, 8)
    ]
    target = Target.for_column(CANCER)

    def run() -> float:
        torch.manual_seed(0)  # dropout draws from the global generator
        model = build_model(cfg, target)
        return train_epoch(
            model,
            batches,
            make_optimizer(model, cfg),
            target.loss_fn(),
            None,
            CPU,
            AugmentConfig(),
            torch.Generator().manual_seed(0),
        )

    first, second = run(), run()
    assert first == second and math.isfinite(first)  # seeded model and augmentation
    with pytest.raises(TrainConfigError, match="Generator"):
        model = build_model(cfg, target)
        train_epoch(
            model,
            batches,
            make_optimizer(model, cfg),
            target.loss_fn(),
            None,
            CPU,
            AugmentConfig(),
            None,
        )


def test_predict_batches_keeps_order_and_is_deterministic() -> None:
    images, labels = _separable(10, seed=3)
    model = build_model(TrainConfig(), Target.for_column(CANCER))
    whole = predict_batches(model, [make_batch(images, labels)], CPU)
    parts = predict_batches(
        model, [make_batch(images[:4], labels[:4]), make_batch(images[4:], labels[4:])], CPU
    )
    assert whole.shape == (10, 1) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-6)
    assert not model.training


def test_vflip_test_time_augmentation_is_the_mean_of_the_image_and_its_mirror() -> None:
    images, labels = _separable(6, seed=4)
    model = build_model(TrainConfig(), Target.for_column(CANCER))
    plain = predict_batches(model, [make_batch(images, labels)], CPU)
    mirrored = predict_batches(model, [make_batch(images[:, ::-1, :].copy(), labels)], CPU)
    tta = predict_batches(model, [make_batch(images, labels)], CPU, vflip=True)
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, mirrored)  # the lesion's row matters: the test can fail


class _Linear(torch.nn.Module):
    """A model without BatchNorm or dropout: its gradient is the same in any batch split."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(32 * 16, 1)

    def forward(self, image: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(image.flatten(1))


def _sgd_epoch(batches: list[list[int]], accumulate: int) -> tuple[dict[str, torch.Tensor], int]:
    images, labels = _separable(24, seed=6)
    model = _Linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    steps: list[int] = []
    train_epoch(
        model,
        [make_batch(images[i], labels[i].astype(np.float32)) for i in batches],
        optimizer,
        Target.for_column(CANCER).loss_fn(),
        None,
        CPU,
        after_step=lambda: steps.append(1),
        accumulate=accumulate,
    )
    return model.state_dict(), len(steps)


def test_gradient_accumulation_steps_as_one_batch_of_the_accumulated_size() -> None:
    rows = list(range(24))
    big, big_steps = _sgd_epoch([rows[:8], rows[8:16], rows[16:]], accumulate=1)
    small, small_steps = _sgd_epoch([rows[i : i + 4] for i in range(0, 24, 4)], accumulate=2)
    assert big_steps == small_steps == 3
    for name in big:
        torch.testing.assert_close(small[name], big[name])
    unaccumulated, steps = _sgd_epoch([rows[i : i + 4] for i in range(0, 24, 4)], accumulate=1)
    assert steps == 6 and not torch.allclose(unaccumulated["fc.weight"], big["fc.weight"])
    # 5 batches in groups of 2: the last, partial group is a step of its own
    _, partial_steps = _sgd_epoch([rows[i : i + 4] for i in range(0, 20, 4)], accumulate=2)
    assert partial_steps == 3


def test_weight_ema_follows_the_weights_after_each_step() -> None:
    images, labels = _separable(24, seed=5)
    cfg, target = TrainConfig(seed=1, dropout=0.0), Target.for_column(CANCER)
    model = build_model(cfg, target)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    decay = 0.25  # not 0.5: the blend must tell old from new
    ema = weight_ema(model, decay)
    steps: list[dict[str, torch.Tensor]] = []

    def record() -> None:
        ema.update_parameters(model)
        steps.append({k: v.clone() for k, v in model.state_dict().items()})

    batches = [make_batch(images[i : i + 8], labels[i : i + 8].astype(np.float32)) for i in (0, 8)]
    train_epoch(
        model, batches, make_optimizer(model, cfg), target.loss_fn(), None, CPU, after_step=record
    )
    assert len(steps) == 2
    name = "head.1.weight"
    # torch's EMA starts from the first update's weights, then blends: (1-d) new + d old
    expected = decay * steps[0][name] + (1 - decay) * steps[1][name]
    torch.testing.assert_close(ema.module.state_dict()[name], expected)
    assert not torch.equal(ema.module.state_dict()[name], start[name])
    with pytest.raises(TrainConfigError, match="decay"):
        weight_ema(model, 1.0)


def test_build_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(TrainConfig(seed=5), Target.for_column(CANCER))
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(TrainConfig(seed=5), Target.for_column(CANCER))
    c = build_model(TrainConfig(seed=6), Target.for_column(CANCER))
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_no_grad_scaler_and_no_autocast_on_cpu() -> None:
    assert make_grad_scaler(True, CPU) is None
    assert make_grad_scaler(False, torch.device("cuda")) is None


def test_images_to_tensor_scales_uint8_and_adds_the_channel() -> None:
    tensor = images_to_tensor(np.array([[[0, 255], [51, 102]]], dtype=np.uint8))
    assert tensor.shape == (1, 1, 2, 2) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    with pytest.raises(TrainConfigError):
        images_to_tensor(np.zeros((2, 2), dtype=np.uint8))


@pytest.mark.parametrize(
    ("mode", "values", "stop_at", "best", "best_epoch"),
    [
        # patience 2: best .7 at epoch 1, then two epochs without improvement -> stop at 3
        pytest.param("max", [0.6, 0.7, 0.7, 0.65, 0.9], 3, 0.7, 1, id="max-plateau-stops"),
        pytest.param("max", [0.1, 0.2, 0.3, 0.4], None, 0.4, 3, id="max-always-improving"),
        pytest.param("min", [1.0, 0.8, 0.9, 0.7, 0.75, 0.8], 5, 0.7, 3, id="min-counter-resets"),
        pytest.param("max", [math.nan, math.nan], 1, None, -1, id="nan-never-improves"),
        pytest.param("max", [math.nan, 0.5, 0.4], None, 0.5, 1, id="nan-then-a-value"),
    ],
)
def test_early_stopping(
    mode: str, values: list[float], stop_at: int | None, best: float | None, best_epoch: int
) -> None:
    stopper = EarlyStopping(patience=2, mode=mode)  # type: ignore[arg-type]
    first_stop = None
    for epoch, value in enumerate(values):
        if stopper.update(value):
            first_stop = epoch
            break
    assert first_stop == stop_at
    assert stopper.best == best and stopper.best_epoch == best_epoch


def test_early_stopping_reports_improvement_and_min_delta() -> None:
    stopper = EarlyStopping(patience=1, mode="max", min_delta=0.05)
    assert stopper.update(0.5) is False and stopper.improved
    assert stopper.update(0.53) is True and not stopper.improved  # +.03 is below min_delta
    assert stopper.best == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({"patience": 0}, id="zero-patience"), pytest.param({"mode": "up"}, id="mode")],
)
def test_early_stopping_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(TrainConfigError):
        EarlyStopping(**{"patience": 2, **kwargs})  # type: ignore[arg-type]
