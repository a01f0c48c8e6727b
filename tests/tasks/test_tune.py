"""The search's adapter without a cluster: the [tune] space as Ray Tune's objects, the best
configuration written and read back by the project's own reader, a bad space refused by the
command before anything starts."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
from ray import tune

from mammo.search import TuneSettings, apply_sample
from mammo.training import TrainConfig
from tasks.config import load_config, write_config
from tasks.tune import _plain, search_space

BIN = Path(sys.executable).parent


def test_the_space_becomes_ray_tune_domains_and_randint_includes_its_high_bound() -> None:
    space = search_space(
        TuneSettings(
            space={
                "lr": {"loguniform": [1e-4, 1e-2]},
                "dropout": {"uniform": [0.1, 0.3]},
                "epochs": {"randint": [1, 2]},
                "sampler": {"choice": ["none", "balanced"]},
            }
        ).params()
    )
    assert isinstance(space["lr"], tune.search.sample.Float)
    assert isinstance(space["epochs"], tune.search.sample.Integer)
    assert isinstance(space["sampler"], tune.search.sample.Categorical)
    random.seed(0)
    np.random.seed(0)
    draws = {k: [_plain(v.sample()) for _ in range(200)] for k, v in space.items()}
    assert all(1e-4 <= x <= 1e-2 for x in draws["lr"])
    assert all(0.1 <= x <= 0.3 for x in draws["dropout"])
    assert set(draws["epochs"]) == {1, 2}
    assert set(draws["sampler"]) == {"none", "balanced"}
    assert all(type(x) is float for x in draws["lr"])  # Python scalars, for TOML and MLflow


def test_the_best_config_keeps_the_other_sections_and_reads_back_as_the_same_train_config(
    tmp_path: Path,
) -> None:
    source = tmp_path / "nightly.toml"
    source.write_text(
        "[split]\nseed = 3\n[train]\nepochs = 2\nimage_rows = 64\naux_targets = ['density']\n"
        "[train.augment]\nbrightness = 0.2\n"
        "[tune]\ntrials = 2\n[tune.space]\nlr = { loguniform = [1e-4, 1e-2] }\n"
        "'augment.contrast' = { uniform = [0.0, 0.3] }\n"
    )
    night = load_config(str(source))
    sample = {"lr": _plain(np.float64(0.0012345678901)), "augment.contrast": 0.25}
    train = apply_sample(night.section("train"), sample)
    target = tmp_path / "tuned" / "best.toml"
    write_config(str(target), {**night.sections, "train": train})
    again = load_config(str(target))
    assert again.sections.keys() == night.sections.keys()
    assert again.section("split") == night.section("split")
    assert again.section("tune") == night.section("tune")
    built = TrainConfig.from_dict(again.section("train"))
    assert built == TrainConfig.from_dict(train)
    assert (built.lr, built.augment.contrast, built.augment.brightness) == (
        0.0012345678901,
        0.25,
        0.2,
    )
    assert built.aux_targets == ("density",) and built.epochs == 2


def test_a_bad_space_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "nightly.toml"
    config.write_text("[tune.space]\nlr = { loguniform = [0.0, 0.01] }\n")
    done = subprocess.run(
        [str(BIN / "mammo"), "tune", "--data", str(tmp_path / "out"), "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"mammo tune failed: {config} [tune]: space.lr: loguniform needs 0 < low < high, "
        "got [0.0, 0.01]"
    ], done.stderr
    assert "Starting temporary server" not in done.stdout + done.stderr


def test_trials_from_the_command_are_checked_too(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "mammo"), "tune", "--data", str(tmp_path / "out"), "--trials", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "mammo tune failed: [tune]: trials and max_concurrent_trials must be >= 1" in done.stderr
    assert "Traceback" not in done.stderr
