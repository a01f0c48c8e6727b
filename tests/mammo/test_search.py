"""The [tune] section: a space is checked key by key, one line per mistake; the best trial and
the table of trials."""

from __future__ import annotations

import math
import tomllib

import pytest

from mammo.config import ConfigError, dump_config
from mammo.search import (
    DEFAULT_SPACE,
    Param,
    TrialResult,
    TuneSettings,
    apply_sample,
    best_trial,
    parse_space,
    trial_table,
)
from mammo.training import TrainConfig


def test_the_default_space_is_valid_and_a_copy_per_settings() -> None:
    settings = TuneSettings()
    assert {p.key for p in settings.params()} == set(DEFAULT_SPACE)
    settings.space["lr"]["loguniform"][0] = 1.0
    assert TuneSettings().space == DEFAULT_SPACE


def test_each_distribution_is_parsed_with_its_values() -> None:
    params = parse_space(
        {
            "lr": {"loguniform": [1e-4, 1e-2]},
            "augment.brightness": {"uniform": [0.0, 0.3]},
            "epochs": {"randint": [2, 4]},
            "model": {"choice": ["small_cnn", "resnet18"]},
        }
    )
    assert params == (
        Param("lr", "loguniform", (1e-4, 1e-2)),
        Param("augment.brightness", "uniform", (0.0, 0.3)),
        Param("epochs", "randint", (2, 4)),
        Param("model", "choice", ("small_cnn", "resnet18")),
    )


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"lrr": {"uniform": [0.1, 0.2]}}, "space: unknown key 'lrr'; allowed: ['accumulate'"),
        ({"augment": {"choice": [{}]}}, "space: unknown key 'augment'"),
        ({"augment.flip": {"choice": [True]}}, "unknown key 'augment.flip'"),
        ({"lr": {"normal": [0.0, 1.0]}}, "space.lr must be one of { choice = [...] |"),
        ({"lr": 0.001}, "space.lr must be one of"),
        ({"lr": {"uniform": [0.1, 0.2], "choice": [0.1]}}, "space.lr must be one of"),
        ({"lr": {"choice": []}}, "space.lr: choice needs a list, got []"),
        ({"lr": {"uniform": [0.1]}}, "space.lr: uniform needs [low, high], two numbers"),
        ({"lr": {"uniform": [0.2, 0.1]}}, "space.lr: uniform needs low < high, got [0.2, 0.1]"),
        ({"lr": {"loguniform": [0.0, 0.1]}}, "space.lr: loguniform needs 0 < low < high"),
        ({"lr": {"uniform": ["a", "b"]}}, "two numbers"),
        ({"batch_size": {"uniform": [8.0, 32.0]}}, "space.batch_size: uniform needs a number key"),
        ({"lr": {"randint": [1, 3]}}, "space.lr: randint needs an integer key"),
        ({"epochs": {"randint": [3, 1]}}, "integers low <= high, got [3, 1]"),
        ({"epochs": {"randint": [0, 3]}}, "space.epochs: 0 cannot train: epochs must be >= 1"),
        ({"lr": {"uniform": [-0.1, 0.1]}}, "space.lr: -0.1 cannot train: need lr > 0"),
        ({"sampler": {"choice": ["none", "smote"]}}, "space.sampler: 'smote' cannot train"),
        ({"model": {"choice": ["vgg"]}}, "unknown model 'vgg'"),
        ({}, "space must be a table of TrainConfig keys"),
    ],
)
def test_a_wrong_space_is_one_line_naming_the_key(space: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        TuneSettings(space=space)  # type: ignore[arg-type]
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trials": 0}, "trials and max_concurrent_trials must be >= 1"),
        ({"max_concurrent_trials": 0}, "trials and max_concurrent_trials must be >= 1"),
        ({"mode": "maximum"}, "mode must be max or min, got 'maximum'"),
        ({"metric": ""}, "metric must name a training metric"),
    ],
)
def test_wrong_settings_are_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneSettings(**values)  # type: ignore[arg-type]


def test_a_sample_goes_on_top_of_the_train_values_augment_keys_into_augment() -> None:
    train = {"epochs": 2, "lr": 0.01, "augment": {"brightness": 0.2}}
    merged = apply_sample(train, {"lr": 0.001, "augment.contrast": 0.3})
    assert merged == {"epochs": 2, "lr": 0.001, "augment": {"brightness": 0.2, "contrast": 0.3}}
    assert train["augment"] == {"brightness": 0.2}  # the base values are not changed
    config = TrainConfig.from_dict(merged)
    assert (config.lr, config.augment.contrast, config.augment.brightness) == (0.001, 0.3, 0.2)


def result(trial: str, metric: float | None, error: str = "") -> TrialResult:
    return TrialResult(trial, {"lr": 0.001 * int(trial)}, metric, 2, f"run{trial}" * 4, error)


def test_the_best_trial_skips_failed_and_missing_metrics_and_ties_go_to_the_first() -> None:
    results = [
        result("1", 0.7),
        result("2", None, "too few patients"),
        result("3", math.nan),
        result("4", 0.9),
        result("5", 0.9),
    ]
    assert best_trial(results, "max") == results[3]
    assert best_trial(results, "min") == results[0]
    assert best_trial(results[1:3], "max") is None


def test_the_table_has_a_row_per_trial_with_its_values_metric_and_epochs() -> None:
    results = [result("1", 0.71234), result("2", None, "too few patients")]
    table = trial_table(results, "val_auc", results[0]).splitlines()
    assert table[0].split() == ["trial", "lr", "val_auc", "epochs", "run"]
    assert table[1].split() == ["1", "*", "0.001", "0.7123", "2", "run1run1run1"]
    assert table[2].split() == ["2", "0.002", "failed", "2", "run2run2run2"]


def test_a_written_config_reads_back_as_the_same_values() -> None:
    sections = {
        "train": {
            "epochs": 2,
            "lr": 0.00123456789,
            "sampler": "balanced",
            "amp": False,
            "aux_targets": ("density",),
            "augment": {"scale_range": (0.8, 1.2), "brightness": 0.0},
        },
        "tune": {"trials": 2, "space": {"augment.contrast": {"uniform": [0.0, 0.3]}}},
        "preprocess": {"decoders": ["dicomsdl"], "out_rows": 1024, "breast_side": 'le"ft'},
    }
    read = tomllib.loads(dump_config(sections))
    assert read["train"] == {
        **sections["train"],
        "aux_targets": ["density"],
        "augment": {"scale_range": [0.8, 1.2], "brightness": 0.0},
    }
    assert read["tune"] == sections["tune"] and read["preprocess"] == sections["preprocess"]


def test_a_value_toml_cannot_hold_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot write None"):
        dump_config({"train": {"ema_decay": None}})
