"""The configuration file: every section checked when read, one line per mistake, flags on
top; the example in docs/ is complete and is what docs/configuration.md shows."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from mammo.augment import AugmentConfig
from mammo.config import ConfigError
from tasks.config import SECTIONS, load_config, resolve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "nightly.example.toml"
BIN = Path(sys.executable).parent


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "nightly.toml"
    path.write_text(text)
    return str(path)


def test_the_documented_example_names_every_key_and_reads_back_as_the_defaults() -> None:
    text = EXAMPLE.read_text()
    night = load_config(str(EXAMPLE))
    for name, (kind, _) in SECTIONS.items():
        for f in fields(kind):
            written = f"{f.name} =" in text or f"[{name}.{f.name}]" in text
            assert written, f"[{name}] {f.name} is not in {EXAMPLE.name}"
            if f.name in night.section(name):
                default = getattr(kind(), f.name)
                value = night.section(name)[f.name]
                if hasattr(default, "to_dict"):
                    assert AugmentConfig.from_dict(value) == default
                else:
                    assert value == default, (name, f.name)
    assert EXAMPLE.read_text() in (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[trian]\nepochs = 3",
            "unknown section [trian]; allowed: ['ingest', 'monitor', 'preprocess'",
        ),
        (
            "[train]\nepoch = 3",
            "[train]: unknown key 'epoch'; allowed: ['accumulate', 'aggregation', 'amp'",
        ),
        ("[train]\nepochs = 'three'", "[train] epochs must be an integer, got 'three'"),
        ("[train]\nepochs = 0", "[train]: epochs must be >= 1, got 0"),
        ("[train]\nmodel = 'vgg'", "unknown model 'vgg'"),
        ("[train.augment]\nvflip = 0.5", "[train]"),
        ("[preprocess]\nbit_depth = 12", "bit_depth 12 (8 or 16)"),
        ("[split]\nholdout_fraction = 1.5", "holdout_fraction must be in [0, 1), got 1.5"),
        ("[validation]\npositive_rate_band = [0.3, 0.1]", "positive_rate_band (0.3, 0.1)"),
        ("[validation]\nexpected_rows = 3", "unknown key 'expected_rows'"),
        ("[promotion]\nmetric = 'accuracy'", "metric must be auc or pf1, got 'accuracy'"),
        ("[promotion]\nmargin = -1", "primary.margin must be in [0, 1)"),
        ("[promotion]\nprotocol = 'nowhere.yaml'", "cannot read protocol nowhere.yaml"),
        ("[ingest]\nshard_size = 0", "shard_size must be >= 1, got 0"),
        ("train = 3", "train must be a section [train]"),
        ("[train\nepochs = 3", "is not valid TOML"),
    ],
)
def test_a_wrong_section_key_or_value_is_one_line_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value).strip()


def test_flags_override_the_file_and_are_checked_the_same_way(tmp_path: Path) -> None:
    uri = write(tmp_path, "[train]\nepochs = 7\nbatch_size = 4\n[split]\nseed = 3\n")
    night = resolve(uri, {"train": {"epochs": 2}, "split": None})
    assert night.section("train") == {"epochs": 2, "batch_size": 4}
    assert night.section("split") == {"seed": 3}
    assert night.merged("preprocess", None) is None  # nothing given: the flow's defaults
    with pytest.raises(ConfigError, match=r"\[train\]: epochs must be >= 1, got 0"):
        resolve(uri, {"train": {"epochs": 0}})
    band = resolve(uri, {"validation": {"positive_rate_band": (0.0, 0.5)}})  # as argparse gives
    assert band.section("validation") == {"positive_rate_band": (0.0, 0.5)}


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the configuration file .*absent\.toml"):
        load_config(str(tmp_path / "absent.toml"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "OUT", "--epochs", "0"], "[train]: epochs must be >= 1, got 0"),
        (["predict", "--raw", "RAW", "--out", "s3:/bucket/s.csv"], "S3 URI without a bucket"),
        (["promote", "--data", "OUT", "--margin", "-1"], "primary.margin must be in [0, 1)"),
        (["run", "--raw", "RAW", "--config", "CONFIG"], "unknown key 'epoch'"),
    ],
)
def test_the_cli_says_a_bad_setting_in_one_line_before_starting_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = write(tmp_path, "[train]\nepoch = 3\n")
    done = subprocess.run(
        [str(BIN / "mammo"), *(config if a == "CONFIG" else a for a in args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mammo {args[0]} failed: "), lines
    assert "Starting temporary server" not in done.stdout + done.stderr


def test_toml_parses_the_example_without_the_project() -> None:
    assert set(tomllib.loads(EXAMPLE.read_text())) == set(SECTIONS)
