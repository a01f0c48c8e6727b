"""Checkpoints are read from shared storage: tensors and plain values only, never code."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mammo.training import EarlyStopping
from tasks.train_loop import STATE_FILE, TrainingError, read_state


class _Payload:
    """Pickled, it runs a command when loaded (what a writer of the bucket could plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))  # type: ignore[return-value]


def test_the_state_a_worker_saves_loads_back(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    stopper = EarlyStopping(3)
    stopper.update(0.75)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "stopper": dict(stopper.__dict__),
        "history": [{"epoch": 0.0, "train_loss": 0.5, "val_auc": math.nan}],
        "best": model.state_dict(),
        "epoch": 0,
    }
    torch.save(state, tmp_path / STATE_FILE)
    loaded = read_state(tmp_path)
    assert loaded["stopper"] == dict(stopper.__dict__)
    assert torch.equal(loaded["best"]["weight"], model.weight)
    assert loaded["epoch"] == 0


def test_a_checkpoint_that_holds_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"model": {}, "evil": _Payload(marker)}, tmp_path / STATE_FILE)
    with pytest.raises(TrainingError, match="holds more than tensors"):
        read_state(tmp_path)
    assert not marker.exists()
