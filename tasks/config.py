"""The configuration file, read from a local path or an S3 URI (see :mod:`mammo.config`)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo.config import (
    ConfigError,
    IngestSettings,
    PromotionSettings,
    RunConfig,
    check_section,
    dump_config,
    parse_config,
)
from mammo.drift import DriftSettings
from mammo.preprocess import PreprocessConfig
from mammo.protocol import PromotionProtocol
from mammo.search import TuneSettings
from mammo.splits import SplitConfig
from mammo.training import TrainConfig, check_pretrained
from mammo.validation import ValidationConfig
from tasks.storage import StorageError, open_store

__all__ = ["ConfigError", "RunConfig", "load_config", "resolve", "write_config"]


@dataclass(frozen=True)
class ValidationBands:
    """The [validation] keys (the image size checked is the preprocessing's own)."""

    positive_rate_band: tuple[float, float] = ValidationConfig.positive_rate_band
    max_quarantine_rate: float = ValidationConfig.max_quarantine_rate


def _promotion(values: dict[str, Any]) -> object:
    settings = PromotionSettings(**values)
    PromotionProtocol.load(settings.protocol).with_primary(
        metric=settings.metric, margin=settings.margin
    )
    return settings


def _train(values: dict[str, Any]) -> object:
    config = TrainConfig.from_dict(values)
    check_pretrained(config)  # the weights file is read and fitted before anything starts
    return config


SECTIONS = {
    "ingest": (IngestSettings, lambda v: IngestSettings(**v)),
    "preprocess": (PreprocessConfig, lambda v: PreprocessConfig(**v)),
    "split": (SplitConfig, SplitConfig.from_dict),
    "train": (TrainConfig, _train),
    "validation": (ValidationBands, lambda v: ValidationConfig(**v)),
    "promotion": (PromotionSettings, _promotion),
    "monitor": (DriftSettings, lambda v: DriftSettings(**v)),
    "tune": (TuneSettings, lambda v: TuneSettings(**v)),
}


def resolve(uri: str | None, overrides: dict[str, dict[str, Any] | None]) -> RunConfig:
    """The file at ``uri`` with ``overrides`` (section -> values, from flags) on top, every
    section checked again: a bad flag is the same one-line :class:`ConfigError`."""
    night = load_config(uri)
    sections = dict(night.sections)
    for name, values in overrides.items():
        merged = night.merged(name, values)
        if merged is not None:
            kind, build = SECTIONS[name]
            sections[name] = check_section(f"[{name}]", merged, kind, build)
    return RunConfig(sections)


def load_config(uri: str | None) -> RunConfig:
    """The checked configuration at ``uri`` (``nightly.toml``, ``s3://bucket/nightly.toml``);
    ``None`` or empty: no file, every default."""
    if not uri:
        return RunConfig()
    parent, name = _split(uri)
    try:
        text = open_store(parent or ".").read_bytes(name).decode()
    except (FileNotFoundError, StorageError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the configuration file {uri}: {exc}") from exc
    return parse_config(text, uri, SECTIONS)


def write_config(uri: str, sections: dict[str, dict[str, Any]]) -> str:
    """Write ``sections`` as a configuration file at ``uri`` (a path or an S3 URI), checked by
    reading the text back first: what is written is a file :func:`load_config` takes."""
    text = dump_config(sections)
    parse_config(text, uri, SECTIONS)
    parent, name = _split(uri)
    open_store(parent or ".").write_bytes(name, text.encode())
    return text


def _split(uri: str) -> tuple[str, str]:
    """(the folder, the file name) of a path or URI."""
    return posixpath.split(uri) if "://" in uri else (str(Path(uri).parent), Path(uri).name)
