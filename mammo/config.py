"""One file for a night's settings: ``nightly.toml``.

    [ingest]      shard_size, max_patients
    [preprocess]  PreprocessConfig's fields (out_rows, out_cols, bit_depth, ...)
    [split]       SplitConfig's fields (holdout_fraction, val_fraction, seed, holdout_salt)
    [train]       TrainConfig's fields (model, epochs, batch_size, ..., [train.augment])
    [validation]  positive_rate_band, max_quarantine_rate
    [promotion]   protocol (a YAML file), metric, margin
    [tune]        trials, metric, mode, ..., [tune.space] (mammo.search, `mammo tune`)

Every section and key is optional; what is left out keeps its default, and command-line
flags override the file. A wrong section, key or value is a :class:`ConfigError` whose one
line names the key and what it allows. Each section is checked by building its config
object, so a value that would fail at training time fails when the file is read.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key and what is allowed."""


@dataclass(frozen=True)
class IngestSettings:
    shard_size: int | None = None  # None: a few shards per core, at most 256 files each
    max_patients: int | None = None
    compact_above: float = 0.2  # the nightly compacts OUT when this share of rows is superseded

    def __post_init__(self) -> None:
        if self.shard_size is not None and self.shard_size < 1:
            raise ConfigError(f"shard_size must be >= 1, got {self.shard_size}")
        if not 0.0 <= self.compact_above <= 1.0:
            raise ConfigError(f"compact_above must be in [0, 1], got {self.compact_above}")
        if self.max_patients is not None and self.max_patients < 1:
            raise ConfigError(f"max_patients must be >= 1, got {self.max_patients}")


@dataclass(frozen=True)
class PromotionSettings:
    protocol: str | None = None  # a protocol YAML; None: the shipped one
    metric: str | None = None  # override of the protocol's primary metric (auc, pf1)
    margin: float | None = None  # override of its non-inferiority margin

    def __post_init__(self) -> None:
        if self.metric not in (None, "auc", "pf1"):
            raise ConfigError(f"metric must be auc or pf1, got {self.metric!r}")


# A section's config class, and how to build one from the file's mapping.
Builder = Callable[[dict[str, Any]], object]


@dataclass(frozen=True)
class RunConfig:
    """The sections as plain mappings: what the flows take as parameters."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))

    def merged(self, name: str, overrides: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The file's section with ``overrides`` (flags, flow parameters) on top, except those
        that are None or "" (not given); None if nothing is set, so a flow applies its own
        defaults."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None and v != ""}
        values = {**self.section(name), **given}
        return values or None


def parse_config(text: str, source: str, sections: Mapping[str, tuple[type, Builder]]) -> RunConfig:
    """Parse TOML ``text`` and check every section against ``sections`` (name -> the config
    class whose fields are the allowed keys, and a builder that validates the values)."""
    try:
        content = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    unknown = sorted(set(content) - set(sections))
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}]; allowed: {sorted(sections)}")
    parsed: dict[str, dict[str, Any]] = {}
    for name, values in content.items():
        kind, build = sections[name]
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {name} must be a section [{name}], got {values!r}")
        parsed[name] = check_section(f"{source} [{name}]", values, kind, build)
    return RunConfig(parsed)


def check_section(where: str, values: dict[str, Any], kind: type, build: Builder) -> dict[str, Any]:
    """``values`` with lists made tuples, after checking keys and types against ``kind``."""
    known = {f.name: f for f in fields(kind)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed: {sorted(known)}")
    checked = {key: _coerce(f"{where} {key}", _default(known[key]), v) for key, v in values.items()}
    try:
        build(checked)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return checked


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _coerce(key: str, default: Any, value: Any) -> Any:
    """``value`` checked against the type of the field's default (None: any)."""
    if default is None or (isinstance(default, str) and not isinstance(value, str)):
        if default is None:
            return tuple(value) if isinstance(value, list) else value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if isinstance(default, bool):
        _require(isinstance(value, bool), key, "true or false", value)
    elif isinstance(default, int):
        _require(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, key, "a number", value)
        return float(value)
    elif isinstance(default, tuple):
        _require(isinstance(value, list | tuple), key, "a list", value)  # a file's or a flag's
        return tuple(value)
    elif hasattr(default, "to_dict"):  # a nested section, e.g. [train.augment]
        _require(isinstance(value, dict), key, "a section", value)
    return value


def _require(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def dump_config(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """``sections`` as the TOML :func:`parse_config` reads: strings, numbers, booleans and lists
    of them; a table inside a section (``augment`` of [train]) becomes ``[section.key]``,
    deeper tables (a [tune] space's distributions) inline tables."""
    lines: list[str] = []
    for name, values in sections.items():
        tables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        lines.append(f"[{name}]")
        lines += [_toml_pair(k, v) for k, v in values.items() if k not in tables]
        for key, table in tables.items():
            lines += ["", f"[{name}.{key}]", *(_toml_pair(k, v) for k, v in table.items())]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))  # inf, -inf and nan are TOML floats too
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(_toml_pair(k, v) for k, v in value.items()) + " }"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to a configuration file")


def _toml_pair(key: str, value: Any) -> str:
    bare = re.fullmatch(r"[A-Za-z0-9_-]+", key) is not None
    return f"{key if bare else json.dumps(key)} = {_toml_value(value)}"
