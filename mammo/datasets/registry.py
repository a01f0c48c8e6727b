"""Layout adapters behind a name registry, and detection of a layout by its marker files.

An adapter is a class with a ``name``, a one-line ``markers`` description (what it looks
for, shown when no adapter recognises a folder), ``found(root)`` (the evidence when the
marker files are there, else None) and ``read(root)`` (the dataset's own label files read
as distributed, into mammo.datasets.schema's tables). Importing mammo.datasets registers
every adapter.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from mammo.datasets.schema import DatasetTables

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A root no adapter can read as a whole: unknown layout, unknown name, unusable labels."""


class Adapter(ABC):
    """One dataset layout under a local root."""

    name: str = ""
    markers: str = ""

    @abstractmethod
    def found(self, root: Path) -> str | None:
        """What marker files of this layout are under ``root``, or None."""

    @abstractmethod
    def read(self, root: Path) -> DatasetTables:
        """Images, findings and quarantine of the copy under ``root``."""


_REGISTRY: dict[str, Adapter] = {}


def register_dataset(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: register one instance of the adapter under ``name`` (unique)."""

    def decorate(cls: type[Adapter]) -> type[Adapter]:
        if name in _REGISTRY:
            raise DatasetError(f"dataset {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return decorate


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Adapter:
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}")
    return _REGISTRY[name]


def markers_text() -> str:
    return "; ".join(f"{name}: {_REGISTRY[name].markers}" for name in list_datasets())


def detect(root: Path) -> Adapter:
    """The one adapter whose marker files are under ``root``; logs which and why.

    Raises DatasetError (one line, listing what each adapter looks for) when none or
    several recognise the folder.
    """
    return recognise(root)[0]


def recognise(root: Path) -> tuple[Adapter, str]:
    """:func:`detect`'s adapter and the evidence it found (its marker files), looked for once."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    hits = [(name, ev) for name in list_datasets() if (ev := _REGISTRY[name].found(root))]
    if not hits:
        raise DatasetError(f"no known dataset layout in {root}; looked for {markers_text()}")
    if len(hits) > 1:
        which = ", ".join(f"{name} ({evidence})" for name, evidence in hits)
        raise DatasetError(f"{root} matches several layouts: {which}; name one")
    name, evidence = hits[0]
    log.info("dataset layout %s: %s", name, evidence)
    return _REGISTRY[name], evidence


def detection_message(root: Path) -> str:
    """``"<name>: <evidence>"`` for the adapter :func:`detect` picks."""
    adapter, evidence = recognise(root)
    return f"{adapter.name}: {evidence}"
