"""Hyperparameter search over :class:`~mammo.training.TrainConfig`: the [tune] section.

A search space is a table of TrainConfig keys (or ``augment.<key>``), each with one
distribution:

    lr = { loguniform = [0.0003, 0.003] }     # log-uniform between two positive bounds
    dropout = { uniform = [0.0, 0.4] }        # uniform between two bounds (float keys)
    epochs = { randint = [4, 12] }            # an integer, both bounds included (int keys)
    sampler = { choice = ["oversample", "balanced"] }

Every bound and choice is checked by building a TrainConfig with it, so a space that could
not train fails when the file is read. Ray Tune's objects are built by tasks/tune.py; this
module also picks the best trial and prints the table of trials.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from mammo.augment import AugmentConfig
from mammo.config import ConfigError
from mammo.training import TrainConfig

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
AUGMENT_PREFIX = "augment."
DEFAULT_SPACE: dict[str, dict[str, list[Any]]] = {
    "lr": {"loguniform": [0.0003, 0.003]},
    "dropout": {"uniform": [0.0, 0.4]},
    "sampler": {"choice": ["oversample", "balanced"]},
    "batch_size": {"choice": [16, 32]},
}


class TuningError(RuntimeError):
    """A search none of whose trials produced the metric it maximises (or minimises)."""


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is a name of DISTRIBUTIONS; ``values`` its bounds or choices."""

    key: str
    kind: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class TuneSettings:
    """The [tune] keys: how many trials, what to maximise (or minimise), and the space."""

    trials: int = 8
    metric: str = "val_auc"  # a key of the training outcome's metrics
    mode: Literal["max", "min"] = "max"
    max_concurrent_trials: int = 1  # trials at the same time (each trainer shares the cluster)
    seed: int = 0  # the sampler's seed: the same file gives the same trials
    space: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_SPACE)
    )

    def __post_init__(self) -> None:
        if self.trials < 1 or self.max_concurrent_trials < 1:
            raise ConfigError(
                f"trials and max_concurrent_trials must be >= 1, got {self.trials}, "
                f"{self.max_concurrent_trials}"
            )
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode must be max or min, got {self.mode!r}")
        if not self.metric:
            raise ConfigError("metric must name a training metric, e.g. val_auc")
        parse_space(self.space)

    def params(self) -> tuple[Param, ...]:
        return parse_space(self.space)


def parse_space(space: Mapping[str, Any]) -> tuple[Param, ...]:
    """The space's parameters, each checked: a known key, one distribution, bounds that train."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"space must be a table of TrainConfig keys, got {space!r}")
    return tuple(_param(key, spec) for key, spec in space.items())


def _param(key: str, spec: Any) -> Param:
    default = _field_default(key)
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(
            f"space.{key} must be one of {{ {' | '.join(f'{d} = [...]' for d in DISTRIBUTIONS)} }}"
            f", got {spec!r}"
        )
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list | tuple) or not values:
        raise ConfigError(f"space.{key}: {kind} needs a list, got {values!r}")
    values = tuple(values)
    if kind != "choice":
        _check_bounds(key, kind, values, default)
    for value in values:
        try:
            TrainConfig.from_dict(apply_sample({}, {key: value}))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"space.{key}: {value!r} cannot train: {exc}") from exc
    return Param(key, kind, values)


def _field_default(key: str) -> Any:
    """The default of ``key`` in TrainConfig (``augment.<key>``: in AugmentConfig)."""
    kind: type[TrainConfig] | type[AugmentConfig] = TrainConfig
    name = key
    if key.startswith(AUGMENT_PREFIX):
        kind, name = AugmentConfig, key.removeprefix(AUGMENT_PREFIX)
    known = {f.name for f in fields(kind)} - {"augment"}
    if name not in known:
        plain = sorted({f.name for f in fields(TrainConfig)} - {"augment"})
        allowed = plain + [f"{AUGMENT_PREFIX}{f.name}" for f in fields(AugmentConfig)]
        raise ConfigError(f"space: unknown key {key!r}; allowed: {allowed}")
    return getattr(kind(), name)


def _check_bounds(key: str, kind: str, values: tuple[Any, ...], default: Any) -> None:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numbers:
        raise ConfigError(f"space.{key}: {kind} needs [low, high], two numbers, got {list(values)}")
    low, high = values
    if kind == "randint":
        is_int = isinstance(default, int) and not isinstance(default, bool)
        if not is_int or not all(isinstance(v, int) for v in values) or low > high:
            raise ConfigError(
                f"space.{key}: randint needs an integer key and integers low <= high, "
                f"got {list(values)}"
            )
        return
    if not isinstance(default, float):
        raise ConfigError(f"space.{key}: {kind} needs a number key; use choice for {key}")
    if not low < high or (kind == "loguniform" and low <= 0):
        need = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ConfigError(f"space.{key}: {kind} needs {need}, got {list(values)}")


def apply_sample(train: Mapping[str, Any], sample: Mapping[str, Any]) -> dict[str, Any]:
    """[train] values with a trial's sampled values on top (``augment.<key>`` into augment)."""
    merged = dict(train)
    for key, value in sample.items():
        if key.startswith(AUGMENT_PREFIX):
            merged["augment"] = {
                **merged.get("augment", {}),
                key.removeprefix(AUGMENT_PREFIX): value,
            }
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: its sampled values and the metric (None: it failed or had none)."""

    trial: str
    values: dict[str, Any]
    metric: float | None
    epochs: int
    run_id: str
    error: str = ""


def best_trial(results: Sequence[TrialResult], mode: str) -> TrialResult | None:
    """The trial with the highest (``mode="max"``) or lowest metric; trials without one are
    never best; ties go to the earlier trial."""
    scored = [r for r in results if r.metric is not None and math.isfinite(r.metric)]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda r: sign * (r.metric or 0.0))


def trial_table(results: Sequence[TrialResult], metric: str, best: TrialResult | None) -> str:
    """The trials as a text table: trial, each sampled value, the metric, epochs, MLflow run."""
    keys = list(dict.fromkeys(k for r in results for k in r.values))
    header = ["trial", *keys, metric, "epochs", "run"]
    rows = [
        [
            r.trial + (" *" if r is best else ""),
            *(_cell(r.values.get(k)) for k in keys),
            "failed" if r.error else ("-" if r.metric is None else f"{r.metric:.4f}"),
            str(r.epochs),
            r.run_id[:12] or "-",
        ]
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
