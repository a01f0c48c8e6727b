"""The promotion protocol: the rules of a promotion, fixed in a versioned YAML file before
any comparison is run.

A protocol says which metric decides and with what non-inferiority margin, how much
held-out evidence a decision needs, the floors a first model must clear, the operating-point,
subgroup and calibration rules, and whether validated data is required. :meth:`content_hash`
(SHA-256 of the resolved content, defaults filled in) is stored on every decision. The
shipped default is ``mammo/protocols/default.yaml``; its figures are explained there and in
docs/training.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROTOCOL = "default.yaml"
PRIMARY_METRICS = ("auc", "pf1")
FLOOR_FIGURES = ("auc", "pf1", "sensitivity", "specificity")


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Primary:
    metric: str = "auc"
    margin: float = 0.02
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0

    def check(self) -> None:
        _require(self.metric in PRIMARY_METRICS, "primary.metric", f"one of {PRIMARY_METRICS}")
        _require(0 <= self.margin < 1, "primary.margin", "in [0, 1)")
        _require(0.5 < self.confidence < 1, "primary.confidence", "in (0.5, 1)")
        _require(self.resamples >= 100, "primary.resamples", "at least 100")


@dataclass(frozen=True)
class Evidence:
    min_breasts: int = 100
    min_positive_breasts: int = 20

    def check(self) -> None:
        _require(self.min_breasts >= 1, "evidence.min_breasts", "at least 1")
        _require(self.min_positive_breasts >= 1, "evidence.min_positive_breasts", "at least 1")


@dataclass(frozen=True)
class OperatingPoint:
    """Margins of the paired differences at the locked thresholds; ``null`` (None) in the
    file turns a rule off, and the decision then reports it as not required."""

    sensitivity_margin: float | None = 0.05
    specificity_margin: float | None = 0.02

    def check(self) -> None:
        for name in ("sensitivity_margin", "specificity_margin"):
            value = getattr(self, name)
            ok = value is None or 0 <= value <= 1
            _require(ok, f"operating_point.{name}", "in [0, 1], or null (no such rule)")


@dataclass(frozen=True)
class Subgroups:
    columns: tuple[str, ...] = ("site_id", "machine_id", "density", "age", "implant")
    min_breasts: int = 30
    min_positive_breasts: int = 5
    auc_margin: float = 0.05
    sensitivity_margin: float = 0.10

    def check(self) -> None:
        _require(self.min_breasts >= 1, "subgroups.min_breasts", "at least 1")
        _require(self.min_positive_breasts >= 1, "subgroups.min_positive_breasts", "at least 1")
        for name in ("auc_margin", "sensitivity_margin"):
            _require(0 <= getattr(self, name) <= 1, f"subgroups.{name}", "in [0, 1]")


@dataclass(frozen=True)
class Calibration:
    max_ece: float = 0.25

    def check(self) -> None:
        _require(0 < self.max_ece <= 1, "calibration.max_ece", "in (0, 1]")


@dataclass(frozen=True)
class Validation:
    required: bool = True

    def check(self) -> None:
        _require(isinstance(self.required, bool), "validation.required", "true or false")


@dataclass(frozen=True)
class Drift:
    block_on_critical: bool = False  # refuse while the data's drift report has an unresolved
    # critical finding (mammo drift --resolve KEY records a resolution)

    def check(self) -> None:
        _require(
            isinstance(self.block_on_critical, bool), "drift.block_on_critical", "true or false"
        )


@dataclass(frozen=True)
class Evaluation:
    prevalence: float = 0.0051
    specificities: tuple[float, ...] = (0.889, 0.95, 0.987)
    sensitivities: tuple[float, ...] = (0.869,)

    def check(self) -> None:
        _require(0 < self.prevalence < 1, "evaluation.prevalence", "in (0, 1)")
        for name in ("specificities", "sensitivities"):
            values = getattr(self, name)
            _require(all(0 < v < 1 for v in values), f"evaluation.{name}", "values in (0, 1)")


SECTIONS: dict[str, type] = {
    "primary": Primary,
    "evidence": Evidence,
    "operating_point": OperatingPoint,
    "subgroups": Subgroups,
    "calibration": Calibration,
    "validation": Validation,
    "drift": Drift,
    "evaluation": Evaluation,
}


@dataclass(frozen=True)
class PromotionProtocol:
    name: str = "mammo-default"
    version: int = 1
    primary: Primary = field(default_factory=Primary)
    evidence: Evidence = field(default_factory=Evidence)
    first_model: dict[str, float] = field(
        default_factory=lambda: {"auc": 0.65, "sensitivity": 0.25, "specificity": 0.80}
    )
    operating_point: OperatingPoint = field(default_factory=OperatingPoint)
    subgroups: Subgroups = field(default_factory=Subgroups)
    calibration: Calibration = field(default_factory=Calibration)
    validation: Validation = field(default_factory=Validation)
    drift: Drift = field(default_factory=Drift)
    evaluation: Evaluation = field(default_factory=Evaluation)
    source: str = field(default="", compare=False)  # the file it was read from

    def __post_init__(self) -> None:
        _require(bool(self.name), "name", "a non-empty string")
        for key, floor in self.first_model.items():
            _require(key in FLOOR_FIGURES, f"first_model.{key}", f"one of {FLOOR_FIGURES}")
            _require(0 <= floor <= 1, f"first_model.{key}", "in [0, 1]")
        for section in SECTIONS:
            getattr(self, section).check()

    def to_dict(self) -> dict[str, Any]:
        content = asdict(self)
        content.pop("source")
        return content

    def content_hash(self) -> str:
        """SHA-256 of the resolved content (canonical JSON): equal rules, equal hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def with_primary(self, **changes: Any) -> PromotionProtocol:
        """A copy with primary-rule overrides (the command line's --metric, --margin)."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        return replace(
            self, primary=_section("primary", Primary, {**asdict(self.primary), **given})
        )

    @classmethod
    def from_dict(cls, content: Any, source: str = "") -> PromotionProtocol:
        if not isinstance(content, dict):
            raise ProtocolError(f"{source or 'protocol'}: expected a mapping of sections")
        allowed = {"name", "version", "first_model", *SECTIONS}
        unknown = sorted(set(content) - allowed)
        if unknown:
            raise ProtocolError(f"unknown protocol key(s) {unknown}; allowed: {sorted(allowed)}")
        values: dict[str, Any] = {"source": source}
        for key in ("name", "version"):
            if key in content:
                values[key] = content[key]
        if "first_model" in content:
            floors = content["first_model"]
            _require(isinstance(floors, dict), "first_model", f"a mapping of {FLOOR_FIGURES}")
            values["first_model"] = {
                str(k): _number(f"first_model.{k}", v) for k, v in floors.items()
            }
        for key, kind in SECTIONS.items():
            if key in content:
                values[key] = _section(key, kind, content[key])
        _require(isinstance(values.get("version", 1), int), "version", "an integer")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PromotionProtocol:
        """Read a protocol file; ``None`` is the shipped default."""
        if path is None:
            text = resources.files("mammo.protocols").joinpath(DEFAULT_PROTOCOL).read_text()
            source = f"mammo/protocols/{DEFAULT_PROTOCOL}"
        else:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ProtocolError(f"cannot read protocol {path}: {exc.strerror}") from exc
            source = str(path)
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ProtocolError(f"{source} is not valid YAML: {exc}") from exc
        return cls.from_dict(content, source)


def _section(name: str, kind: type, content: Any) -> Any:
    if not isinstance(content, dict):
        raise ProtocolError(f"{name}: expected a mapping, got {content!r}")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(content) - set(known))
    if unknown:
        raise ProtocolError(f"unknown key(s) {unknown} in {name}; allowed: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in content.items():
        default = getattr(kind(), key)
        nullable = "None" in str(known[key].type)
        values[key] = (
            None if value is None and nullable else _coerce(f"{name}.{key}", default, value)
        )
    return kind(**values)


def _coerce(key: str, default: Any, value: Any) -> Any:
    """``value`` as the type of the field's default, or a ProtocolError naming the key."""
    if isinstance(default, bool):
        _require(isinstance(value, bool), key, "true or false")
        return value
    if isinstance(default, int):
        _require(isinstance(value, int) and not isinstance(value, bool), key, "an integer")
        return value
    if isinstance(default, float):
        return _number(key, value)
    if isinstance(default, tuple):
        _require(isinstance(value, list), key, "a list")
        kind = type(default[0]) if default else str
        return tuple(_number(key, v) if kind is float else str(v) for v in value)
    _require(isinstance(value, str), key, "a string")
    return value


def _number(key: str, value: Any) -> float:
    _require(isinstance(value, int | float) and not isinstance(value, bool), key, "a number")
    return float(value)


def _require(ok: bool, key: str, allowed: str) -> None:
    if not ok:
        raise ProtocolError(f"protocol key {key} must be {allowed}")
